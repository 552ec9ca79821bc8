import { join } from 'node:path';
import { isBerthError } from '../../plugins/errors/berth-error.js';
import { blockLength, changedBlocks, indexFile } from '../backups/block-index.js';
import { compareTreePaths, type TreeEntry } from '../backups/tree/tree-entry.js';
import { readRootMetadata, walkTree } from '../backups/tree/walk-tree.js';
import { RACY_MS, unchangedSinceBaseline, type LiveBaseline } from './dir-chain-baseline.js';
import type { ChainManifest, ManifestEntry } from './dir-chain-manifest.js';
import { sameMetadata } from './dir-chain-stream.js';

/**
 * Files whose content was hashed and found equal to the manifest's, by path: the stat they had
 * then. Kept only once their times are older than the racy window, so any later change moves them.
 */
export type VerifiedFiles = Map<string, string>;

/**
 * Bytes the live tree at `live` differs by from a chain snapshot (its manifest), from one walk of
 * the live tree (lstat only) and no reads in the common case:
 * - a regular file whose size, mtime, mode or owner differs counts its whole size (an upper bound:
 *   finding the changed blocks would mean reading the file);
 * - a new file counts its size; every other new, removed or changed entry (directory, symlink,
 *   hard link, fifo, the root's metadata) counts 1;
 * - a file that looks unchanged is trusted when the baseline proves it (same inode and ctime, not
 *   racy); otherwise (no baseline: a received snapshot or a restored volume; ctime moved: a chmod
 *   back and forth, a rewrite with its old mtime put back, a hard link added; racy) it is hashed
 *   and counts its differing blocks, and remembered in `verified` when it matched.
 * So any change to content, metadata or shape counts more than 0, except a write within the same
 * timestamp tick as the baseline's stat that also puts the file's old mtime back (see
 * dir-chain-baseline.ts), and what the chain does not carry (xattrs, ACLs, sockets, devices).
 */
export async function changedBytes(live: string, manifest: ChainManifest, baseline: LiveBaseline | undefined, verified: VerifiedFiles): Promise<number> {
  const root = await readRootMetadata(live);
  let changed = sameMetadata(root, manifest.root) ? 0 : 1;
  const expected = manifest.entries;
  let next = 0;
  try {
    for await (const entry of walkTree(live)) {
      while (next < expected.length && compareTreePaths(expected[next]!.path, entry.path) < 0) {
        changed++; // gone from the live tree
        next++;
      }
      const known = expected[next]?.path === entry.path ? expected[next++] : undefined;
      changed += await entryChange(live, entry, known, manifest, baseline, verified);
    }
  } catch (error) {
    if (isBerthError(error, 'ERR_BACKUP_SOURCE_CHANGED')) return changed + 1; // replaced while walked: changing
    throw error;
  }
  return changed + (expected.length - next);
}

async function entryChange(live: string, entry: TreeEntry, known: ManifestEntry | undefined, manifest: ChainManifest, baseline: LiveBaseline | undefined, verified: VerifiedFiles): Promise<number> {
  const whole = entry.type === 'file' ? Math.max(entry.size, 1) : 1;
  if (!known || known.type !== entry.type) return whole;
  switch (entry.type) {
    case 'directory':
    case 'fifo':
      return sameMetadata(entry, known) ? 0 : 1;
    case 'symlink':
      return entry.linkTarget === known.linkTarget && sameMetadata(entry, known) ? 0 : 1;
    case 'hardlink':
      return entry.linkTarget === known.linkTarget ? 0 : 1;
    case 'file':
      break;
  }
  if (entry.size !== known.size || entry.mtimeMs !== known.mtimeMs) return whole;
  if (!sameMetadata(entry, known)) return 1;
  const stat = `${entry.ino}:${entry.ctimeMs}:${entry.mtimeMs}:${entry.size}`;
  if (unchangedSinceBaseline(baseline, entry) || verified.get(entry.path) === stat) return 0;
  const indexed = manifest.index.get(entry.path);
  if (!indexed) return whole;
  const fileStat = { size: entry.size, mtimeMs: entry.mtimeMs, ctimeMs: entry.ctimeMs ?? 0, ino: entry.ino ?? 0 };
  let hashed;
  try {
    hashed = await indexFile(join(live, entry.path), entry.path, fileStat);
  } catch {
    return whole; // changing while being read
  }
  const differing = changedBlocks(indexed, hashed.entry).reduce((sum, block) => sum + blockLength(entry.size, block), 0);
  if (differing === 0 && Math.max(fileStat.ctimeMs, entry.mtimeMs) < Date.now() - RACY_MS) verified.set(entry.path, stat);
  return differing;
}
