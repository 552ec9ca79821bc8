import { request } from 'node:http';

export interface RawResponse {
  readonly status: number;
  readonly body: Record<string, unknown>;
  readonly text: string;
  readonly contentType: string | undefined;
}

export interface CallOptions {
  /** Reject (and close the connection) when no complete answer came within this many milliseconds. */
  readonly timeoutMs?: number;
}

/**
 * Calls a plugin method the way the engine does: POST, only an Accept header, no
 * Content-Type, and the body exactly as given (undefined sends an empty body).
 */
export function callPlugin(socketPath: string, method: string, rawBody?: string, headers: Record<string, string> = {}, options: CallOptions = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        path: `/${method}`,
        method: 'POST',
        headers: { accept: 'application/vnd.docker.plugins.v1.2+json', host: 'plugin.moby.localhost', 'content-length': Buffer.byteLength(rawBody ?? ''), ...headers },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: Record<string, unknown> = {};
          try {
            body = JSON.parse(text) as Record<string, unknown>;
          } catch {
            // leave empty: the test asserts on `text` then
          }
          resolve({ status: response.statusCode ?? 0, body, text, contentType: response.headers['content-type'] });
        });
      },
    );
    req.on('error', reject);
    if (options.timeoutMs !== undefined) {
      const timeoutMs = options.timeoutMs;
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} on ${socketPath}: no answer within ${timeoutMs} ms`)));
    }
    if (rawBody !== undefined) req.write(rawBody);
    req.end();
  });
}

/** JSON the way Go's json.Encoder writes it: with a trailing newline. */
export function goJson(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}
