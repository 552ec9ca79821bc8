/**
 * Packs a walked tree into a standard tar stream (ustar, pax extended headers where ustar cannot
 * hold a value), so a full backup restores with plain `tar -xpf - --numeric-owner`.
 *
 * tar-stream 3 quirks handled here:
 * - a numeric field that overflows is silently written as all 7s (uid/gid > 0o777777 = 262143
 *   would become 262143): such ids go into pax `uid`/`gid` records;
 * - mtimes are written as `(ms / 1000) | 0`, wrong before 1970 and after 2038: those go into a
 *   pax `mtime` record (whole seconds; sub-second mtimes are not carried, tar rounds down);
 * - mode 0 is replaced with 0644/0755: the file-type bits are ORed in (they are masked out of the
 *   header), so a 0000 file stays 0000;
 * - sizes of 8 GiB and more use GNU base-256 in the header; a pax `size` record is added too so
 *   strict POSIX readers see the size;
 * - pack has no backpressure for header-only entries: this module waits on its own output.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pack as tarPack, type Header, type Pack } from 'tar-stream';
import { BerthError, translateError } from '../../../plugins/errors/berth-error.js';
import { readRootMetadata } from './walk-tree.js';
import { PERMISSION_BITS, treePathProblem, type EntryMetadata, type RootMetadata, type TreeEntry } from './tree-entry.js';

/** Content bytes read per chunk; a multiple of 4 KiB, so onFileChunk offsets are block-aligned. */
export const PACK_CHUNK_BYTES = 1024 * 1024;
const OUTPUT_HIGH_WATER_MARK = 1024 * 1024;
const TAR_STREAM_MAX_ID = 0o777777;
const TAR_STREAM_MAX_SECONDS = 2 ** 31 - 1;
const USTAR_MAX_SIZE = 8 ** 11 - 1;

/** Content that replaces a file's own bytes in the archive; the header carries `size`. */
export interface PackContent {
  readonly content: AsyncIterable<Buffer | Uint8Array | string> | Iterable<Buffer | Uint8Array | string>;
  readonly size: number;
}

/** An entry that is not part of the tree (e.g. a `.berth/` metadata directory and its files). */
export interface ExtraEntry {
  /** Relative '/'-separated path, checked like tree paths. */
  readonly name: string;
  /** 'file' unless given. */
  readonly type?: 'file' | 'directory';
  /** File content; empty when absent. */
  readonly content?: Buffer;
  /** Defaults: 0644 files, 0755 directories, uid/gid 0, mtime now. */
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly mtimeMs?: number;
}

export interface PackOptions {
  /**
   * The root directory's metadata, archived as the entry './' first (what `tar -C dir -c .`
   * writes; GNU tar then restores the target directory's mode, owner and mtime). Read from
   * `root` when absent; `false` leaves the entry out.
   */
  readonly rootEntry?: RootMetadata | false;
  /**
   * Replaces a file's content (e.g. with a block delta). A Readable must yield exactly
   * `entry.size` bytes; a PackContent announces its own size. Anything else is
   * ERR_BACKUP_SOURCE_CHANGED. Not consulted for other types.
   */
  readonly contentFor?: (entry: TreeEntry) => Readable | PackContent | undefined | Promise<Readable | PackContent | undefined>;
  /** Content bytes packed so far (files, replaced content and extra entries), after each chunk. */
  readonly onProgress?: (bytes: number) => void;
  /**
   * Sees each chunk of a file read from the tree (not replaced content) before it is archived, in
   * order; offsets are multiples of PACK_CHUNK_BYTES, so hashing 4 KiB blocks needs no carry-over.
   * The chunk must not be modified.
   */
  readonly onFileChunk?: (entry: TreeEntry, chunk: Buffer, offset: number) => void;
  /** Written after the root entry, before the tree. A tree path equal to one of these names is ERR_INTERNAL. */
  readonly extraEntries?: readonly ExtraEntry[];
  /** Called once the tree is packed (e.g. for a manifest of what was packed); not checked against tree paths. */
  readonly trailingEntries?: () => readonly ExtraEntry[] | Promise<readonly ExtraEntry[]>;
}

