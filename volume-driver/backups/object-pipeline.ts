import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { PassThrough, Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { compressStream, decompressFile, decompressStream, type Compression } from './codec/compression.js';
import { DigestStream } from './codec/digest-stream.js';
import { decryptStream, encryptStream, type BackupKey } from './codec/encryption.js';
import { HashThread } from './codec/hash-thread.js';
import type { BackupObject } from './backup-manifest.js';
import { BerthError } from '../../plugins/errors/berth-error.js';

export interface ObjectCodec {
  readonly compression: Compression;
  readonly key?: BackupKey;
}

const STAGE_BUFFER_BYTES = 4 * 1024 * 1024;
/** The same in chunks of decompressed output (pipe reads of up to 64 KiB). */
const STAGE_BUFFER_CHUNKS = 64;
/** Reads of stored objects: objects are large and read whole; the 64 KiB default costs many more calls. */
export const OBJECT_READ_BYTES = 1024 * 1024;
/** Local objects at least this large get their checksum from a worker thread (starting one costs a few ms). */
const THREAD_CHECKSUM_MIN_BYTES = 32 * 1024 * 1024;

/** Where a stored object's bytes come from: a stream, or a file on this machine (see loadObject). */
export type ObjectSource = Readable | { readonly path: string };

/** Object file names say how to read them: `data.tar.zst`, `index.bin.zst.enc`, ... */
export function objectFileName(base: string, codec: ObjectCodec): string {
  const suffix = codec.compression === 'zstd' ? '.zst' : codec.compression === 'gzip' ? '.gz' : '';
  return `${base}${suffix}${codec.key ? '.enc' : ''}`;
}

/** Writes `source` through compression and encryption into `sink`; returns what was stored. */
export async function storeObject(source: Readable, sink: Writable, file: string, codec: ObjectCodec): Promise<BackupObject> {
  const digest = new DigestStream();
  const stages: NodeJS.ReadWriteStream[] = [compressStream(codec.compression)];
  if (codec.key) stages.push(encryptStream(codec.key));
  await pipeline([source, ...stages, digest, sink]);
  return { file, sha256: digest.digest(), bytes: digest.bytes };
}

/**
 * Reads a stored object back: checks the stored bytes against the manifest's checksum while
 * decrypting and decompressing. A mismatch surfaces as an error when the stored bytes end, so
 * consumers must read to the end before trusting what they got.
 *
 * A large local file is not streamed through this process twice: zstd reads it itself (when not
 * encrypted) while a worker thread reads it again for the checksum, both through one descriptor,
 * so both see the same file; the second read comes from the page cache.
 */
export function loadObject(source: ObjectSource, object: BackupObject, where: string, codec: ObjectCodec): Readable {
  if (source instanceof Readable) return loadStream(source, object, where, codec);
  if (object.bytes < THREAD_CHECKSUM_MIN_BYTES) return loadStream(readObjectFile(source.path), object, where, codec);
  // Chunk by chunk (object mode): a byte-mode buffer would be concatenated into one copy per read.
  return Readable.from(loadFile(source.path, object, where, codec), { highWaterMark: STAGE_BUFFER_CHUNKS });
}

/** A stored object file as a stream of 1 MiB reads. */
export function readObjectFile(path: string): Readable {
  return createReadStream(path, { highWaterMark: OBJECT_READ_BYTES });
}

function loadStream(raw: Readable, object: BackupObject, where: string, codec: ObjectCodec): Readable {
  const stages: NodeJS.ReadWriteStream[] = [new ChecksumVerifier(object, where)];
  if (codec.key) stages.push(decryptStream(codec.key, where));
  stages.push(decompressStream(codec.compression, { subject: where }));
  // Large buffers between stages: the default 16 KiB makes every stage stall on the next.
  const output = new PassThrough({ highWaterMark: STAGE_BUFFER_BYTES });
  pipeline([raw, ...stages, output]).catch((error: unknown) => output.destroy(translateRead(error, where)));
  return output;
}

async function* loadFile(path: string, object: BackupObject, where: string, codec: ObjectCodec): AsyncGenerator<Buffer> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw translateRead(error, where);
  }
  let thread: HashThread | undefined;
  try {
    const { size } = await handle.stat();
    const wrongSize = storedMismatch(object, where, size);
    if (wrongSize) throw wrongSize;
    thread = new HashThread();
    const checksum = thread.hashFile(handle.fd);
    checksum.catch(() => undefined);
    try {
      for await (const chunk of decodeFile(handle, codec, where)) yield chunk as Buffer;
    } catch (error) {
      // Damaged bytes mostly stop the decoder first; the checksum tells what is wrong more exactly.
      const stored = await checksum.catch(() => undefined);
      throw (stored && storedMismatch(object, where, stored.bytes, stored.sha256)) ?? translateRead(error, where);
    }
    const stored = await checksum.catch((error: unknown) => {
      throw translateRead(error, where);
    });
    const mismatch = storedMismatch(object, where, stored.bytes, stored.sha256);
    if (mismatch) throw mismatch;
  } finally {
    // The thread first: it reads through the descriptor.
    await thread?.close();
    await handle.close();
  }
}

