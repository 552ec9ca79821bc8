/**
 * The body of a HashThread (hash-thread.ts): SHA-256 of a whole file read through a descriptor the
 * parent opened, and 4 KiB block hashes of pieces of a SharedArrayBuffer. One request at a time,
 * answered in order. Runs as a worker thread; importing it elsewhere does nothing.
 */
import { createHash } from 'node:crypto';
import { readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { blockCount, HASH_BYTES, hashChunkInto } from '../block-index.js';
import type { HashReply, HashRequest } from './hash-thread.js';

const READ_BYTES = 1024 * 1024;
const shared = new Map<number, Buffer>();

function memory(id: number): Buffer {
  const buffer = shared.get(id);
  if (!buffer) throw new Error(`shared memory ${id} was never handed over`);
  return buffer;
}

function answer(request: HashRequest): HashReply {
  switch (request.kind) {
    case 'file': {
      // Positional reads: the descriptor's own offset belongs to whoever else reads it (zstd).
      const hash = createHash('sha256');
      const buffer = Buffer.allocUnsafe(READ_BYTES);
      let bytes = 0;
      for (;;) {
        const read = readSync(request.fd, buffer, 0, READ_BYTES, bytes);
        if (read === 0) break;
        hash.update(buffer.subarray(0, read));
        bytes += read;
      }
      return { id: request.id, sha256: hash.digest('hex'), bytes };
    }
    case 'share':
      shared.set(request.memory, Buffer.from(request.buffer));
      return { id: request.id, done: true };
    case 'blocks': {
      const into = memory(request.into).subarray(request.intoOffset, request.intoOffset + blockCount(request.length) * HASH_BYTES);
      hashChunkInto(into, memory(request.memory).subarray(request.offset, request.offset + request.length), 0);
      return { id: request.id, done: true };
    }
  }
}

parentPort?.on('message', (request: HashRequest) => {
  try {
    parentPort!.postMessage(answer(request));
  } catch (error) {
    const failure = error as NodeJS.ErrnoException;
    parentPort!.postMessage({ id: request.id, error: failure.message ?? String(error), ...(failure.code ? { code: failure.code } : {}) } satisfies HashReply);
  }
});
