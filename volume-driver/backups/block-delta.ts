/**
 * The deltas object of an incremental backup: for every file shipped as changed blocks,
 * [u32 header length][header JSON {path, size, baseSize, blocks}] followed by `blocks` records
 * [u32 block index][u32 length][bytes]. Applying one truncates the restored file to `size` and
 * writes each block at index * BLOCK_SIZE; every other byte is already right from the parent.
 * The whole object is a stream: nothing needs to fit in memory.
 */
import { BerthError } from '../../plugins/errors/berth-error.js';
import { ByteReader } from '../../plugins/util/byte-reader.js';
import { BLOCK_SIZE } from './block-index.js';

export interface DeltaHeader {
  readonly path: string;
  readonly size: number;
  readonly baseSize: number;
  readonly blocks: number;
}

export function encodeDeltaHeader(header: DeltaHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32BE(json.length);
  return Buffer.concat([length, json]);
}

export function encodeDeltaBlock(index: number, data: Buffer): Buffer {
  const head = Buffer.allocUnsafe(8);
  head.writeUInt32BE(index, 0);
  head.writeUInt32BE(data.length, 4);
  return Buffer.concat([head, data]);
}

/** Bytes a delta with these blocks occupies, so a tar-free stream can be sized up front. */
export function deltaBytes(header: DeltaHeader, blockLengths: readonly number[]): number {
  return encodeDeltaHeader(header).length + blockLengths.reduce((sum, length) => sum + 8 + length, 0);
}

export type DeltaEvent = { readonly kind: 'file'; readonly header: DeltaHeader } | { readonly kind: 'block'; readonly path: string; readonly index: number; readonly data: Buffer };

/** Parses a deltas stream incrementally, validating every bound; errors name the object. */
export async function* readDeltas(stream: AsyncIterable<Buffer>, objectName: string): AsyncGenerator<DeltaEvent> {
  const corrupt = (why: string) => new BerthError('ERR_BACKUP_CORRUPT', `${objectName} is corrupt: ${why}`);
  let truncation = 'truncated delta header';
  const input = new ByteReader(stream, () => corrupt(truncation));
  while (await input.has(1)) {
    truncation = 'truncated delta header';
    const headerLength = (await input.read(4)).readUInt32BE(0);
    if (headerLength > 1024 * 1024) throw corrupt('truncated delta header');
    let header: DeltaHeader;
    try {
      header = JSON.parse((await input.read(headerLength)).toString('utf8')) as DeltaHeader;
    } catch (error) {
      if (error instanceof BerthError) throw error;
      throw corrupt('unreadable delta header');
    }
    if (typeof header.path !== 'string' || !Number.isSafeInteger(header.size) || !Number.isSafeInteger(header.baseSize) || !Number.isSafeInteger(header.blocks)) throw corrupt('invalid delta header');
    yield { kind: 'file', header };
    for (let block = 0; block < header.blocks; block++) {
      truncation = `truncated block record in ${header.path}`;
      const head = await input.read(8);
      const index = head.readUInt32BE(0);
      const length = head.readUInt32BE(4);
      if (length > BLOCK_SIZE || index * BLOCK_SIZE + length > header.size) throw corrupt(`block ${index} of ${header.path} is out of bounds`);
      truncation = `truncated block ${index} of ${header.path}`;
      yield { kind: 'block', path: header.path, index, data: Buffer.from(await input.read(length)) };
    }
  }
}
