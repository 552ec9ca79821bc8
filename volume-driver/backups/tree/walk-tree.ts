/**
 * Walks a volume tree (normally a read-only snapshot) into TreeEntry records, in
 * compareTreePaths order, without following symlinks. Unlike measureTree (allocated bytes for
 * usage), every entry is reported with its metadata, so the two walks stay separate.
 */
import type { BigIntStats, Stats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError, translateError } from '../../../plugins/errors/berth-error.js';
import { PERMISSION_BITS, type RootMetadata, type TreeEntry } from './tree-entry.js';

export interface WalkOptions {
  /**
   * Called for what a backup cannot carry, which the walk leaves out: sockets, device nodes,
   * names (or symlink targets) that are not valid UTF-8, entries that vanish mid-walk. Throwing
   * from it aborts the walk with that error.
   */
  readonly onSkip?: (path: string, reason: string) => void;
}

interface Frame {
  readonly absolute: string;
  readonly relative: string;
  readonly names: Buffer[];
  index: number;
}

/**
 * Yields every entry below `root` (not the root itself; see readRootMetadata), parents before
 * children and siblings sorted by name bytes. Hard links: the first path of an inode with
 * nlink > 1 is a normal entry, later ones are 'hardlink' entries whose linkTarget is that first
 * path. Reading errors are ERR_STORAGE.
 */
export async function* walkTree(root: string, options: WalkOptions = {}): AsyncGenerator<TreeEntry> {
  const skip = options.onSkip ?? (() => undefined);
  const firstPathOfInode = new Map<string, string>();
  const rootFrame = await openFrame(root, '', skip);
  const stack: Frame[] = rootFrame ? [rootFrame] : [];
  while (stack.length > 0) {
    const frame = stack[stack.length - 1]!;
    const raw = frame.names[frame.index++];
    if (raw === undefined) {
      stack.pop();
      continue;
    }
    const name = raw.toString('utf8');
    const path = frame.relative === '' ? name : `${frame.relative}/${name}`;
    if (!Buffer.from(name, 'utf8').equals(raw)) {
      skip(path, 'its name is not valid UTF-8');
      continue;
    }
    const absolute = join(frame.absolute, name);
    const stats = await lstatOrUndefined(absolute, path);
    if (!stats) {
      skip(path, 'it vanished while being walked');
      continue;
    }
    const type = entryType(stats);
    if (typeof type !== 'string') {
      skip(path, type.skip);
      continue;
    }
    const base = {
      path,
      mode: stats.mode & PERMISSION_BITS,
      uid: stats.uid,
      gid: stats.gid,
      mtimeMs: stats.mtimeMs,
      dev: stats.dev,
      ino: stats.ino,
      nlink: stats.nlink,
      ctimeMs: stats.ctimeMs,
    };
    const inodeKey = type !== 'directory' && stats.nlink > 1 ? await exactInodeKey(absolute, path, stats) : undefined;
    if (inodeKey !== undefined) {
      const first = firstPathOfInode.get(inodeKey);
      if (first !== undefined) {
        yield { ...base, type: 'hardlink', size: 0, linkTarget: first };
        continue;
      }
    }
    if (type === 'symlink') {
      const target = await readlink(absolute, { encoding: 'buffer' }).catch((error: unknown) => {
        throw translateError(error, 'ERR_STORAGE', `cannot read symlink ${path} of ${root}`);
      });
      const text = target.toString('utf8');
      if (!Buffer.from(text, 'utf8').equals(target)) {
        skip(path, 'its symlink target is not valid UTF-8');
        continue;
      }
      if (inodeKey !== undefined) firstPathOfInode.set(inodeKey, path);
      yield { ...base, type, size: 0, linkTarget: text };
      continue;
    }
    if (inodeKey !== undefined) firstPathOfInode.set(inodeKey, path);
    yield { ...base, type, size: type === 'file' ? stats.size : 0 };
    if (type === 'directory') {
      const child = await openFrame(absolute, path, skip);
      if (child) stack.push(child);
    }
  }
}

/** Mode, owner and mtime of the tree's root directory (lstat: a symlinked root is refused). */
export async function readRootMetadata(root: string): Promise<RootMetadata> {
  let stats: Stats;
  try {
    stats = await lstat(root);
  } catch (error) {
    throw translateError(error, 'ERR_STORAGE', `cannot read tree root ${root}`);
  }
  if (!stats.isDirectory()) throw new BerthError('ERR_STORAGE', `tree root ${root} is not a directory`);
  return { mode: stats.mode & PERMISSION_BITS, uid: stats.uid, gid: stats.gid, mtimeMs: stats.mtimeMs };
}

type WalkType = 'file' | 'directory' | 'symlink' | 'fifo' | { skip: string };

function entryType(stats: Stats): WalkType {
  if (stats.isFile()) return 'file';
  if (stats.isDirectory()) return 'directory';
  if (stats.isSymbolicLink()) return 'symlink';
  if (stats.isFIFO()) return 'fifo';
  if (stats.isSocket()) return { skip: 'it is a socket' };
  if (stats.isBlockDevice()) return { skip: 'it is a block device' };
  if (stats.isCharacterDevice()) return { skip: 'it is a character device' };
  return { skip: 'its file type is unknown' };
}

async function openFrame(absolute: string, relative: string, skip: (path: string, reason: string) => void): Promise<Frame | undefined> {
  let names: Buffer[];
  try {
    names = await readdir(absolute, { encoding: 'buffer' });
  } catch (error) {
    if (relative !== '' && isVanished(error)) {
      skip(relative, 'it vanished while being walked');
      return undefined;
    }
    throw translateError(error, 'ERR_STORAGE', `cannot list directory ${relative === '' ? absolute : relative}`);
  }
  names.sort(Buffer.compare);
  return { absolute, relative, names, index: 0 };
}

async function lstatOrUndefined(absolute: string, path: string): Promise<Stats | undefined> {
  try {
    return await lstat(absolute);
  } catch (error) {
    if (isVanished(error)) return undefined;
    throw translateError(error, 'ERR_STORAGE', `cannot read ${path}`);
  }
}

/**
 * (dev, ino) as exact integers: inode numbers can exceed 2^53 (overlayfs xino, some network
 * filesystems), where Number rounding would merge distinct inodes into one "hard link".
 */
async function exactInodeKey(absolute: string, path: string, stats: Stats): Promise<string | undefined> {
  let exact: BigIntStats;
  try {
    exact = await lstat(absolute, { bigint: true });
  } catch (error) {
    if (isVanished(error)) return undefined;
    throw translateError(error, 'ERR_STORAGE', `cannot read ${path}`);
  }
  if (Number(exact.ino) !== stats.ino) throw new BerthError('ERR_BACKUP_SOURCE_CHANGED', `${path} was replaced while being walked`);
  return `${exact.dev}:${exact.ino}`;
}

function isVanished(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
