/**
 * Hashing on a worker thread, so that a restore's checksums (SHA-256 of stored objects, 4 KiB
 * block hashes of restored files) run beside decompression and writing instead of on the main
 * thread. Requests are answered in order; the thread never keeps the process alive.
 */
import { Worker } from 'node:worker_threads';
import { BerthError } from '../../../plugins/errors/berth-error.js';

/** Shared memory is handed over once ('share') and named by number after that: messages stay small. */
export type HashRequest =
  | { readonly kind: 'share'; readonly id: number; readonly memory: number; readonly buffer: SharedArrayBuffer }
  | { readonly kind: 'file'; readonly id: number; readonly fd: number }
  | { readonly kind: 'blocks'; readonly id: number; readonly memory: number; readonly offset: number; readonly length: number; readonly into: number; readonly intoOffset: number };

export type HashReply =
  | { readonly id: number; readonly sha256: string; readonly bytes: number }
  | { readonly id: number; readonly done: true }
  | { readonly id: number; readonly error: string; readonly code?: string };

interface Pending {
  resolve(reply: HashReply): void;
  reject(error: Error): void;
}

export class HashThread {
  readonly #worker = new Worker(new URL('./hash-worker.js', import.meta.url));
  readonly #pending = new Map<number, Pending>();
  readonly #shared = new WeakMap<SharedArrayBuffer, number>();
  #nextId = 0;
  #nextMemory = 0;
  #failure: Error | undefined;

  constructor() {
    this.#worker.unref();
    this.#worker.on('message', (reply: HashReply) => {
      const pending = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      if (!pending) return;
      if ('error' in reply) pending.reject(Object.assign(new Error(reply.error), reply.code ? { code: reply.code } : {}));
      else pending.resolve(reply);
    });
    this.#worker.on('error', (error) => this.#fail(error));
    this.#worker.on('exit', (code) => this.#fail(new BerthError('ERR_INTERNAL', `the hash thread exited (code ${code})`)));
  }

  /** SHA-256 (hex) and length of the whole file open as `fd`, read from its start with positional reads. */
  async hashFile(fd: number): Promise<{ sha256: string; bytes: number }> {
    const reply = await this.#request({ kind: 'file', id: this.#nextId++, fd });
    if (!('sha256' in reply)) throw new BerthError('ERR_INTERNAL', 'hash thread answered a file request with something else');
    return { sha256: reply.sha256, bytes: reply.bytes };
  }

  /**
   * Writes the block hashes (block-index.ts) of `length` bytes at `offset` of `memory` into `into`
   * at `intoOffset`. Neither region may change until this resolves.
   */
  async hashBlocks(memory: SharedArrayBuffer, offset: number, length: number, into: SharedArrayBuffer, intoOffset: number): Promise<void> {
    await this.#request({ kind: 'blocks', id: this.#nextId++, memory: this.#share(memory), offset, length, into: this.#share(into), intoOffset });
  }

  /** Stops the thread, abandoning what it was doing; resolves once it has exited. */
  async close(): Promise<void> {
    await this.#worker.terminate();
  }

  #share(buffer: SharedArrayBuffer): number {
    let memory = this.#shared.get(buffer);
    if (memory === undefined) {
      memory = this.#nextMemory++;
      this.#shared.set(buffer, memory);
      this.#request({ kind: 'share', id: this.#nextId++, memory, buffer }).catch(() => undefined); // a failure fails the requests that follow too
    }
    return memory;
  }

  #request(request: HashRequest): Promise<HashReply> {
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise<HashReply>((resolve, reject) => {
      this.#pending.set(request.id, { resolve, reject });
      this.#worker.postMessage(request);
    });
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const pending of this.#pending.values()) pending.reject(this.#failure);
    this.#pending.clear();
  }
}
