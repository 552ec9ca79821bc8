/**
 * The body of a HashThread (hash-thread.ts): SHA-256 of a whole file read through a descriptor the
 * parent opened. One request at a time, answered in order. Runs as a worker thread; importing it
 * elsewhere does nothing.
 */
import { createHash } from 'node:crypto';
import { readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import type { HashReply, HashRequest } from './hash-thread.js';

/** Small enough that what was just read is hashed from the CPU cache. */
const READ_BYTES = 256 * 1024;

function answer(request: HashRequest): HashReply {
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

parentPort?.on('message', (request: HashRequest) => {
  try {
    parentPort!.postMessage(answer(request));
  } catch (error) {
    const failure = error as NodeJS.ErrnoException;
    parentPort!.postMessage({ id: request.id, error: failure.message ?? String(error), ...(failure.code ? { code: failure.code } : {}) } satisfies HashReply);
  }
});
