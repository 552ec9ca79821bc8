// Byte streams for tests of code that consumes or produces AsyncIterable<Buffer>.

/** `data` in pieces of `size` bytes (the last one shorter), as a network transport would hand them over. */
export async function* pieces(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let offset = 0; offset < data.length; offset += size) yield data.subarray(offset, offset + size);
}

/** Everything a byte stream yields, concatenated. */
export async function collect(source: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of source) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
