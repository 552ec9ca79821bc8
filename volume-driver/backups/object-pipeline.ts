import { createHash } from 'node:crypto';
import { PassThrough, Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { compressStream, decompressStream, type Compression } from './codec/compression.js';
import { DigestStream } from './codec/digest-stream.js';
import { decryptStream, encryptStream, type BackupKey } from './codec/encryption.js';
import type { BackupObject } from './backup-manifest.js';
import { BerthError } from '../../plugins/errors/berth-error.js';

export interface ObjectCodec {
  readonly compression: Compression;
  readonly key?: BackupKey;
}

const STAGE_BUFFER_BYTES = 4 * 1024 * 1024;

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
 */
export function loadObject(raw: Readable, object: BackupObject, where: string, codec: ObjectCodec): Readable {
  const stages: NodeJS.ReadWriteStream[] = [new ChecksumVerifier(object, where)];
  if (codec.key) stages.push(decryptStream(codec.key, where));
  stages.push(decompressStream(codec.compression));
  // Large buffers between stages: the default 16 KiB makes every stage stall on the next.
  const output = new PassThrough({ highWaterMark: STAGE_BUFFER_BYTES });
  pipeline([raw, ...stages, output]).catch((error: unknown) => output.destroy(translateRead(error, where)));
  return output;
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
    if (this.bytes !== this.expected.bytes) {
      callback(new BerthError(this.bytes < this.expected.bytes ? 'ERR_BACKUP_TRUNCATED' : 'ERR_BACKUP_CORRUPT', `${this.where} is ${this.bytes < this.expected.bytes ? 'truncated' : 'corrupt'}: ${this.bytes} bytes stored, the manifest says ${this.expected.bytes}`));
    } else if (this.hash.digest('hex') !== this.expected.sha256) {
      callback(new BerthError('ERR_BACKUP_CORRUPT', `${this.where} is corrupt: checksum mismatch`));
    } else {
      callback();
    }
  }
}

/** Reads a whole (small) object into memory, verified. */
export async function loadObjectBuffer(raw: Readable, object: BackupObject, where: string, codec: ObjectCodec): Promise<Buffer> {
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
