/**
 * The stream of a dir-backend chain snapshot, as sendReplicationSnapshot makes it and
 * receiveReplicationSnapshot takes it (format 1):
 *
 *   stream = MAGIC record*          MAGIC: the 16 bytes "berth-dir-chain\n"
 *   record = type:u8 length:u32be header:JSON(length bytes) payload
 *
 *   'H' {format, volume, id, parent}        first, once; parent is null in a whole stream
 *   'R' {path}                              delete path (a directory with all it holds)
 *   'D' {path, mode, uid, gid, mtimeMs}     directory made, or its metadata changed
 *   'F' {path, size, mode, uid, gid, mtimeMs}
 *                                           whole regular file; payload: its `size` bytes
 *   'P' {path, size, mode, uid, gid, mtimeMs, blocks}
 *                                           regular file of the parent changed in place: truncate it to
 *                                           `size`, then write the payload's `blocks` records
 *                                           [u32be block number][u32be length][bytes] (block-delta.ts),
 *                                           ascending, each a whole 4 KiB block (the last one shorter)
 *   'S' {path, target, uid, gid, mtimeMs}   symlink (replacing whatever non-directory is there)
 *   'L' {path, target}                      hard link to `target`, a regular file made or kept earlier
 *   'Q' {path, mode, uid, gid, mtimeMs}     fifo
 *   'T' {mode, uid, gid, mtimeMs}           the root directory's metadata
 *   'E' {records, digest}                   end: how many records came between H and E, and the
 *                                           snapshot's manifestDigest; nothing may follow it
 *
 * Order: H, every R, then the rest in tree order (a directory before what it holds, a hard link
 * after its target), T, E. Paths are tree paths: relative, '/'-separated, no empty, '.' or '..'
 * components. Without a parent everything is sent whole; with one, only what differs from it:
 * removed paths, entries that are new or changed kind, metadata that changed, and of a regular
 * file that was one in the parent too only its blocks whose hash differs. Times are milliseconds
 * since the epoch (fractions allowed); a receiver sets them to the millisecond.
 */
import { BerthError } from '../../plugins/errors/berth-error.js';
import { ByteReader } from '../../plugins/util/byte-reader.js';
import { BLOCK_SIZE } from '../backups/block-index.js';

export const CHAIN_STREAM_FORMAT = 1;
const MAGIC = Buffer.from('berth-dir-chain\n', 'latin1');
const BTRFS_MAGIC = Buffer.from('btrfs-stream\0', 'latin1');
/** Paths and symlink targets are at most a few KiB: a larger header is not one of ours. */
const MAX_HEADER_BYTES = 1024 * 1024;

export interface Metadata {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtimeMs: number;
}

export interface StreamHead {
  readonly format: number;
  readonly volume: string;
  readonly id: string;
  readonly parent: string | null;
}

export type ChainRecord =
  | ({ readonly type: 'H' } & StreamHead)
  | { readonly type: 'R'; readonly path: string }
  | ({ readonly type: 'D' | 'Q'; readonly path: string } & Metadata)
  | ({ readonly type: 'F'; readonly path: string; readonly size: number } & Metadata)
  | ({ readonly type: 'P'; readonly path: string; readonly size: number; readonly blocks: number } & Metadata)
  | { readonly type: 'S'; readonly path: string; readonly target: string; readonly uid: number; readonly gid: number; readonly mtimeMs: number }
  | { readonly type: 'L'; readonly path: string; readonly target: string }
  | ({ readonly type: 'T' } & Metadata)
  | { readonly type: 'E'; readonly records: number; readonly digest: string };

export function sameMetadata(a: Metadata, b: Metadata): boolean {
  return a.mode === b.mode && a.uid === b.uid && a.gid === b.gid && a.mtimeMs === b.mtimeMs;
}

/** The stream's opening: MAGIC and the H record. */
export function encodeStreamStart(head: StreamHead): Buffer {
  return Buffer.concat([MAGIC, encodeRecord({ type: 'H', ...head })]);
}

/** One record's type, length and header (the payload, if any, follows it). */
export function encodeRecord(record: ChainRecord): Buffer {
  const { type, ...fields } = record;
  const header = Buffer.from(JSON.stringify(fields), 'utf8');
  const head = Buffer.allocUnsafe(5);
  head.writeUInt8(type.charCodeAt(0), 0);
  head.writeUInt32BE(header.length, 1);
  return Buffer.concat([head, header]);
}

/** Reads a chain stream record by record, checking every field; `refuse` makes its errors. */
export class ChainStreamReader {
  readonly #input: ByteReader;