type PackHeader = Partial<Header> & { name: string; pax?: Record<string, string> };
type Sink = ReturnType<Pack['entry']>;

const TYPE_BITS = {
  file: constants.S_IFREG,
  link: constants.S_IFREG,
  directory: constants.S_IFDIR,
  symlink: constants.S_IFLNK,
  fifo: constants.S_IFIFO,
} as const;

/**
 * Streams `entries` (normally walkTree(root)) as a tar. File content is read from `root` chunk by
 * chunk with O_NOFOLLOW; a file whose inode, size, mtime or ctime differs from its entry, or that
 * changes while being read, fails the stream with ERR_BACKUP_SOURCE_CHANGED naming the path before
 * its last chunk is written, so the output is never a complete archive with wrong content. Errors
 * arrive as the stream's 'error'; destroying the stream stops reading the tree.
 */
export function packTree(root: string, entries: AsyncIterable<TreeEntry>, options: PackOptions = {}): Readable {
  const pack = tarPack();
  let stopped = false;
  let wake: (() => void) | undefined;
  const resume = (): void => {
    const resolve = wake;
    wake = undefined;
    resolve?.();
  };
  const output = new Readable({
    highWaterMark: OUTPUT_HIGH_WATER_MARK,
    read: resume,
    destroy(error, callback) {
      stopped = true;
      resume();
      pack.destroy();
      callback(error);
    },
  });
  pack.on('data', (chunk) => {
    output.push(chunk as Buffer);
  });
  pack.on('end', () => output.push(null));
  pack.on('error', (error) => output.destroy(translateError(error, 'ERR_INTERNAL', 'cannot write the tar stream')));

  const writer = new ArchiveWriter(pack, async () => {
    while (!stopped && output.readableLength >= output.readableHighWaterMark) {
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    if (stopped) throw new PackStopped();
  }, options.onProgress);

  const produce = async (): Promise<void> => {
    if (options.rootEntry !== false) {
      const rootMetadata = options.rootEntry ?? (await readRootMetadata(root));
      await writer.headerOnly(entryHeader('./', 'directory', rootMetadata, 0));
    }
    const extraNames = new Set<string>();
    for (const extra of options.extraEntries ?? []) {
      extraNames.add(await writer.extra(extra));
    }
    for await (const entry of entries) {
      const problem = treePathProblem(entry.path);
      if (problem !== undefined) throw new BerthError('ERR_INTERNAL', `tree entry ${JSON.stringify(entry.path)} cannot be packed: ${problem}`);
      if (extraNames.has(entry.path)) throw new BerthError('ERR_INTERNAL', `tree entry ${JSON.stringify(entry.path)} collides with an extra archive entry`);
      await writer.demand();
      switch (entry.type) {
        case 'directory':
        case 'fifo':
          await writer.headerOnly(entryHeader(entry.path, entry.type, entry, 0));
          break;
        case 'symlink':
        case 'hardlink': {
          const target = entry.linkTarget;
          if (target === undefined || target === '' || target.includes('\0') || (entry.type === 'hardlink' && treePathProblem(target) !== undefined)) {
            throw new BerthError('ERR_INTERNAL', `tree entry ${JSON.stringify(entry.path)} cannot be packed: its link target is missing or invalid`);
          }
          await writer.headerOnly(entryHeader(entry.path, entry.type === 'symlink' ? 'symlink' : 'link', entry, 0, target));
          break;
        }
        case 'file': {
          const replaced = await options.contentFor?.(entry);
          if (replaced === undefined) await writer.file(root, entry, options.onFileChunk);
          else if (replaced instanceof Readable) await writer.content(entry.path, entryHeader(entry.path, 'file', entry, entry.size), replaced, entry.size);
          else await writer.content(entry.path, entryHeader(entry.path, 'file', entry, replaced.size), replaced.content, replaced.size);
          break;
        }
      }
    }
    for (const extra of (await options.trailingEntries?.()) ?? []) await writer.extra(extra);
    pack.finalize();
  };
  produce().catch((error: unknown) => {
    if (error instanceof PackStopped) return;
    output.destroy(translateError(error, 'ERR_INTERNAL', 'cannot pack the tree'));
  });
  return output;
}

class PackStopped extends Error {}

type Chunk = Buffer | Uint8Array | string;

class ArchiveWriter {
  private bytes = 0;

  constructor(
    private readonly pack: Pack,
    readonly demand: () => Promise<void>,
    private readonly onProgress: ((bytes: number) => void) | undefined,
  ) {}

  async headerOnly(header: PackHeader): Promise<void> {
    const { sink, done } = this.start(header);
    sink.end(undefined);
    await done;
  }

  /** Writes an extra entry; returns its normalised name. */
  async extra(extra: ExtraEntry): Promise<string> {
    const name = extra.name.replace(/\/+$/, '');
    const problem = treePathProblem(name);
    if (problem !== undefined) throw new BerthError('ERR_INTERNAL', `extra archive entry ${JSON.stringify(extra.name)} is invalid: ${problem}`);
    const type = extra.type ?? 'file';
    const metadata: EntryMetadata = {
      mode: extra.mode ?? (type === 'directory' ? 0o755 : 0o644),
      uid: extra.uid ?? 0,
      gid: extra.gid ?? 0,
      mtimeMs: extra.mtimeMs ?? Date.now(),
    };
    await this.demand();
    if (type === 'directory') {
      await this.headerOnly(entryHeader(name, 'directory', metadata, 0));
    } else {
      const content = extra.content ?? Buffer.alloc(0);
      await this.content(name, entryHeader(name, 'file', metadata, content.length), [content], content.length);
    }
    return name;
  }

  /** Streams a tree file, checking it is still the walked file and that it does not change. */
  async file(root: string, entry: TreeEntry, onChunk: PackOptions['onFileChunk']): Promise<void> {
    const changed = (how: string) => new BerthError('ERR_BACKUP_SOURCE_CHANGED', `file ${entry.path} ${how}; back up from a snapshot`);
    let handle: FileHandle;
    try {
      handle = await open(join(root, entry.path), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') throw changed('was removed or replaced after being walked');
      throw translateError(error, 'ERR_STORAGE', `cannot read file ${entry.path}`);
    }
    try {
      const before = await handle.stat();
      if (!before.isFile() || (entry.ino !== undefined && before.ino !== entry.ino)) throw changed('was replaced after being walked');
      if (before.size !== entry.size) throw changed(`changed size after being walked (${entry.size} bytes, now ${before.size})`);
      if (before.mtimeMs !== entry.mtimeMs || (entry.ctimeMs !== undefined && before.ctimeMs !== entry.ctimeMs)) throw changed('was modified after being walked');
      // Checked before the last chunk is archived, so a changed file never completes the archive.
      const unchangedAtEnd = async (): Promise<void> => {
        const { bytesRead } = await handle.read(Buffer.alloc(1), 0, 1, entry.size);
        if (bytesRead > 0) throw changed('grew while being read');
        const after = await handle.stat();
        if (after.size !== before.size || after.mtimeMs !== before.mtimeMs || after.ctimeMs !== before.ctimeMs) throw changed('was modified while being read');
      };
      if (entry.size === 0) await unchangedAtEnd();
      const { sink, done } = this.start(entryHeader(entry.path, 'file', entry, entry.size));
      for (let offset = 0; offset < entry.size; ) {
        await this.demand();
        const chunk = Buffer.allocUnsafe(Math.min(PACK_CHUNK_BYTES, entry.size - offset));
        let filled = 0;
        while (filled < chunk.length) {
          const { bytesRead } = await handle.read(chunk, filled, chunk.length - filled, offset + filled);
          if (bytesRead === 0) throw changed(`shrank while being read (${entry.size} bytes expected, ${offset + filled} read)`);
          filled += bytesRead;
        }
        onChunk?.(entry, chunk, offset);
        offset += chunk.length;
        if (offset === entry.size) await unchangedAtEnd();
        await this.write(sink, chunk);
      }
      sink.end(undefined);
      await done;
    } catch (error) {
      if (error instanceof PackStopped) throw error;
      throw translateError(error, 'ERR_STORAGE', `cannot read file ${entry.path}`);
    } finally {
      await handle.close();
    }
  }

  /** Streams content that must be exactly `size` bytes. */
  async content(path: string, header: PackHeader, content: AsyncIterable<Chunk> | Iterable<Chunk>, size: number): Promise<void> {
    const wrong = (count: string) => new BerthError('ERR_BACKUP_SOURCE_CHANGED', `content for ${path} is ${count} bytes, not the ${size} announced`);
    const { sink, done } = this.start(header);
    let written = 0;
    for await (const piece of content) {
      const chunk = typeof piece === 'string' ? Buffer.from(piece) : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
      if (written + chunk.length > size) throw wrong('more than');
      await this.demand();
      written += chunk.length;
      await this.write(sink, chunk);
    }
    if (written !== size) throw wrong(String(written));
    sink.end(undefined);
    await done;
  }

  private start(header: PackHeader): { sink: Sink; done: Promise<void> } {
    let sink: Sink | undefined;
    const done = new Promise<void>((resolve, reject) => {
      sink = this.pack.entry(header, (error) => (error ? reject(error) : resolve()));
    });
    done.catch(() => undefined); // awaited by the caller unless it fails first
    return { sink: sink!, done };
  }

  private async write(sink: Sink, chunk: Buffer): Promise<void> {
    await this.demand();
    this.bytes += chunk.length;
    if (!sink.write(chunk)) {
      await drained(sink);
      await this.demand();
    }
    this.onProgress?.(this.bytes);
  }
}

/** Resolves once a streamx writable takes more data, or is destroyed (then the caller's next step fails). */
function drained(stream: Sink): Promise<void> {
  if (stream.destroying) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const settle = (): void => {
      stream.off('drain', settle);
      stream.off('close', settle);
      resolve();
    };
    stream.on('drain', settle);
    stream.on('close', settle);
  });
}

