/**
 * The block index of a backup as a whole, from its chain. A full backup's index, and an
 * incremental's written in format berth-backup/1, lists every file. An incremental in
 * berth-backup/2 lists only the files it read again, those whose content changed as patch records
 * (the hashes of the changed blocks); every other file of its tree listing keeps its parent's
 * entry (unchanged size, mtime, ctime and inode: the same content). Folding the chain from its last
 * complete index onwards gives the index of the last backup.
 */
import { BerthError } from '../../plugins/errors/berth-error.js';
import { indexIsPartial, type BackupManifest } from './backup-manifest.js';
import { BLOCK_SIZE, blockCount, HASH_BYTES, isPatch, PATCH_BYTES, type BlockIndex, type FileIndexEntry, type IndexRecord, type PatchEntry } from './block-index.js';
import type { TreeEntry } from './tree/tree-entry.js';

export interface ChainIndexSources {
  /** The manifest's own index object, parsed (patch records only where its format allows them). */
  index(manifest: BackupManifest): Promise<ReadonlyMap<string, IndexRecord>>;
  /** The incremental's tree listing, parsed. */
  listing(manifest: BackupManifest): Promise<Map<string, TreeEntry>>;
}

/** The index of the chain's last backup (chain oldest first, as loadChain returns it). */
export async function chainIndex(chain: readonly BackupManifest[], sources: ChainIndexSources): Promise<BlockIndex> {
  let start = chain.length - 1;
  while (start > 0 && indexIsPartial(chain[start]!)) start--;
  const first = chain[start]!;
  let index = complete(await sources.index(first), `backup ${first.volume}/${first.id}`);
  for (const manifest of chain.slice(start + 1)) {
    index = foldIndex(index, await sources.index(manifest), await sources.listing(manifest), `backup ${manifest.volume}/${manifest.id}`);
  }
  return index;
}

function complete(records: ReadonlyMap<string, IndexRecord>, where: string): BlockIndex {
  for (const record of records.values()) {
    if (isPatch(record)) throw new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: its index patches ${record.path}, but it has no parent to patch`);
  }
  return records as BlockIndex;
}

/**
 * An incremental's whole index: for every file of its listing, its own entry (a patch record
 * applied to its parent's), else its parent's. Entries for files the listing does not have, or
 * files neither index has, are corruption.
 */
export function foldIndex(parent: BlockIndex, own: ReadonlyMap<string, IndexRecord>, listing: ReadonlyMap<string, TreeEntry>, where: string): BlockIndex {
  const index: BlockIndex = new Map();
  for (const entry of listing.values()) {
    if (entry.type !== 'file') continue;
    const record = own.get(entry.path);
    const indexed: FileIndexEntry | undefined = record && isPatch(record) ? applyPatch(parent.get(entry.path), record, where) : (record ?? parent.get(entry.path));
    if (!indexed) throw new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: its tree lists ${entry.path}, which neither its index nor its parent's has`);
    if (indexed.size !== entry.size) throw new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: its index and its tree listing disagree on the size of ${entry.path}`);
    index.set(entry.path, indexed);
  }
  for (const path of own.keys()) {
    if (!index.has(path)) throw new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: its index lists ${path}, which its tree listing has as no file`);
  }
  return index;
}

/** The file's entry after `patch`: its parent's hashes, cut or extended to the new size, with the patched blocks replaced. */
export function applyPatch(base: FileIndexEntry | undefined, patch: PatchEntry, where: string): FileIndexEntry {
  const corrupt = (why: string) => new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: its index patches ${patch.path}, ${why}`);
  if (!base) throw corrupt("which its parent's index does not have");
  const count = blockCount(patch.size);
  const hashes = Buffer.alloc(count * HASH_BYTES);
  base.hashes.copy(hashes, 0, 0, Math.min(base.hashes.length, hashes.length));
  const patched = new Set<number>();
  for (let at = 0; at < patch.patched.length; at += PATCH_BYTES) {
    const block = patch.patched.readUInt32BE(at);
    if (block >= count) throw corrupt(`block ${block} is past its end`);
    patch.patched.copy(hashes, block * HASH_BYTES, at + 4, at + PATCH_BYTES);
    patched.add(block);
  }
  // Only the parent's blocks of the same length carry over: the last ones may not.
  const baseCount = blockCount(base.size);
  const length = (size: number, block: number) => Math.min(BLOCK_SIZE, size - block * BLOCK_SIZE);
  for (let block = Math.max(0, Math.min(baseCount, count) - 1); block < count; block++) {
    const carried = block < baseCount && length(base.size, block) === length(patch.size, block);
    if (!carried && !patched.has(block)) throw corrupt(`leaving block ${block} without a hash`);
  }
  return { path: patch.path, size: patch.size, mtimeMs: patch.mtimeMs, ctimeMs: patch.ctimeMs, ino: patch.ino, hashes };
}

/** Parses a tree listing object (one JSON TreeEntry a line). */
export function parseTreeListing(data: Buffer, where: string): Map<string, TreeEntry> {
  const listing = new Map<string, TreeEntry>();
  for (const line of data.toString('utf8').split('\n')) {
    if (line === '') continue;
    let entry: TreeEntry;
    try {
      entry = JSON.parse(line) as TreeEntry;
    } catch {
      throw new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: unreadable tree listing`);
    }
    if (typeof entry?.path !== 'string' || typeof entry.type !== 'string') throw new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: unreadable tree listing`);
    listing.set(entry.path, entry);
  }
  return listing;
}