  constructor(
    source: AsyncIterable<Buffer>,
    private readonly refuse: (reason: string) => BerthError,
  ) {
    this.#input = new ByteReader(source, () => refuse('the stream ended before its end marker (truncated)'));
  }

  /** MAGIC and the H record. */
  async start(): Promise<StreamHead> {
    const magic = Buffer.from(await this.#input.read(MAGIC.length));
    if (magic.subarray(0, BTRFS_MAGIC.length).equals(BTRFS_MAGIC)) throw this.refuse('the stream is a btrfs send stream: every host of a replicated volume needs the same storage backend');
    if (!magic.equals(MAGIC)) throw this.refuse('the data is not a dir-backend chain stream');
    const head = await this.next();
    if (head.type !== 'H') throw this.refuse(`the stream starts with a ${head.type} record, not with its header`);
    if (head.format !== CHAIN_STREAM_FORMAT) throw this.refuse(`the stream has format ${head.format}; this host reads format ${CHAIN_STREAM_FORMAT}`);
    return head;
  }

  async next(): Promise<ChainRecord> {
    const head = await this.#input.read(5);
    const type = String.fromCharCode(head.readUInt8(0));
    const length = head.readUInt32BE(1);
    if (length > MAX_HEADER_BYTES) throw this.refuse(`a ${JSON.stringify(type)} record announces a ${length}-byte header`);
    let fields: Record<string, unknown>;
    try {
      fields = JSON.parse((await this.#input.read(length)).toString('utf8')) as Record<string, unknown>;
    } catch (error) {
      if (error instanceof BerthError) throw error;
      throw this.refuse(`a ${JSON.stringify(type)} record has an unreadable header`);
    }
    if (typeof fields !== 'object' || fields === null) throw this.refuse(`a ${JSON.stringify(type)} record has an invalid header`);
    return this.decode(type, fields);
  }

  /** The payload of an F record. */
  content(size: number): AsyncGenerator<Buffer> {
    return this.#input.pieces(size);
  }

  /** One block of a P record's payload (a copy). */
  async block(): Promise<{ index: number; data: Buffer }> {
    const head = await this.#input.read(8);
    const index = head.readUInt32BE(0);
    const length = head.readUInt32BE(4);
    if (length > BLOCK_SIZE) throw this.refuse(`block ${index} of a P record is ${length} bytes long`);
    return { index, data: Buffer.from(await this.#input.read(length)) };
  }

  /** Stops reading the stream (it is destroyed, if it is one). */
  cancel(): Promise<void> {
    return this.#input.cancel();
  }

  /** Whether the stream has ended (after the E record it must have). */
  async ended(): Promise<boolean> {
    return !(await this.#input.has(1));
  }

  private decode(type: string, fields: Record<string, unknown>): ChainRecord {
    const text = (key: string): string => {
      const value = fields[key];
      if (typeof value !== 'string') throw this.invalid(type, key);
      return value;
    };
    const integer = (key: string): number => {
      const value = fields[key];
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw this.invalid(type, key);
      return value;
    };
    const time = (): number => {
      const value = fields['mtimeMs'];
      if (typeof value !== 'number' || !Number.isFinite(value)) throw this.invalid(type, 'mtimeMs');
      return value;
    };
    const metadata = (): Metadata => ({ mode: integer('mode') & 0o7777, uid: integer('uid'), gid: integer('gid'), mtimeMs: time() });
    switch (type) {
      case 'H': {
        const parent = fields['parent'] === null ? null : text('parent');
        return { type, format: integer('format'), volume: text('volume'), id: text('id'), parent };
      }
      case 'R':
        return { type, path: text('path') };
      case 'D':
      case 'Q':
        return { type, path: text('path'), ...metadata() };
      case 'F':
        return { type, path: text('path'), size: integer('size'), ...metadata() };
      case 'P':
        return { type, path: text('path'), size: integer('size'), blocks: integer('blocks'), ...metadata() };
      case 'S':
        return { type, path: text('path'), target: text('target'), uid: integer('uid'), gid: integer('gid'), mtimeMs: time() };
      case 'L':
        return { type, path: text('path'), target: text('target') };
      case 'T':
        return { type, ...metadata() };
      case 'E':
        return { type, records: integer('records'), digest: text('digest') };
      default:
        throw this.refuse(`the stream holds a record of unknown type ${JSON.stringify(type)}`);
    }
  }

  private invalid(type: string, key: string): BerthError {
    return this.refuse(`a ${JSON.stringify(type)} record has an invalid ${key}`);
  }
}
