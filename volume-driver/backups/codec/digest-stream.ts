import { createHash, type Hash } from 'node:crypto';
import { PassThrough, type TransformCallback } from 'node:stream';
import { BerthError } from '../../../plugins/errors/berth-error.js';

/**
 * Passes bytes through unchanged while computing their SHA-256 and counting them. `bytes` is live
 * (for progress); `digest()` is available once the stream has finished.
 */
export class DigestStream extends PassThrough {
  readonly #hash: Hash = createHash('sha256');
  #bytes = 0;
  #digest: string | undefined;

  /** Bytes that have passed so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Lowercase hex SHA-256 of everything that passed; throws before the writable side finished. */
  digest(): string {
    if (this.#digest === undefined) throw new BerthError('ERR_INTERNAL', 'digest stream: the digest was asked for before the stream finished');
    return this.#digest;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash.update(chunk);
    this.#bytes += chunk.length;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.#digest = this.#hash.digest('hex');
    callback();
  }
}