function decodeFile(handle: FileHandle, codec: ObjectCodec, where: string): Readable {
  if (!codec.key && codec.compression === 'zstd') return decompressFile('zstd', handle.fd, { subject: where });
  const stages: NodeJS.ReadWriteStream[] = [];
  if (codec.key) stages.push(decryptStream(codec.key, where));
  stages.push(decompressStream(codec.compression, { subject: where }));
  const output = new PassThrough({ highWaterMark: STAGE_BUFFER_BYTES });
  pipeline([handle.createReadStream({ start: 0, autoClose: false, highWaterMark: OBJECT_READ_BYTES }), ...stages, output]).catch((error: unknown) => output.destroy(translateRead(error, where)));
  return output;
}

/** Why stored bytes of this length (and digest, once known) are not the manifest's object, or undefined. */
function storedMismatch(expected: BackupObject, where: string, bytes: number, sha256?: string): BerthError | undefined {
  if (bytes !== expected.bytes) {
    const truncated = bytes < expected.bytes;
    return new BerthError(truncated ? 'ERR_BACKUP_TRUNCATED' : 'ERR_BACKUP_CORRUPT', `${where} is ${truncated ? 'truncated' : 'corrupt'}: ${bytes} bytes stored, the manifest says ${expected.bytes}`);
  }
  if (sha256 !== undefined && sha256 !== expected.sha256) return new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: checksum mismatch`);
  return undefined;
}

/** Passes bytes through and fails at the end unless they hash to the manifest's checksum. */
class ChecksumVerifier extends Transform {
  private readonly hash = createHash('sha256');
  private bytes = 0;

  constructor(
    private readonly expected: BackupObject,
    private readonly where: string,
  ) {
    super({ highWaterMark: STAGE_BUFFER_BYTES });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    callback(storedMismatch(this.expected, this.where, this.bytes, this.bytes === this.expected.bytes ? this.hash.digest('hex') : undefined));
  }
}

/** Reads a whole (small) object into memory, verified. */
export async function loadObjectBuffer(raw: ObjectSource, object: BackupObject, where: string, codec: ObjectCodec): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of loadObject(raw, object, where, codec)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export function bufferSource(parts: readonly Buffer[]): Readable {
  return Readable.from(parts, { objectMode: false });
}

function translateRead(error: unknown, where: string): Error {
  if (error instanceof BerthError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new BerthError('ERR_BACKUP_CORRUPT', `${where} is missing from the backup`);
  return new BerthError('ERR_BACKUP_CORRUPT', `${where} cannot be read: ${(error as Error).message}`, { cause: error });
}
