import type { Stats } from 'node:fs';
import { link, lstat, mkdir, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { runTool } from '../../plugins/util/run-tool.js';
import { applyPatch } from '../backups/chain-index.js';
import { BLOCK_SIZE, blockCount, blockLength, hashBlockInto, PATCH_BYTES, type FileIndexEntry } from '../backups/block-index.js';
import { RestoredBlocks } from '../backups/restored-blocks.js';
import { applyMetadata, openForPatch, removePath, safeResolve, setMetadata, writeFileFrom } from '../backups/tree/safe-extract.js';
import { compareTreePaths, parentTreePath, treePathProblem } from '../backups/tree/tree-entry.js';
import type { ChainManifest } from './dir-chain-manifest.js';
import type { ChainRecord, ChainStreamReader, Metadata } from './dir-chain-stream.js';

export interface AppliedStream {
  /** The digest the sender's end marker names (manifestDigest of the snapshot as sent). */
  readonly digest: string;
  /** The block hashes of a regular file of the tree now: as written by the stream, else the parent's; undefined when neither knows it. */
  hashesOf(path: string): FileIndexEntry | undefined;
}

/**
 * Applies the records after the header of a chain stream (dir-chain-stream.ts) to `staging`, a
 * copy of the parent snapshot (or an empty directory for a whole stream), up to and including the
 * end marker; bytes after it are refused. Nothing is trusted: every path is checked (no absolute,
 * `..` or empty components, every parent a real directory: nothing is written through a symlink),
 * files are created with O_EXCL|O_NOFOLLOW and patched only when they are regular files. Block
 * hashes of what it writes are taken on the way to disk. Directory metadata is set last, children
 * first; a directory whose entries changed without a D record gets its old metadata back.
 */
export async function applyChainStream(reader: ChainStreamReader, staging: string, parent: ChainManifest | undefined, refuse: (reason: string) => BerthError): Promise<AppliedStream> {
  return new StreamApplier(reader, staging, parent, refuse).run();
}

class StreamApplier {
  private readonly owners = process.getuid?.() === 0;
  /** Directories ('' is the root) whose metadata is set at the end: from the stream, or as they were before their entries changed. */
  private readonly directories = new Map<string, Metadata>();
  /** Files the stream wrote, with their hashes now. */
  private readonly written = new Map<string, FileIndexEntry>();
  /** Paths (with what is below them) whose parent hashes no longer apply. */
  private readonly replaced = new Set<string>();
  private readonly blocks = new RestoredBlocks();

  constructor(
    private readonly reader: ChainStreamReader,
    private readonly staging: string,
    private readonly parent: ChainManifest | undefined,
    private readonly refuse: (reason: string) => BerthError,
  ) {}

  async run(): Promise<AppliedStream> {
    for (let records = 0; ; records++) {
      const record = await this.reader.next();
      if (record.type !== 'E') {
        await this.apply(record);
        continue;
      }
      if (record.records !== records) throw this.refuse(`its end marker counts ${record.records} records, but ${records} came`);
      if (!(await this.reader.ended())) throw this.refuse('the stream goes on after its end marker');
      await this.finishDirectories();
      return { digest: record.digest, hashesOf: (path) => this.hashesOf(path) };
    }
  }

  private hashesOf(path: string): FileIndexEntry | undefined {
    const written = this.written.get(path);
    if (written || this.isReplaced(path)) return written;
    return this.parent?.index.get(path);
  }

  private async apply(record: ChainRecord): Promise<void> {
    switch (record.type) {
      case 'H':
        throw this.refuse('the stream holds a second header');
      case 'E':
        return;
      case 'T':
        this.directories.set('', metadataOf(record));
        return;
      case 'R':
        await this.resolve(record.path);
        await this.beforeChangeIn(record.path);
        await removePath(this.staging, record.path);
        this.forget(record.path);
        return;
      case 'D': {
        const absolute = await this.resolve(record.path);
        const existing = await lstatIfPresent(absolute);
        if (!existing) {
          await this.beforeChangeIn(record.path);
          await mkdir(absolute, { mode: 0o700 });
        } else if (!existing.isDirectory()) {
          throw this.refuse(`a D record names ${record.path}, which is not a directory`);
        }
        this.directories.set(record.path, metadataOf(record));
        return;
      }
      case 'F': {
        const absolute = await this.replaceable(record.path);
        await writeFileFrom(this.reader.content(record.size), absolute, record, { replace: true, expectedSize: record.size, tapContent: this.blocks.tapContent, preserveOwners: this.owners });
        const { dev, ino } = await lstat(absolute, { bigint: true });
        const hashes = this.blocks.hashesOf(dev, ino, record.size);
        if (!hashes) throw new BerthError('ERR_INTERNAL', `the content of ${record.path} was written but not hashed`);
        this.forget(record.path);
        this.written.set(record.path, { path: record.path, size: record.size, mtimeMs: record.mtimeMs, ctimeMs: 0, ino: 0, hashes });
        return;
      }
      case 'P':
        await this.patch(record);
        return;
      case 'S': {
        if (record.target === '' || record.target.includes('\0')) throw this.refuse(`the symlink ${record.path} has an empty target or one with a NUL byte`);
        const absolute = await this.replaceable(record.path);
        await unlinkIfPresent(absolute);
        await symlink(record.target, absolute);
        await setMetadata(absolute, { type: 'symlink', mode: 0o777, uid: record.uid, gid: record.gid, mtimeMs: record.mtimeMs }, { preserveOwners: this.owners });
        this.forget(record.path);
        return;
      }
      case 'L': {
        const problem = treePathProblem(record.target);
        if (problem !== undefined) throw this.refuse(`the hard link ${record.path} has an unsafe target ${JSON.stringify(record.target)}: ${problem}`);
        const linked = await safeResolve(this.staging, record.target);
        const target = await lstatIfPresent(linked);
        if (!target?.isFile()) throw this.refuse(`the hard link ${record.path} names ${record.target}, which is not a regular file of the tree`);
        const absolute = await this.replaceable(record.path);
        await unlinkIfPresent(absolute);
        await link(linked, absolute);
        this.forget(record.path);
        return;
      }
      case 'Q': {
        const absolute = await this.replaceable(record.path);
        await unlinkIfPresent(absolute);
        await runTool(['mkfifo', '-m', '600', '--', absolute], `cannot make fifo ${record.path}`);
        await setMetadata(absolute, { ...metadataOf(record), type: 'fifo' }, { preserveOwners: this.owners });
        this.forget(record.path);
        return;
      }
    }
  }

  /** A P record: the file is truncated, its changed blocks written in place, its hashes patched. */
  private async patch(record: Extract<ChainRecord, { type: 'P' }>): Promise<void> {
    const absolute = await this.resolve(record.path);
    const base = this.hashesOf(record.path);
    if (!base) throw this.refuse(`a P record changes ${record.path}, which the parent snapshot does not hold as a regular file`);
    const handle = await openForPatch(absolute);
    const patched = Buffer.allocUnsafe(record.blocks * PATCH_BYTES);
    try {
      await handle.truncate(record.size);
      for (let position = 0, previous = -1; position < record.blocks; position++) {
        const { index, data } = await this.reader.block();
        if (index <= previous || index >= blockCount(record.size) || data.length !== blockLength(record.size, index)) {
          throw this.refuse(`block ${index} of ${record.path} is out of order, past its end, or not a whole block`);
        }
        previous = index;
        const { bytesWritten } = await handle.write(data, 0, data.length, index * BLOCK_SIZE);
        if (bytesWritten !== data.length) throw new BerthError('ERR_STORAGE', `short write to ${record.path}`);
        patched.writeUInt32BE(index, position * PATCH_BYTES);
        hashBlockInto(data, patched, position * PATCH_BYTES + 4);
      }
      await applyMetadata(handle, record, this.owners);
    } finally {
      await handle.close();
    }
    const patch = { path: record.path, size: record.size, mtimeMs: record.mtimeMs, ctimeMs: 0, ino: 0, patched };
    try {
      this.written.set(record.path, applyPatch(base, patch, `the stream's patch of ${record.path}`));
    } catch (error) {
      throw this.refuse(error instanceof Error ? error.message : String(error));
    }
  }

  /** Checks a record's path and returns it under staging (its parents are real directories). */
  private async resolve(path: string): Promise<string> {
    const problem = treePathProblem(path);
    if (problem !== undefined) throw this.refuse(`path ${JSON.stringify(path)} is unsafe: ${problem}`);
    return safeResolve(this.staging, path);
  }

  /** resolve() for a record that replaces whatever non-directory is at its path. */
  private async replaceable(path: string): Promise<string> {
    const absolute = await this.resolve(path);
    if ((await lstatIfPresent(absolute))?.isDirectory()) throw this.refuse(`${path} is a directory, which only an R record removes`);
    await this.beforeChangeIn(path);
    return absolute;
  }

  /** Remembers the metadata of the directory holding `path` before its entries change (its mtime moves). */
  private async beforeChangeIn(path: string): Promise<void> {
    const directory = parentTreePath(path);
    if (this.directories.has(directory)) return;
    const stats = await lstat(join(this.staging, directory));
    this.directories.set(directory, { mode: stats.mode & 0o7777, uid: stats.uid, gid: stats.gid, mtimeMs: stats.mtimeMs });
  }

  private async finishDirectories(): Promise<void> {
    const paths = [...this.directories.keys()].sort((a, b) => compareTreePaths(b, a));
    for (const path of paths) {
      const absolute = path === '' ? this.staging : join(this.staging, path);
      // A directory removed after its metadata was noted is gone: nothing to set.
      if (!(await lstatIfPresent(absolute))?.isDirectory()) continue;
      await setMetadata(absolute, { ...this.directories.get(path)!, type: 'directory' }, { preserveOwners: this.owners });
    }
  }

  /** What was at `path` (and below) is gone or replaced. */
  private forget(path: string): void {
    this.replaced.add(path);
    for (const key of this.written.keys()) if (key === path || key.startsWith(`${path}/`)) this.written.delete(key);
  }

  private isReplaced(path: string): boolean {
    for (let current = path; ; current = parentTreePath(current)) {
      if (this.replaced.has(current)) return true;
      if (current === '' || !current.includes('/')) return false;
    }
  }
}

function metadataOf(record: Metadata): Metadata {
  return { mode: record.mode, uid: record.uid, gid: record.gid, mtimeMs: record.mtimeMs };
}

async function lstatIfPresent(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

async function unlinkIfPresent(path: string): Promise<void> {
  await unlink(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
}
