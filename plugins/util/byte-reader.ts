const EMPTY = Buffer.alloc(0);

/**
 * Reads a byte stream in framed pieces: exactly N bytes, or N bytes as they arrive (large payloads
 * pass through without being gathered). Chunk boundaries of the source do not matter.
 */
export class ByteReader {
  readonly #chunks: AsyncIterator<Buffer>;
  #buffer: Buffer = EMPTY;
  #ended = false;

  /** `truncated` makes the error thrown when the source ends inside a piece. */
  constructor(
    source: AsyncIterable<Buffer>,
    private readonly truncated: () => Error,
  ) {
    this.#chunks = source[Symbol.asyncIterator]();
  }

  /** Whether `bytes` more bytes are there (waiting for them); false when the source ends first. */
  async has(bytes: number): Promise<boolean> {
    while (this.#buffer.length < bytes && !this.#ended) {
      const next = await this.#chunks.next();
      if (next.done) this.#ended = true;
      else if (next.value.length > 0) this.#buffer = this.#buffer.length === 0 ? next.value : Buffer.concat([this.#buffer, next.value]);
    }
    return this.#buffer.length >= bytes;
  }

  /** The next `bytes` bytes (a view: copy it to keep it past the next read). */
  async read(bytes: number): Promise<Buffer> {
    if (!(await this.has(bytes))) throw this.truncated();
    const out = this.#buffer.subarray(0, bytes);
    this.#buffer = this.#buffer.subarray(bytes);
    return out;
  }

  /** Stops reading: the source is told (a stream is destroyed); what it still holds is dropped. */
  async cancel(): Promise<void> {
    this.#ended = true;
    this.#buffer = EMPTY;
    await this.#chunks.return?.().catch(() => undefined);
  }

  /** The next `bytes` bytes in pieces as they arrive; throws `truncated` when the source ends first. */
  async *pieces(bytes: number): AsyncGenerator<Buffer> {
    for (let left = bytes; left > 0; ) {
      if (this.#buffer.length === 0 && !(await this.has(1))) throw this.truncated();
      const piece = this.#buffer.subarray(0, Math.min(left, this.#buffer.length));
      this.#buffer = this.#buffer.subarray(piece.length);
      left -= piece.length;
      yield piece;
    }
  }
}
