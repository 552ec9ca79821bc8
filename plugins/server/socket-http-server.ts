import { createServer, type Server, type ServerResponse, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { RequestListener } from 'node:http';
import { claimSocketPath, restrictSocket, unlinkQuietly } from './unix-socket.js';

export interface SocketHttpServerOptions {
  readonly path: string;
  /** Mode of the socket file (0o600 for the admin socket). */
  readonly socketMode: number;
  readonly directoryMode: number;
}

/**
 * An HTTP server on a Unix socket with a graceful close: stop accepting, let in-flight
 * requests finish (bounded), then unlink the socket so no stale file is left behind.
 */
export class SocketHttpServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];
  private listening = false;

  constructor(
    private readonly options: SocketHttpServerOptions,
    listener: RequestListener,
  ) {
    this.server = createServer((request: IncomingMessage, response: ServerResponse) => {
      this.inFlight++;
      response.once('close', () => {
        this.inFlight--;
        if (this.inFlight === 0) this.notifyIdle();
      });
      listener(request, response);
    });
    // The engine keeps connections alive; track them so close() can end idle ones.
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.server.keepAliveTimeout = 60_000;
  }

  get path(): string {
    return this.options.path;
  }

  get requestsInFlight(): number {
    return this.inFlight;
  }

  async start(): Promise<void> {
    await claimSocketPath(this.options.path, this.options.directoryMode);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.listening = true;
    await restrictSocket(this.options.path, this.options.socketMode);
  }

  /** Stops accepting, waits up to `graceMs` for in-flight requests, then closes the rest. */
  async close(graceMs = 30_000): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    if (this.inFlight > 0) {
      await Promise.race([new Promise<void>((resolve) => this.idleWaiters.push(resolve)), delay(graceMs)]);
    }
    for (const socket of this.sockets) socket.destroy();
    await closed;
    await unlinkQuietly(this.options.path);
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const waiter of waiters) waiter();
    if (!this.listening) this.server.closeIdleConnections();
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
