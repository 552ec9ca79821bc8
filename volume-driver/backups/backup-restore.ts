/**
 * Restores a backup chain into an empty directory: the full backup's tar is extracted safely,
 * then each incremental is applied (paths that disappeared deleted, changed entries replaced,
 * deltas patched in place, metadata set from the tree listing). Finally every restored file is
 * checked block by block against the last backup's index, so a restore that returns is exact:
 * the blocks are hashed from the bytes as they are written (RestoredBlocks), only what was not
 * seen that way is read back. On any failure the caller deletes the half-restored directory:
 * nothing is left looking whole.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, link, lstat, mkdir, rm, symlink, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { BLOCK_SIZE, indexFile, parseBlockIndex, parseIndexRecords, type BlockIndex } from './block-index.js';
import { chainIndex, parseTreeListing } from './chain-index.js';
import { readDeltas } from './block-delta.js';
import { indexIsPartial, type BackupManifest, type BackupObject } from './backup-manifest.js';
import type { BackupTarget } from './backup-target.js';
import type { Compression } from './codec/compression.js';
import type { BackupKey } from './codec/encryption.js';
import { loadObject, loadObjectBuffer, type ObjectCodec, type ObjectSource } from './object-pipeline.js';
import { RestoredBlocks, type BlockPatch } from './restored-blocks.js';
import { extractTree, openForPatch, removePath, safeResolve, setMetadata, symlinkTargetProblem, writeFileFrom, type ArchiveEntry } from './tree/safe-extract.js';
import { compareTreePaths, type EntryMetadata } from './tree/tree-entry.js';
import { walkTree } from './tree/walk-tree.js';

const run = promisify(execFile);

export interface RestoreProgress {
  (phase: string, doneBytes?: number, totalBytes?: number): void;
}

/** The chain a restore applies, oldest (the full backup) first; checks that it is whole. */
export async function loadChain(target: BackupTarget, volume: string, id: string): Promise<BackupManifest[]> {
  const last = await target.readManifest(volume, id);
  const chain: BackupManifest[] = [];
  for (const ancestor of last.chain) {
    const manifest = await target.readManifest(volume, ancestor).catch((error: unknown) => {
      throw new BerthError('ERR_BACKUP_CORRUPT', `backup ${volume}/${id} cannot be restored: it needs ${ancestor}, which is unusable (${error instanceof Error ? error.message : String(error)})`);
    });
    chain.push(manifest);
  }
  chain.push(last);
  if (chain[0]?.kind !== 'full') throw new BerthError('ERR_BACKUP_CORRUPT', `backup ${volume}/${id} has no full backup at the start of its chain`);
  return chain;
}

/** The block index of the chain's last backup (chain-index.ts), every object read verified. */
export async function loadChainIndex(target: BackupTarget, chain: readonly BackupManifest[], key: BackupKey | undefined): Promise<BlockIndex> {
  return chainIndex(chain, {
    index: async (manifest) => {
      const data = await loadVerifiedBuffer(target, manifest, manifest.objects.index, codecFor(manifest, key));
      return (indexIsPartial(manifest) ? parseIndexRecords : parseBlockIndex)(data, objectName(manifest, manifest.objects.index));
    },
    listing: async (manifest) => {
      const tree = manifest.objects.tree;
      if (!tree) throw new BerthError('ERR_BACKUP_CORRUPT', `backup ${manifest.volume}/${manifest.id} is corrupt: an incremental without tree`);
      return parseTreeListing(await loadVerifiedBuffer(target, manifest, tree, codecFor(manifest, key)), `backup ${manifest.volume}/${manifest.id}`);
    },
  });
}

export function codecFor(manifest: BackupManifest, key: BackupKey | undefined): ObjectCodec {
  const where = `backup ${manifest.volume}/${manifest.id}`;
  if (manifest.encryption && !key) throw new BerthError('ERR_BACKUP_WRONG_KEY', `${where} is encrypted (key ${manifest.encryption.keyId}); give its key file`);
  if (manifest.encryption && key && manifest.encryption.keyId !== key.id) {
    throw new BerthError('ERR_BACKUP_WRONG_KEY', `${where} was encrypted with key ${manifest.encryption.keyId} but the given key is ${key.id}`);
  }
  const compression = manifest.compression as Compression;
  return manifest.encryption && key ? { compression, key } : { compression };
}

/** Where to read one of the backup's objects from: its local file when the target has one. */
export function objectSource(target: BackupTarget, manifest: BackupManifest, object: BackupObject): ObjectSource {
  return target.objectPath ? { path: target.objectPath(manifest.volume, manifest.id, object.file) } : target.openObject(manifest.volume, manifest.id, object.file);
}

