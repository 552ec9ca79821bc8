/**
 * Checksums of stored objects on a worker thread, so that a restore's SHA-256 of a large object
 * runs beside its decompression instead of on the main thread. Requests are answered in order.
 * The thread keeps the process alive (a restore may be waiting for nothing else) until closed.
 */
import { Worker } from 'node:worker_threads';
import { BerthError } from '../../../plugins/errors/berth-error.js';

export interface HashRequest {
  readonly id: number;
  readonly fd: number;
}

export type HashReply = { readonly id: number; readonly sha256: string; readonly bytes: number } | { readonly id: number; readonly error: string; readonly code?: string };

interface Pending {
  resolve(digest: { sha256: string; bytes: number }): void;
  reject(error: Error): void;
}

export class HashThread {
  readonly #worker = new Worker(new URL('./hash-worker.js', import.meta.url));
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  #failure: Error | undefined;

  constructor() {
    this.#worker.on('message', (reply: HashReply) => {
      const pending = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      if (!pending) return;
      if ('error' in reply) pending.reject(Object.assign(new Error(reply.error), reply.code ? { code: reply.code } : {}));
      else pending.resolve({ sha256: reply.sha256, bytes: reply.bytes });
    });
    this.#worker.on('error', (error) => this.#fail(error));
    this.#worker.on('exit', (code) => this.#fail(new BerthError('ERR_INTERNAL', `the hash thread exited (code ${code})`)));
  }

  /** SHA-256 (hex) and length of the whole file open as `fd`, read from its start with positional reads. */
  hashFile(fd: number): Promise<{ sha256: string; bytes: number }> {
    if (this.#failure) return Promise.reject(this.#failure);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ id, fd } satisfies HashRequest);
    });
  }

  /** Stops the thread, abandoning what it was doing; resolves once it has exited. */
  async close(): Promise<void> {
    await this.#worker.terminate();
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const pending of this.#pending.values()) pending.reject(this.#failure);
    this.#pending.clear();
  }
}
