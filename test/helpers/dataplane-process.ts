// A NetlinkDataplane running in another network namespace (test/fixtures/dataplane-server.ts),
// seen from the test as a Dataplane: every method call is a JSON line to the child and back.
// A Dataplane binds to its process's namespace, so each simulated host needs its own process.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { BerthError, type BerthErrorCode } from '../../plugins/errors/berth-error.js';
import type { Dataplane } from '../../network-driver/dataplane/dataplane.js';
import { exitPromise, waitForChildExit, type ExitStatus } from './processes.js';

const SERVER = fileURLToPath(new URL('../fixtures/dataplane-server.js', import.meta.url));

interface Reply {
  id?: number;
  ready?: boolean;
  ok?: boolean;
  result?: unknown;
  error?: { code: BerthErrorCode | null; message: string; details: Record<string, unknown> | null };
}

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

export interface DataplaneProcessOptions {
  /** Bound on each call. Default 20 000 ms. */
  callTimeoutMs?: number;
  /** Passed to the server as NetlinkDataplane's procSysRoot. */
  procSysRoot?: string;
}

export class DataplaneProcess {
  /** The remote dataplane; errors come back as BerthErrors with the child's code, message and details. */
  readonly dataplane: Dataplane;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly exited: Promise<ExitStatus>;
  private stderr = '';

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly callTimeoutMs: number,
  ) {
    this.exited = exitPromise(child);
    child.stderr.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-4000);
    });
    void this.exited.then((status) => {
      const error = new Error(`dataplane server exited (${status.code ?? status.signal})${this.stderr === '' ? '' : `: ${this.stderr.trim()}`}`);
      for (const call of this.pending.values()) {
        clearTimeout(call.timer);
        call.reject(error);
      }
      this.pending.clear();
    });
    this.dataplane = new Proxy({} as Dataplane, {
      // `then` must stay undefined, or awaiting the proxy would call it.
      get: (_target, method) => (typeof method === 'string' && method !== 'then' ? (...args: unknown[]) => this.call(method, args) : undefined),
    });
  }

  /** Starts a server inside the namespace entered by `enter` (e.g. NetnsSet.enter) and waits for it. */
  static async start(enter: (command: readonly string[]) => string[], options: DataplaneProcessOptions = {}): Promise<DataplaneProcess> {
    const [file, ...args] = enter([process.execPath, '--enable-source-maps', SERVER, ...(options.procSysRoot === undefined ? [] : [options.procSysRoot])]);
    if (file === undefined) throw new Error('empty command');
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const server = new DataplaneProcess(child, options.callTimeoutMs ?? 20_000);
    await server.listen();
    return server;
  }

  /** Runs every call at once inside the server and reports how long they took there, and what failed. */
  batch(calls: readonly { method: keyof Dataplane; args: readonly unknown[] }[]): Promise<{ elapsedMs: number; errors: string[] }> {
    return this.send({ batch: calls }, 'batch') as Promise<{ elapsedMs: number; errors: string[] }>;
  }

  /** Closes stdin (the server then closes its socket and exits); kills it if it lingers. */
  async stop(): Promise<void> {
    this.child.stdin.end();
    if ((await waitForChildExit(this.exited, 5_000)) === undefined) {
      this.child.kill('SIGKILL');
      await waitForChildExit(this.exited, 5_000);
    }
  }

  private listen(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`dataplane server not ready within 10 s: ${this.stderr.trim()}`)), 10_000);
      void this.exited.then((status) => {
        clearTimeout(timer);
        reject(new Error(`dataplane server exited before it was ready (${status.code ?? status.signal}): ${this.stderr.trim()}`));
      });
      createInterface({ input: this.child.stdout }).on('line', (line) => {
        const reply = JSON.parse(line) as Reply;
        if (reply.ready === true) {
          clearTimeout(timer);
          resolve();
          return;
        }
        const call = reply.id === undefined ? undefined : this.pending.get(reply.id);
        if (call === undefined || reply.id === undefined) return;
        this.pending.delete(reply.id);
        clearTimeout(call.timer);
        if (reply.ok === true) call.resolve(reply.result === null ? undefined : reply.result);
        else call.reject(remoteError(reply.error));
      });
    });
  }

  private call(method: string, args: unknown[]): Promise<unknown> {
    return this.send({ method, args }, method);
  }

  private send(request: object, what: string): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`dataplane ${what} got no answer within ${this.callTimeoutMs} ms`));
      }, this.callTimeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.child.stdin.write(`${JSON.stringify({ id, ...request })}\n`);
    });
  }
}

function remoteError(error: Reply['error']): Error {
  if (error === undefined) return new Error('dataplane server replied without a result or an error');
  if (error.code === null) return new Error(error.message);
  return new BerthError(error.code, error.message, error.details === null ? {} : { details: error.details });
}