export function openVerified(target: BackupTarget, manifest: BackupManifest, object: BackupObject, codec: ObjectCodec) {
  return loadObject(objectSource(target, manifest, object), object, objectName(manifest, object), codec);
}

/** A whole (small) object, verified. */
export function loadVerifiedBuffer(target: BackupTarget, manifest: BackupManifest, object: BackupObject, codec: ObjectCodec): Promise<Buffer> {
  return loadObjectBuffer(objectSource(target, manifest, object), object, objectName(manifest, object), codec);
}

function objectName(manifest: BackupManifest, object: BackupObject): string {
  return `backup ${manifest.volume}/${manifest.id} ${object.file}`;
}

export interface RestoreOptions {
  /** Accept symlinks pointing outside the volume; the restore never follows them either way. */
  readonly allowEscapingSymlinks?: boolean;
}

export async function restoreChain(target: BackupTarget, chain: readonly BackupManifest[], key: BackupKey | undefined, destination: string, progress: RestoreProgress = () => undefined, options: RestoreOptions = {}): Promise<void> {
  const total = chain.reduce((sum, manifest) => sum + manifest.stats.changedBytes, 0);
  let done = 0;
  const scratch = await mkdtemp(join(dirname(destination), '.berth-extract-'));
  const blocks = new RestoredBlocks();
  // What the restore is checked against loads meanwhile (small objects, with zstd processes of their own).
  const index = loadChainIndex(target, chain, key);
  index.catch(() => undefined); // awaited below
  try {
    for (const [position, manifest] of chain.entries()) {
      const codec = codecFor(manifest, key);
      const base = done;
      const onBytes = (bytes: number) => progress('restore', base + bytes, total);
      if (position === 0) {
        await extractTree(openVerified(target, manifest, manifest.objects.data, codec), destination, { onProgress: onBytes, allowEscapingSymlinks: options.allowEscapingSymlinks === true, tapContent: blocks.tapContent });
      } else {
        await applyIncremental(target, manifest, codec, destination, scratch, blocks, onBytes, options);
      }
      done = base + manifest.stats.changedBytes;
    }
    await verifyRestored(chain[chain.length - 1]!, await index, destination, blocks, progress);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function applyIncremental(target: BackupTarget, manifest: BackupManifest, codec: ObjectCodec, destination: string, scratch: string, blocks: RestoredBlocks, onBytes: (bytes: number) => void, options: RestoreOptions): Promise<void> {
  const { tree: treeObject, deltas: deltasObject } = manifest.objects;
  if (!treeObject || !deltasObject) throw new BerthError('ERR_BACKUP_CORRUPT', `backup ${manifest.volume}/${manifest.id} is corrupt: an incremental without tree or deltas`);
  const listing = parseTreeListing(await loadVerifiedBuffer(target, manifest, treeObject, codec), `backup ${manifest.volume}/${manifest.id}`);

  // 1. Delete what the new tree no longer has, or has as another kind of entry.
  const doomed: string[] = [];
  for await (const existing of walkTree(destination)) {
    const wanted = listing.get(existing.path);
    const sameKind = wanted && (wanted.type === existing.type || (isFileLike(wanted.type) && isFileLike(existing.type)));
    if (!sameKind && !doomed.some((parent) => existing.path.startsWith(`${parent}/`))) doomed.push(existing.path);
  }
  for (const path of doomed) await removePath(destination, path);

  // 2. Changed entries: the tar's paths are validated by extractTree; we write into the destination.
  let bytes = 0;
  let rootMetadata: EntryMetadata | undefined;
  await extractTree(openVerified(target, manifest, manifest.objects.data, codec), scratch, {
    onEntry: (entry: ArchiveEntry) => async (content: AsyncIterable<Buffer>) => {
      if (entry.path === '') {
        rootMetadata = entry;
        return;
      }
      const absolute = await safeResolve(destination, entry.path);
      switch (entry.type) {
        case 'directory':
          await mkdir(absolute, { mode: 0o700 }).catch((error: NodeJS.ErrnoException) => {
            if (error.code !== 'EEXIST') throw error;
          });
          break;
        case 'file':
          bytes += await writeFileFrom(content, absolute, entry, { replace: true, expectedSize: entry.size, onBytes: (count) => onBytes(bytes + count), tapContent: blocks.tapContent });
          break;
        case 'symlink': {
          const problem = options.allowEscapingSymlinks ? (entry.linkTarget ? undefined : 'it has no target') : symlinkTargetProblem(entry.path, entry.linkTarget);
          if (problem !== undefined) throw new BerthError('ERR_BACKUP_UNSAFE_ENTRY', `archive entry ${JSON.stringify(entry.name)} is unsafe: ${problem}`);
          await unlinkIfPresent(absolute);
          await symlink(entry.linkTarget!, absolute);
          break;
        }
        case 'hardlink': {
          const linked = await safeResolve(destination, entry.linkTarget!);
          const stats = await lstat(linked).catch(() => undefined);
          if (!stats || stats.isDirectory()) throw new BerthError('ERR_BACKUP_UNSAFE_ENTRY', `archive entry ${JSON.stringify(entry.name)} is unsafe: its hard link target ${JSON.stringify(entry.linkTarget)} is not a restored file`);
          await unlinkIfPresent(absolute);
          await link(linked, absolute);
          break;
        }
        case 'fifo':
          if (!(await lstat(absolute).then((stats) => stats.isFIFO(), () => false))) {
            await unlinkIfPresent(absolute);
            await run('mkfifo', ['--', absolute]);
          }
          break;
      }
    },
  });

  // 3. Changed blocks, patched in place.
  let handle: FileHandle | undefined;
  let patch: BlockPatch | undefined;
  const finishFile = async (): Promise<void> => {
    if (handle && patch) await patch.finish(handle);
    await handle?.close();
    handle = undefined;
    patch = undefined;
  };
  try {
    for await (const event of readDeltas(openVerified(target, manifest, deltasObject, codec), `backup ${manifest.volume}/${manifest.id} ${deltasObject.file}`)) {
      if (event.kind === 'file') {
        await finishFile();
        handle = await openForPatch(await safeResolve(destination, event.header.path));
        patch = await blocks.patch(handle);
        await handle.truncate(event.header.size);
        patch.resize(event.header.size);
      } else {
        await handle!.write(event.data, 0, event.data.length, event.index * BLOCK_SIZE);
        patch!.wrote(event.index, event.data);
        bytes += event.data.length;
        onBytes(bytes);
      }
    }
    await finishFile();
  } finally {
    await handle?.close();
  }

  // 4. Metadata of every entry from the listing, children before parents (directory mtimes last).
  const entries = [...listing.values()].sort((a, b) => compareTreePaths(b.path, a.path));
  for (const entry of entries) await setMetadata(await safeResolve(destination, entry.path), entry);
  if (rootMetadata) await setMetadata(destination, { ...rootMetadata, type: 'directory' });
}

/**
 * Every restored file must hash to the last backup's index, block for block: with the hashes
 * taken as it was written where there are some, else read back.
 */
async function verifyRestored(manifest: BackupManifest, index: BlockIndex, destination: string, blocks: RestoredBlocks, progress: RestoreProgress): Promise<void> {
  const total = [...index.values()].reduce((sum, entry) => sum + entry.size, 0);
  let done = 0;
  let restoredFiles = 0;
  for await (const entry of walkTree(destination)) {
    if (entry.type !== 'file') continue;
    restoredFiles++;
    const expected = index.get(entry.path);
    if (!expected) throw new BerthError('ERR_BACKUP_CORRUPT', `restore of backup ${manifest.volume}/${manifest.id} produced ${entry.path}, which its index does not list`);
    const absolute = join(destination, entry.path);
    const { dev, ino } = await lstat(absolute, { bigint: true });
    const hashes = blocks.hashesOf(dev, ino, entry.size) ?? (await indexFile(absolute, entry.path, { size: entry.size, mtimeMs: entry.mtimeMs, ctimeMs: entry.ctimeMs ?? 0, ino: entry.ino ?? 0 })).entry.hashes;
    if (entry.size !== expected.size || !hashes.equals(expected.hashes)) {
      throw new BerthError('ERR_BACKUP_CORRUPT', `restored ${entry.path} does not match backup ${manifest.volume}/${manifest.id}`);
    }
    done += entry.size;
    progress('verify', done, total);
  }
  if (restoredFiles !== index.size) throw new BerthError('ERR_BACKUP_CORRUPT', `restore of backup ${manifest.volume}/${manifest.id} produced ${restoredFiles} files, its index lists ${index.size}`);
}

function isFileLike(type: string): boolean {
  return type === 'file' || type === 'hardlink';
}

async function unlinkIfPresent(path: string): Promise<void> {
  await unlink(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
}
