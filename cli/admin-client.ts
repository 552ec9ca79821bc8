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

  /** Calls a streaming route: progress events go to `onProgress`; resolves with the result. */
  stream<T>(path: string, body: unknown, onProgress: (event: Record<string, unknown>) => void): Promise<T> {
    const payload = JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = request(
        { socketPath: this.socketPath, path, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } },
        (response) => {
          let buffered = '';
          let settled = false;
          const handleLine = (line: string): void => {
            if (line.trim() === '') return;
            let event: { type?: string; result?: unknown; error?: { code?: BerthErrorCode; message?: string } };
            try {
              event = JSON.parse(line) as typeof event;
            } catch {
              return;
            }
            if (event.type === 'progress') onProgress(event as Record<string, unknown>);
            else if (event.type === 'result') {
              settled = true;
              resolve(event.result as T);
            } else if (event.type === 'error' || event.error) {
              settled = true;
              reject(new BerthError(event.error?.code ?? 'ERR_INTERNAL', event.error?.message ?? 'the agent reported an error'));
            }
          };
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => {
            buffered += chunk;
            let newline: number;
            while ((newline = buffered.indexOf('\n')) >= 0) {
              handleLine(buffered.slice(0, newline));
              buffered = buffered.slice(newline + 1);
            }
          });
          response.on('end', () => {
            handleLine(buffered);
            if (!settled) reject(new BerthError('ERR_AGENT_UNREACHABLE', 'the agent closed the connection before reporting a result'));
          });
        },
      );
      req.on('error', (error) => reject(new BerthError('ERR_AGENT_UNREACHABLE', `cannot reach the agent at ${this.socketPath}: ${error.message}`, { cause: error })));
      req.end(payload);
    });
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
