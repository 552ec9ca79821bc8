import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from '../logging/logger.js';
import { BerthError, isBerthError } from '../errors/berth-error.js';
import { readJsonBody } from './json-body.js';

export type PluginInterface = 'VolumeDriver' | 'NetworkDriver' | 'IpamDriver';

export interface RequestContext {
  readonly log: Logger;
  readonly method: string;
}

export type MethodHandler = (body: Record<string, unknown>, context: RequestContext) => Promise<object> | object;

/** One Docker plugin API: its interface name and its methods, named exactly as on the wire. */
export interface PluginApi {
  readonly implements: PluginInterface;
  readonly methods: Readonly<Record<string, MethodHandler>>;
}

const CONTENT_TYPE = 'application/vnd.docker.plugins.v1.2+json';

/**
 * The Docker-facing HTTP app. The engine sends no Content-Type and sometimes an empty body
 * (docker-plugin-protocol.md §1.4, §1.6), so the raw body is parsed whatever the headers say.
 * One error boundary answers every failure as `{"Err": ...}` (IPAM also reads `Error`).
 */
export function createPluginApp(apis: readonly PluginApi[], logger: Logger, bodyLimitBytes: number): express.Express {
  const handlers = new Map<string, MethodHandler>();
  for (const api of apis) {
    for (const [method, handler] of Object.entries(api.methods)) handlers.set(`${api.implements}.${method}`, handler);
  }
  const implementsList = [...new Set(apis.map((api) => api.implements))];
  handlers.set('Plugin.Activate', () => ({ Implements: implementsList }));

  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.post('/:method', readJsonBody(bodyLimitBytes), async (request: Request, response: Response, next: NextFunction) => {
    const method = String(request.params.method);
    const body = request.body as Record<string, unknown>;
    const log = logger.child(requestBindings(method, body));
    response.locals.log = log;
    const handler = handlers.get(method);
    if (!handler) return next(new BerthError('ERR_UNKNOWN_METHOD', `unknown method ${method}`));
    const startedAt = performance.now();
    try {
      const result = await handler(body, { log, method });
      log.debug({ result, ms: Math.round((performance.now() - startedAt) * 10) / 10 }, 'request served');
      response.status(200).type(CONTENT_TYPE).send(JSON.stringify(result));
    } catch (error) {
      next(error);
    }
  });
  app.use((request: Request, _response: Response, next: NextFunction) => {
    next(new BerthError('ERR_UNKNOWN_METHOD', `unknown method ${request.method} ${request.path}`));
  });
  app.use((error: unknown, request: Request, response: Response, _next: NextFunction) => {
    const log: Logger = (response.locals.log as Logger | undefined) ?? logger.child({ method: request.path.slice(1) });
    const { status, message } = describeFailure(error);
    // The engine probes with Get before every Create: "does not exist" is routine, not an error.
    if (isBerthError(error, 'ERR_VOLUME_NOT_FOUND')) log.debug({ code: error.code }, message);
    else if (isBerthError(error) && error.code !== 'ERR_INTERNAL') log.warn({ code: error.code }, message);
    else log.error({ err: error }, message);
    const payload: Record<string, string> = { Err: message };
    if (request.path.startsWith('/IpamDriver.')) payload.Error = message;
    response.status(status).type(CONTENT_TYPE).send(JSON.stringify(payload));
  });
  return app;
}

function describeFailure(error: unknown): { status: number; message: string } {
  if (isBerthError(error)) {
    if (error.code === 'ERR_UNKNOWN_METHOD') return { status: 404, message: error.message };
    if (error.code === 'ERR_INVALID_REQUEST' && error.details?.malformedBody === true) return { status: 400, message: error.message };
    if (error.details?.status === 413) return { status: 413, message: error.message };
    return { status: 500, message: error.message };
  }
  return { status: 500, message: `internal error: ${error instanceof Error ? error.message : String(error)}` };
}

function requestBindings(method: string, body: Record<string, unknown>): Record<string, string> {
  const bindings: Record<string, string> = { method };
  if (typeof body.Name === 'string') bindings.volume = body.Name;
  if (typeof body.NetworkID === 'string') bindings.network = body.NetworkID;
  if (typeof body.EndpointID === 'string') bindings.endpoint = body.EndpointID;
  return bindings;
}
