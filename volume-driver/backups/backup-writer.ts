/**
 * Writes one backup's objects from a read-only snapshot tree.
 *
 * Full: `data` is a plain tar of the whole tree (restorable with GNU tar alone when unencrypted);
 * every file is block-hashed from the same read that archives it, into `index`.
 *
 * Incremental, relative to a parent's index: files whose size, mtime, ctime and inode are unchanged
 * are neither read nor shipped; a changed file is hashed, and if at most half of it changed only
 * its changed 4 KiB blocks go to `deltas`, otherwise the whole file goes to `data`. `data` also
 * carries every directory, symlink, hard link and fifo (cheap, and it makes the applier simple);
 * `tree` lists the complete tree so a restore can delete what disappeared and fix metadata.
 * `index` holds records of the files read again only (format berth-backup/2): a new or wholly
 * shipped file's hashes, a changed file's changed blocks' hashes; the rest are their parent's, so
 * an unchanged re-run stores next to nothing.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { BLOCK_SIZE, blockCount, HASH_BYTES, hashChunkInto, indexFile, PATCH_BYTES, patchOf, serializeBlockIndex, unchangedSince, type BlockIndex, type FileIndexEntry, type IndexRecord } from './block-index.js';
import { encodeDeltaBlock, encodeDeltaHeader, type DeltaHeader } from './block-delta.js';
import type { BackupObject } from './backup-manifest.js';
import type { PendingBackup } from './backup-target.js';
import { bufferSource, objectFileName, storeObject, type ObjectCodec } from './object-pipeline.js';
import { symlinkTargetProblem } from './tree/safe-extract.js';
import { packTree } from './tree/tar-pack.js';
import { withoutInode, type RootMetadata, type TreeEntry } from './tree/tree-entry.js';
import { readRootMetadata, walkTree } from './tree/walk-tree.js';

export interface WriteInput {
  readonly snapshotPath: string;
  readonly pending: PendingBackup;
  readonly codec: ObjectCodec;
  /** The parent's block index; absent for a full backup. */
  readonly parentIndex?: BlockIndex;
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  readonly onSkip?: (path: string, reason: string) => void;
}

export interface WriteOutput {
  readonly objects: { data: BackupObject; index: BackupObject; tree?: BackupObject; deltas?: BackupObject };
  readonly root: RootMetadata;
  readonly files: number;
  readonly logicalBytes: number;
  readonly changedBytes: number;
  /** Symlinks a default restore refuses because they point outside the volume. */
  readonly escapingSymlinks: readonly string[];
}

/** A changed file ships as deltas only while they stay below this share of its size. */
const DELTA_MAX_SHARE = 0.5;

export async function writeBackup(input: WriteInput): Promise<WriteOutput> {
  const root = await readRootMetadata(input.snapshotPath);
  const entries: TreeEntry[] = [];
  for await (const entry of walkTree(input.snapshotPath, input.onSkip ? { onSkip: input.onSkip } : {})) entries.push(entry);
  const files = entries.filter((entry) => entry.type === 'file');
  const logicalBytes = files.reduce((sum, entry) => sum + entry.size, 0);
  const escapingSymlinks = entries.filter((entry) => entry.type === 'symlink' && symlinkTargetProblem(entry.path, entry.linkTarget) !== undefined).map((entry) => `${entry.path} -> ${entry.linkTarget}`);
  const written = input.parentIndex ? await writeIncremental(input, input.parentIndex, root, entries, logicalBytes) : await writeFull(input, root, entries, logicalBytes);
  return { ...written, escapingSymlinks };
}

async function writeFull(input: WriteInput, root: RootMetadata, entries: TreeEntry[], logicalBytes: number): Promise<Omit<WriteOutput, 'escapingSymlinks'>> {
  const index = newIndexFor(entries.filter((entry) => entry.type === 'file'));
  const data = await storeTree(input, root, entries, index, logicalBytes, 0);
  const indexObject = await storeIndex(input, index.values());
  return { objects: { data, index: indexObject }, root, files: index.size, logicalBytes, changedBytes: logicalBytes };
}

