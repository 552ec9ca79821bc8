import { request } from 'node:http';
import { BerthError, type BerthErrorCode } from '../plugins/errors/berth-error.js';

/** HTTP over the agent's admin socket; the CLI never opens the state or the data itself. */
export class AdminClient {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 120_000,
  ) {}

  get<T>(path: string): Promise<T> {
    return this.call<T>('GET', path);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.call<T>('POST', path, body);
  }

  delete<T>(path: string): Promise<T> {
    return this.call<T>('DELETE', path);
  }

  private call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          path,
          method,
          headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
          timeout: this.timeoutMs,
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text ? JSON.parse(text) : {};
            } catch {
              return reject(new BerthError('ERR_INTERNAL', `agent answered ${response.statusCode} with non-JSON: ${text.slice(0, 200)}`));
            }
            if ((response.statusCode ?? 500) >= 400) {
              const error = (parsed as { error?: { code?: BerthErrorCode; message?: string } }).error;
              return reject(new BerthError(error?.code ?? 'ERR_INTERNAL', error?.message ?? `agent answered ${response.statusCode}`));
            }
            resolve(parsed as T);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (error: NodeJS.ErrnoException) => {
        const hint = error.code === 'ENOENT' || error.code === 'ECONNREFUSED' ? ' (is `berth agent` running? pick it with --name or --run-dir)' : error.code === 'EACCES' ? ' (the admin socket is root-only)' : '';
        reject(new BerthError('ERR_AGENT_UNREACHABLE', `cannot reach the agent at ${this.socketPath}: ${error.message}${hint}`, { cause: error }));
      });
      if (payload) req.write(payload);
      req.end();
    });
  }
}
