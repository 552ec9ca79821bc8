/**
 * One entry of a volume's file tree, as walked from a snapshot and as carried in a backup's tar.
 * Paths are relative and '/'-separated with no leading './' or '/'; the volume root itself is never
 * an entry (see RootMetadata). Entries are ordered by compareTreePaths: parents before children,
 * siblings by the UTF-8 bytes of their names.
 */
export type TreeEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'fifo';

export interface TreeEntry {
  readonly path: string;
  readonly type: TreeEntryType;
  /** Permission bits including setuid, setgid and sticky (mode & 0o7777). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtimeMs: number;
  /** Content bytes of a file; 0 for every other type (hardlinks included: they carry no content). */
  readonly size: number;
  /** Symlinks: the target text as stored. Hardlinks: the path of the first entry with the same inode. */
  readonly linkTarget?: string;
  /** Kept from lstat for incremental comparisons; absent on entries read back from an archive. */
  readonly dev?: number;
  readonly ino?: number;
  readonly nlink?: number;
  readonly ctimeMs?: number;
}

/** A tree entry without what only means something on the host that walked it (inode, links, ctime). */
export type PortableTreeEntry = Omit<TreeEntry, 'dev' | 'ino' | 'nlink' | 'ctimeMs'>;

export function withoutInode(entry: TreeEntry): PortableTreeEntry {
  const { dev: _dev, ino: _ino, nlink: _nlink, ctimeMs: _ctime, ...rest } = entry;
  return rest;
}

/** Ownership, permissions and mtime of the volume root directory. */
export interface RootMetadata {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtimeMs: number;
}

/** The metadata a restore applies to a path (entries and the root alike). */
export type EntryMetadata = Pick<TreeEntry, 'mode' | 'uid' | 'gid' | 'mtimeMs'>;

export const PERMISSION_BITS = 0o7777;

/**
 * Total order of tree paths: component by component, each compared by Unicode code point (the
 * same as comparing UTF-8 bytes), a prefix first. `a` < `a/b` < `a-c`, so a parent always
 * directly precedes its subtree; walkTree emits entries in this order, so two walks can be merged.
 */
export function compareTreePaths(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x === 0x2f) return -1;
    if (y === 0x2f) return 1;
    return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

/** UTF-16 units ranked in code point order: surrogates stand for code points above U+FFFF. */
function codePointRank(unit: number): number {
  if (unit >= 0xe000) return unit - 0x800;
  if (unit >= 0xd800) return unit + 0x2000;
  return unit;
}

/**
 * Why `path` cannot name an entry inside a tree (absolute, a `..` component, a NUL byte, empty or
 * `.` components, a trailing '/'), or undefined when it is a clean relative path.
 */
export function treePathProblem(path: string): string | undefined {
  if (path === '') return 'the path is empty';
  if (path.includes('\0')) return 'the path contains a NUL byte';
  if (path.startsWith('/')) return 'the path is absolute';
  for (const component of path.split('/')) {
    if (component === '..') return 'the path has a ".." component';
    if (component === '' || component === '.') return 'the path is not normalised';
  }
  return undefined;
}

/** The parent path of a tree path; '' for a top-level entry. */
export function parentTreePath(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash === -1 ? '' : path.slice(0, slash);
}
