/**
 * Block index: per regular file, a 16-byte hash of every 4 KiB block. An incremental backup
 * compares the snapshot's files with the parent backup's index and ships only blocks whose hash
 * changed, so scattered database page writes cost their own size (not 1-2 MiB chunks, which
 * amplify 256 scattered 4 KiB writes into ~400 MiB). Files whose size, mtime, ctime and inode are
 * unchanged reuse the parent's hashes without being read.
 *
 * Serialized form (before compression/encryption): a sequence of records,
 * [u32 header length][header JSON][u32 hash bytes length][hashes], one per file; an incremental's
 * own index may hold patch records instead, the changed blocks' hashes only (PatchEntry).
 */
import { hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { BerthError } from '../../plugins/errors/berth-error.js';

export const BLOCK_SIZE = 4096;
export const HASH_BYTES = 16;
/** Files are read in batches of blocks: one read call per MiB. */
const READ_BLOCKS = 256;

export interface FileIndexEntry {
  readonly path: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
  readonly ino: number;
  /** HASH_BYTES per block, ceil(size / BLOCK_SIZE) blocks. */
  readonly hashes: Buffer;
}

export type BlockIndex = Map<string, FileIndexEntry>;

export function blockCount(size: number): number {
  return Math.ceil(size / BLOCK_SIZE);
}

/**
 * Writes the block's hash (the first HASH_BYTES of its SHA-256) into `into` at byte `offset`. The
 * digest comes as a 'binary' (latin1) string, one char a byte: cheaper to get than a new Buffer,
 * which at one hash per 4 KiB is a fifth of the time.
 */
export function hashBlockInto(block: Buffer, into: Buffer, offset: number): void {
  into.write(hash('sha256', block, 'binary'), offset, HASH_BYTES, 'binary');
}

export interface FileStat {
  readonly size: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
  readonly ino: number;
}

/** The parent's entry still describes this file when nothing about it changed. */
export function unchangedSince(previous: FileIndexEntry, stat: FileStat): boolean {
  return previous.size === stat.size && previous.mtimeMs === stat.mtimeMs && previous.ctimeMs === stat.ctimeMs && previous.ino === stat.ino;
}

/**
 * Hashes a file block by block. With `previous`, also reports the blocks that differ from it
 * (changed blocks and blocks past its old end) to `onChangedBlock`, in order.
 */
export async function indexFile(
  absolutePath: string,
  relativePath: string,
  stat: FileStat,
  onChangedBlock?: (blockIndex: number, length: number) => void,
  previous?: FileIndexEntry,
): Promise<{ entry: FileIndexEntry; changedBlocks: number }> {
  const blocks = blockCount(stat.size);
  const hashes = Buffer.allocUnsafe(blocks * HASH_BYTES);
  const handle = await open(absolutePath, 'r');
  let changedBlocks = 0;
  try {
    const buffer = Buffer.allocUnsafe(BLOCK_SIZE * READ_BLOCKS);
    for (let first = 0; first < blocks; first += READ_BLOCKS) {
      const want = Math.min(READ_BLOCKS, blocks - first) * BLOCK_SIZE;
      const { bytesRead } = await handle.read(buffer, 0, want, first * BLOCK_SIZE);
      const expected = Math.min(want, stat.size - first * BLOCK_SIZE);
      if (bytesRead !== expected) throw new BerthError('ERR_BACKUP_SOURCE_CHANGED', `file ${relativePath} changed size while being read`);
      for (let offset = 0; offset < bytesRead; offset += BLOCK_SIZE) {
        const index = first + offset / BLOCK_SIZE;
        const block = buffer.subarray(offset, Math.min(offset + BLOCK_SIZE, bytesRead));
        hashBlockInto(block, hashes, index * HASH_BYTES);
        if (previous && !sameBlock(previous, index, hashes, block.length)) {
          changedBlocks++;
          onChangedBlock?.(index, block.length);
        }
      }
    }
  } finally {
    await handle.close();
  }
  return { entry: { path: relativePath, size: stat.size, mtimeMs: stat.mtimeMs, ctimeMs: stat.ctimeMs, ino: stat.ino, hashes }, changedBlocks };
}

/** Whether block `index` of `hashes` (a file of the same path) is the previous entry's. */
function sameBlock(previous: FileIndexEntry, index: number, hashes: Buffer, length: number): boolean {
  if (index >= blockCount(previous.size)) return false;
  // A last block that grew or shrank is shipped whole: its hash alone cannot tell lengths apart.
  const oldLength = Math.min(BLOCK_SIZE, previous.size - index * BLOCK_SIZE);
  if (oldLength !== length) return false;
  const start = index * HASH_BYTES;
  return previous.hashes.compare(hashes, start, start + HASH_BYTES, start, start + HASH_BYTES) === 0;
}

/** Bytes of block `index` in a file of `size` bytes. */
export function blockLength(size: number, index: number): number {
  return Math.min(BLOCK_SIZE, size - index * BLOCK_SIZE);
}

/** The blocks of `current` (ascending) whose content differs from `previous`, a version of the same file. */
export function changedBlocks(previous: FileIndexEntry, current: FileIndexEntry): number[] {
  const changed: number[] = [];
  for (let index = 0; index < blockCount(current.size); index++) {
    if (!sameBlock(previous, index, current.hashes, blockLength(current.size, index))) changed.push(index);
  }
  return changed;
}

/** Hashes the blocks of one archived chunk; chunks start on block boundaries. */
export function hashChunkInto(hashes: Buffer, chunk: Buffer, offset: number): void {
  for (let position = 0; position < chunk.length; position += BLOCK_SIZE) {
    hashBlockInto(chunk.subarray(position, Math.min(position + BLOCK_SIZE, chunk.length)), hashes, ((offset + position) / BLOCK_SIZE) * HASH_BYTES);
  }
}

/**
 * An index record that holds only what changed against the same file in the parent backup's
 * index (berth-backup/2 incrementals): the hashes of the listed blocks; every other block keeps
 * the parent's hash. The listed blocks include every block the parent's list cannot supply (past
 * its end, or a last block whose length changed). See chain-index.ts for applying it.
 */
export interface PatchEntry extends FileStat {
  readonly path: string;
  /** PATCH_BYTES per patched block, ascending: the block's number (u32) and its hash. */
  readonly patched: Buffer;
}

export const PATCH_BYTES = 4 + HASH_BYTES;

export type IndexRecord = FileIndexEntry | PatchEntry;

export function isPatch(record: IndexRecord): record is PatchEntry {
  return 'patched' in record;
}

/** A patch record for `entry` listing the given blocks (ascending) with their hashes from `entry`. */
export function patchOf(entry: FileIndexEntry, blocks: readonly number[]): PatchEntry {
  const patched = Buffer.allocUnsafe(blocks.length * PATCH_BYTES);
  blocks.forEach((index, position) => {
    patched.writeUInt32BE(index, position * PATCH_BYTES);
    entry.hashes.copy(patched, position * PATCH_BYTES + 4, index * HASH_BYTES, (index + 1) * HASH_BYTES);
  });
  return { path: entry.path, size: entry.size, mtimeMs: entry.mtimeMs, ctimeMs: entry.ctimeMs, ino: entry.ino, patched };
}

/**
 * Serialized form: per record [u32 header length][header JSON][u32 hash bytes length][hashes]; a
 * patch record's header says `"patch":true` and its hash bytes are its `patched` list.
 */
export function serializeBlockIndex(index: Iterable<IndexRecord>): Buffer[] {
  const parts: Buffer[] = [];
  for (const entry of index) {
    const patch = isPatch(entry);
    const header = Buffer.from(JSON.stringify({ path: entry.path, size: entry.size, mtimeMs: entry.mtimeMs, ctimeMs: entry.ctimeMs, ino: entry.ino, ...(patch ? { patch: true } : {}) }), 'utf8');
    const lengths = Buffer.allocUnsafe(4);
    lengths.writeUInt32BE(header.length);
    const hashes = patch ? entry.patched : entry.hashes;
    const hashLength = Buffer.allocUnsafe(4);
    hashLength.writeUInt32BE(hashes.length);
    parts.push(lengths, header, hashLength, hashes);
  }
  return parts;
}

/** A complete index: every record lists all of its file's hashes. */
export function parseBlockIndex(data: Buffer, objectName: string): BlockIndex {
  return parseRecords(data, objectName, false) as BlockIndex;
}

/** An incremental's own index (berth-backup/2): patch records allowed. */
export function parseIndexRecords(data: Buffer, objectName: string): Map<string, IndexRecord> {
  return parseRecords(data, objectName, true);
}

function parseRecords(data: Buffer, objectName: string, patches: boolean): Map<string, IndexRecord> {
  const index = new Map<string, IndexRecord>();
  let offset = 0;
  const corrupt = (why: string) => new BerthError('ERR_BACKUP_CORRUPT', `${objectName} is corrupt: ${why} at byte ${offset}`);
  while (offset < data.length) {
    if (offset + 4 > data.length) throw corrupt('truncated record header');
    const headerLength = data.readUInt32BE(offset);
    offset += 4;
    if (offset + headerLength + 4 > data.length) throw corrupt('truncated record');
    let header: { path?: unknown; size?: unknown; mtimeMs?: unknown; ctimeMs?: unknown; ino?: unknown; patch?: unknown };
    try {
      header = JSON.parse(data.subarray(offset, offset + headerLength).toString('utf8')) as typeof header;
    } catch {
      throw corrupt('unreadable record');
    }
    offset += headerLength;
    const hashLength = data.readUInt32BE(offset);
    offset += 4;
    const { path, size, mtimeMs, ctimeMs, ino, patch } = header;
    if (typeof path !== 'string' || typeof size !== 'number' || typeof mtimeMs !== 'number' || typeof ctimeMs !== 'number' || typeof ino !== 'number') throw corrupt('invalid record');
    if (patch !== undefined && (patch !== true || !patches)) throw corrupt(`record of ${path} is a patch, which this index may not hold`);
    if (offset + hashLength > data.length) throw corrupt(`hash list of ${path} is truncated`);
    const hashes = Buffer.from(data.subarray(offset, offset + hashLength));
    if (patch === true) {
      if (hashLength % PATCH_BYTES !== 0) throw corrupt(`patch of ${path} is not whole blocks`);
      for (let at = 0, previous = -1; at < hashLength; at += PATCH_BYTES) {
        const block = hashes.readUInt32BE(at);
        if (block <= previous || block >= blockCount(size)) throw corrupt(`patch of ${path} lists block ${block} out of order or past its end`);
        previous = block;
      }
      index.set(path, { path, size, mtimeMs, ctimeMs, ino, patched: hashes });
    } else {
      if (hashLength !== blockCount(size) * HASH_BYTES) throw corrupt(`hash list of ${path} does not match its size`);
      index.set(path, { path, size, mtimeMs, ctimeMs, ino, hashes });
    }
    offset += hashLength;
  }
  return index;
}