async function writeIncremental(input: WriteInput, parent: BlockIndex, root: RootMetadata, entries: TreeEntry[], logicalBytes: number): Promise<Omit<WriteOutput, 'escapingSymlinks'>> {
  /** Index records of the files read again (new or changed). */
  const readAgain = new Map<string, IndexRecord>();
  const deltas: Array<{ header: DeltaHeader; blocks: Array<{ index: number; length: number }> }> = [];
  const wholeFiles: TreeEntry[] = [];
  let examined = 0;
  for (const entry of entries) {
    if (entry.type !== 'file') continue;
    const stat = fileStat(entry);
    const previous = parent.get(entry.path);
    if (previous && unchangedSince(previous, stat)) {
      // Its entry stays the parent's.
    } else if (previous && previous.size > 0 && entry.size > 0) {
      const changed: Array<{ index: number; length: number }> = [];
      const { entry: indexed } = await indexFile(join(input.snapshotPath, entry.path), entry.path, stat, (index, length) => changed.push({ index, length }), previous);
      const changedBytes = changed.reduce((sum, block) => sum + block.length, 0);
      if (changedBytes <= entry.size * DELTA_MAX_SHARE || changed.length === 0) {
        deltas.push({ header: { path: entry.path, size: entry.size, baseSize: previous.size, blocks: changed.length }, blocks: changed });
      } else {
        wholeFiles.push(entry);
      }
      // The changed blocks' hashes when that is smaller than the whole list (untouched files: none).
      readAgain.set(entry.path, changed.length * PATCH_BYTES < indexed.hashes.length ? patchOf(indexed, changed.map((block) => block.index)) : indexed);
    } else {
      wholeFiles.push(entry);
    }
    examined += entry.size;
    input.onProgress?.(Math.min(examined, logicalBytes) / 2, logicalBytes);
  }

  const wholeIndex = newIndexFor(wholeFiles);
  for (const [path, entry] of wholeIndex) readAgain.set(path, entry);
  const shipped = new Set(wholeFiles.map((entry) => entry.path));
  const packed = entries.filter((entry) => entry.type !== 'file' || shipped.has(entry.path));
  const wholeBytes = wholeFiles.reduce((sum, entry) => sum + entry.size, 0);
  const deltaBytes = deltas.reduce((sum, delta) => sum + delta.blocks.reduce((total, block) => total + block.length, 0), 0);

  // The tree listing is about content and metadata; inode numbers mean nothing on restore.
  const tree = await storeObject(bufferSource([Buffer.from(entries.map((entry) => `${JSON.stringify(withoutInode(entry))}\n`).join(''), 'utf8')]), input.pending.createObject(objectFileName('tree.ndjson', input.codec)), objectFileName('tree.ndjson', input.codec), input.codec);
  const data = await storeTree(input, root, packed, wholeIndex, logicalBytes, logicalBytes / 2, wholeBytes + deltaBytes);
  const deltasObject = await storeObject(Readable.from(deltaStream(input.snapshotPath, deltas)), input.pending.createObject(objectFileName('deltas.bin', input.codec)), objectFileName('deltas.bin', input.codec), input.codec);
  const indexObject = await storeIndex(input, entries.flatMap((entry) => readAgain.get(entry.path) ?? []));
  const files = entries.filter((entry) => entry.type === 'file').length;
  return { objects: { data, index: indexObject, tree, deltas: deltasObject }, root, files, logicalBytes, changedBytes: wholeBytes + deltaBytes };
}

/** Archives `entries` as a tar, filling `index` with the block hashes of the files it reads. */
async function storeTree(input: WriteInput, root: RootMetadata, entries: readonly TreeEntry[], index: Map<string, FileIndexEntry>, totalBytes: number, startBytes: number, shippedBytes = totalBytes): Promise<BackupObject> {
  const file = objectFileName('data.tar', input.codec);
  const scale = shippedBytes > 0 ? (totalBytes - startBytes) / shippedBytes : 0;
  const tar = packTree(input.snapshotPath, iterate(entries), {
    rootEntry: root,
    onFileChunk: (entry, chunk, offset) => {
      const indexed = index.get(entry.path);
      if (indexed) hashChunkInto(indexed.hashes, chunk, offset);
    },
    ...(input.onProgress ? { onProgress: (bytes: number) => input.onProgress?.(startBytes + bytes * scale, totalBytes) } : {}),
  });
  return storeObject(tar, input.pending.createObject(file), file, input.codec);
}

async function storeIndex(input: WriteInput, entries: Iterable<IndexRecord>): Promise<BackupObject> {
  const file = objectFileName('index.bin', input.codec);
  return storeObject(bufferSource(serializeBlockIndex(entries)), input.pending.createObject(file), file, input.codec);
}

/** Index entries for files about to be read; their hashes are filled while they are archived. */
function newIndexFor(files: readonly TreeEntry[]): Map<string, FileIndexEntry> {
  const index = new Map<string, FileIndexEntry>();
  for (const entry of files) index.set(entry.path, { ...fileStat(entry), path: entry.path, hashes: Buffer.alloc(blockCount(entry.size) * HASH_BYTES) });
  return index;
}

async function* deltaStream(snapshotPath: string, deltas: ReadonlyArray<{ header: DeltaHeader; blocks: ReadonlyArray<{ index: number; length: number }> }>): AsyncGenerator<Buffer> {
  for (const { header, blocks } of deltas) {
    yield encodeDeltaHeader(header);
    if (blocks.length === 0) continue;
    const handle = await open(join(snapshotPath, header.path), 'r');
    try {
      for (const block of blocks) {
        const data = Buffer.allocUnsafe(block.length);
        const { bytesRead } = await handle.read(data, 0, block.length, block.index * BLOCK_SIZE);
        if (bytesRead !== block.length) throw new BerthError('ERR_BACKUP_SOURCE_CHANGED', `file ${header.path} changed while being read`);
        yield encodeDeltaBlock(block.index, data);
      }
    } finally {
      await handle.close();
    }
  }
}

function fileStat(entry: TreeEntry): { size: number; mtimeMs: number; ctimeMs: number; ino: number } {
  return { size: entry.size, mtimeMs: entry.mtimeMs, ctimeMs: entry.ctimeMs ?? 0, ino: entry.ino ?? 0 };
}

async function* iterate<T>(items: readonly T[]): AsyncGenerator<T> {
  yield* items;
}
