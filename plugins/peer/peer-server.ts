import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { BerthError, errorMessage, isBerthError } from '../errors/berth-error.js';
import type { Logger } from '../logging/logger.js';
import type { PeerTlsMaterial } from './peer-tls.js';
import { DIGEST_TRAILER, isStreamReply, type PeerRoute } from './peer-types.js';

const MAX_JSON_BODY = 1024 * 1024;
const HOST_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

interface CompiledRoute {
  readonly route: PeerRoute;
  readonly pattern: RegExp;
  readonly names: string[];
}

/**
 * The agent's peer port: HTTPS with mutual TLS 1.3. Only a client presenting a certificate signed by the
 * cluster CA gets past the handshake; the host name in that certificate is who asks. Streamed replies end
 * with the SHA-256 of what was sent as a trailer; a source that fails mid-way cuts the connection, so a
 * partial stream can never look complete.
 */
export class PeerServer {
  private readonly server: Server;
  private readonly routes: CompiledRoute[];

  constructor(
    tls: PeerTlsMaterial,
    routes: readonly PeerRoute[],
    private readonly listen: { readonly host: string; readonly port: number },
    private readonly log: Logger,
  ) {
    this.routes = routes.map((route) => {
      const names: string[] = [];
      const pattern = new RegExp(`^${route.path.replace(/:(\w+)/g, (_, name: string) => (names.push(name), '([^/]+)'))}$`);
      return { route, pattern, names };
    });
    this.server = createServer({ key: tls.key, cert: tls.certificate, ca: tls.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (request, response) => {
      void this.handle(request, response);
    });
    this.server.on('tlsClientError', (error) => this.log.debug({ err: errorMessage(error) }, 'peer refused at the TLS handshake'));
  }

  /** The port listened on (the configured one, or the one the system chose for port 0). */
  get port(): number {
    const address = this.server.address();
    return typeof address === 'object' && address !== null ? address.port : this.listen.port;
  }

  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const failed = (error: NodeJS.ErrnoException): void => {
        reject(new BerthError('ERR_INVALID_CONFIG', `cannot listen on the peer port ${this.listen.host}:${this.listen.port}: ${error.code ?? error.message}`, { cause: error }));
      };
      this.server.once('error', failed);
      this.server.listen(this.listen.port, this.listen.host, () => {
        this.server.off('error', failed);
        resolve();
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const peer = (request.socket as TLSSocket).getPeerCertificate().subject?.CN;
    const url = new URL(request.url ?? '/', 'https://peer');
    const log = this.log.child({ peer: peer ?? null, path: url.pathname });
    try {
      if (typeof peer !== 'string' || !HOST_NAME.test(peer)) throw new BerthError('ERR_PEER_AUTH', 'the client certificate names no valid host');
      const match = this.match(request.method ?? 'GET', url.pathname);
      if (!match) throw new BerthError('ERR_UNKNOWN_METHOD', `no peer route ${request.method ?? ''} ${url.pathname}`);
      const body = request.method === 'POST' ? await readJson(request) : undefined;
      log.debug('peer request');
      const result = await match.route.handler({ peer, params: match.params, query: url.searchParams, body });
      if (isStreamReply(result)) await sendStream(response, result.stream);
      else sendJson(response, 200, result ?? {});
    } catch (error) {
      if (response.headersSent) {
        log.warn({ err: errorMessage(error) }, 'peer stream failed; connection cut');
        response.destroy();
        return;
      }
      const berth = isBerthError(error) ? error : new BerthError('ERR_INTERNAL', errorMessage(error));
      if (!isBerthError(error)) log.error({ err: error }, 'peer request failed');
      sendJson(response, berth.httpStatus, { error: { code: berth.code, message: berth.message } });
    }
  }

  private match(method: string, path: string): { route: PeerRoute; params: Record<string, string> } | undefined {
    for (const { route, pattern, names } of this.routes) {
      if (route.method !== method) continue;
      const found = pattern.exec(path);
      if (!found) continue;
      return { route, params: Object.fromEntries(names.map((name, index) => [name, decodeURIComponent(found[index + 1] ?? '')])) };
    }
    return undefined;
  }
}

function sendJson(response: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

async function sendStream(response: ServerResponse, stream: AsyncIterable<Buffer>): Promise<void> {
  const hash = createHash('sha256');
  // The first chunk is read before the headers go: a source that fails at once is answered with its error.
  const source = stream[Symbol.asyncIterator]();
  let next = await source.next();
  response.writeHead(200, { 'content-type': 'application/octet-stream', trailer: DIGEST_TRAILER });
  for (; !next.done; next = await source.next()) {
    const chunk = next.value;
    hash.update(chunk);
    if (!response.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const done = (): void => {
          response.off('drain', done);
          response.off('close', closed);
          resolve();
        };
        const closed = (): void => {
          response.off('drain', done);
          reject(new Error('peer closed the connection'));
        };
        response.once('drain', done);
        response.once('close', closed);
      });
    }
  }
  response.addTrailers({ [DIGEST_TRAILER]: hash.digest('hex') });
  response.end();
}

async function readJson(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_JSON_BODY) throw new BerthError('ERR_INVALID_REQUEST', `request body exceeds ${MAX_JSON_BODY} bytes`);
    chunks.push(chunk);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new BerthError('ERR_INVALID_REQUEST', 'request body is not JSON');
  }
}