/** A tar header for `name`; values ustar (or tar-stream) cannot hold go into pax records. */
function entryHeader(name: string, type: keyof typeof TYPE_BITS, metadata: EntryMetadata, size: number, linkname?: string): PackHeader {
  const pax: Record<string, string> = {};
  const id = (key: 'uid' | 'gid', value: number): number => {
    if (!Number.isSafeInteger(value) || value < 0) throw new BerthError('ERR_INTERNAL', `tree entry ${JSON.stringify(name)} has an invalid ${key} ${value}`);
    if (value <= TAR_STREAM_MAX_ID) return value;
    pax[key] = String(value);
    return TAR_STREAM_MAX_ID;
  };
  const uid = id('uid', metadata.uid);
  const gid = id('gid', metadata.gid);
  const seconds = Math.floor(metadata.mtimeMs / 1000);
  let mtime = new Date(seconds * 1000);
  if (!Number.isFinite(seconds)) throw new BerthError('ERR_INTERNAL', `tree entry ${JSON.stringify(name)} has an invalid mtime`);
  if (seconds < 0 || seconds > TAR_STREAM_MAX_SECONDS) {
    pax.mtime = String(seconds);
    mtime = new Date(0);
  }
  if (size > USTAR_MAX_SIZE) pax.size = String(size);
  const header: PackHeader = {
    name,
    type,
    mode: (metadata.mode & PERMISSION_BITS) | TYPE_BITS[type],
    uid,
    gid,
    size,
    mtime,
  };
  if (linkname !== undefined) header.linkname = linkname;
  if (Object.keys(pax).length > 0) header.pax = pax;
  return header;
}
