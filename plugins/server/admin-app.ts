import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from '../logging/logger.js';
import { BerthError, isBerthError } from '../errors/berth-error.js';
import { readJsonBody } from './json-body.js';

export interface AdminRequest {
  readonly params: Readonly<Record<string, string>>;
  readonly query: Readonly<Record<string, string>>;
  readonly body: Record<string, unknown>;
  readonly log: Logger;
}

export interface AdminRoute {
  readonly method: 'GET' | 'POST' | 'DELETE';
  /** Express path pattern, e.g. `/v1/volumes/:name`. */
  readonly path: string;
  readonly handler: (request: AdminRequest) => Promise<unknown> | unknown;
}

/** The operator API behind the root-only admin socket; the `berth` CLI is its only client. */
export function createAdminApp(routes: readonly AdminRoute[], logger: Logger, bodyLimitBytes: number): express.Express {
  const app = express();
  app.disable('x-powered-by');
  for (const route of routes) {
    const register = route.method === 'GET' ? app.get.bind(app) : route.method === 'POST' ? app.post.bind(app) : app.delete.bind(app);
    register(route.path, readJsonBody(bodyLimitBytes), async (request: Request, response: Response, next: NextFunction) => {
      const log = logger.child({ admin: `${route.method} ${request.path}` });
      try {
        const result = await route.handler({
          params: request.params as Record<string, string>,
          query: Object.fromEntries(Object.entries(request.query).map(([key, value]) => [key, String(value)])),
          body: request.body as Record<string, unknown>,
          log,
        });
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
