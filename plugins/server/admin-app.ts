import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from '../logging/logger.js';
import { BerthError, isBerthError } from '../errors/berth-error.js';
import { readJsonBody } from './json-body.js';

export interface AdminRequest {
  readonly params: Readonly<Record<string, string>>;
  readonly query: Readonly<Record<string, string>>;
  readonly body: Record<string, unknown>;
  readonly log: Logger;
  /** Reports progress of a streaming route; a no-op elsewhere. */
  readonly progress: (event: ProgressEvent) => void;
}

export interface AdminRoute {
  readonly method: 'GET' | 'POST' | 'DELETE';
  /** Express path pattern, e.g. `/v1/volumes/:name`. */
  readonly path: string;
  readonly handler: (request: AdminRequest) => Promise<unknown> | unknown;
  /**
   * Long operations stream newline-delimited JSON: `{"type":"progress",...}` events sent with
   * `request.progress`, then one `{"type":"result","result":...}` or `{"type":"error","error":...}`.
   */
  readonly streaming?: boolean;
}

export interface ProgressEvent {
  readonly phase: string;
  readonly doneBytes?: number;
  readonly totalBytes?: number;
  readonly message?: string;
}

/** The operator API behind the root-only admin socket; the `berth` CLI is its only client. */
export function createAdminApp(routes: readonly AdminRoute[], logger: Logger, bodyLimitBytes: number): express.Express {
  const app = express();
  app.disable('x-powered-by');
  for (const route of routes) {
    const register = route.method === 'GET' ? app.get.bind(app) : route.method === 'POST' ? app.post.bind(app) : app.delete.bind(app);
    register(route.path, readJsonBody(bodyLimitBytes), async (request: Request, response: Response, next: NextFunction) => {
      const log = logger.child({ admin: `${route.method} ${request.path}` });
      const base = {
        params: request.params as Record<string, string>,
        query: Object.fromEntries(Object.entries(request.query).map(([key, value]) => [key, String(value)])),
        body: request.body as Record<string, unknown>,
        log,
      };
      if (route.streaming) return streamRoute(route, base, response, log);
      try {
        const result = await route.handler({ ...base, progress: () => undefined });
        response.status(200).json(result ?? {});
      } catch (error) {
        next(error);
      }
    });
  }
  app.use((request: Request, _response: Response, next: NextFunction) => {
    next(new BerthError('ERR_NOT_FOUND', `no admin endpoint ${request.method} ${request.path}`));
  });
  app.use((error: unknown, request: Request, response: Response, _next: NextFunction) => {
    const berthError = isBerthError(error) ? error : new BerthError('ERR_INTERNAL', `internal error: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    const status = berthError.details?.status === 413 ? 413 : berthError.httpStatus;
    const log = logger.child({ admin: `${request.method} ${request.path}` });
    if (status >= 500) log.error({ err: error }, berthError.message);
    else log.debug({ code: berthError.code }, berthError.message);
    response.status(status).json({ error: { code: berthError.code, message: berthError.message, ...(berthError.details ? { details: berthError.details } : {}) } });
  });
  return app;
}

/** Progress events are throttled to a few per second: a terminal cannot show more. */
const PROGRESS_INTERVAL_MS = 200;

async function streamRoute(route: AdminRoute, base: Omit<AdminRequest, 'progress'>, response: Response, log: Logger): Promise<void> {
  response.status(200).type('application/x-ndjson');
  response.flushHeaders();
  const send = (line: unknown): void => {
    if (!response.writableEnded) response.write(`${JSON.stringify(line)}\n`);
  };
  let lastProgress = 0;
  const progress = (event: ProgressEvent): void => {
    const now = Date.now();
    if (now - lastProgress < PROGRESS_INTERVAL_MS && event.doneBytes !== event.totalBytes) return;
    lastProgress = now;
    send({ type: 'progress', ...event });
  };
  try {
    const result = await route.handler({ ...base, progress });
    send({ type: 'result', result: result ?? {} });
  } catch (error) {
    const berthError = isBerthError(error) ? error : new BerthError('ERR_INTERNAL', `internal error: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    if (berthError.httpStatus >= 500) log.error({ err: error }, berthError.message);
    send({ type: 'error', error: { code: berthError.code, message: berthError.message } });
  }
  response.end();
}
