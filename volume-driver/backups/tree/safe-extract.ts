/**
 * Restores a tar into a directory without trusting the archive: every path must stay inside the
 * target, nothing is ever written through a symlink (parents must be directories this extraction
 * created, checked with lstat; files are created with O_CREAT|O_EXCL|O_NOFOLLOW), links may not
 * point outside, device nodes are refused. Also exports the building blocks an incremental
 * applier needs to change an existing restored tree just as safely.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { lchown, link, lstat, lutimes, mkdir, open, readdir, rename, rm, symlink, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { extract as tarExtract, type Header } from 'tar-stream';
import { BerthError, isBerthError, translateError } from '../../../plugins/errors/berth-error.js';
import { PERMISSION_BITS, parentTreePath, treePathProblem, type EntryMetadata, type TreeEntryType } from './tree-entry.js';

const run = promisify(execFile);

/** An archive entry as the extraction sees it, after its name and pax records are decoded. */
export interface ArchiveEntry {
  /** The raw name from the archive, for messages. */
  readonly name: string;
  /** Normalised relative path ('./' prefixes, trailing '/' and '.' components dropped); '' is the root entry. */
  readonly path: string;
  readonly type: TreeEntryType;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtimeMs: number;
  readonly size: number;
  /** Symlinks: the target as stored. Hardlinks: the normalised path of the linked entry. */
  readonly linkTarget?: string;
}

/**
 * What to do with an entry: extract it, skip it (content discarded), or hand its content to a
 * function (which need not read all of it; the rest is discarded after it resolves).
 */
export type EntryAction = 'extract' | 'skip' | ((content: AsyncIterable<Buffer>) => Promise<void>);

/** Sees one created file's content, in order, as it is written (e.g. to hash it instead of reading the file back). */
export interface ContentTap {
  /** The next bytes, before they are written. Must not keep `chunk`. */
  write(chunk: Buffer): void;
  /** All of the content was written. */
  end(): void;
  /** The file was not completed; it is removed. */
  abort(): void;
}

/** Called once a regular file is created and open, with its identity; returns what sees its content. */
export type TapContent = (file: { readonly dev: bigint; readonly ino: bigint }) => ContentTap;

export interface ExtractOptions {
  /** File content bytes written so far, after each chunk. */
  readonly onProgress?: (bytes: number) => void;
  /** Sees the content of every regular file extracted (not of entries handed to onEntry functions). */
  readonly tapContent?: TapContent;
  /** Decides per entry (called after the entry's path is validated); 'extract' when absent. */
  readonly onEntry?: (entry: ArchiveEntry) => EntryAction | Promise<EntryAction>;
  /** Restore numeric uid/gid; defaults to whether the process runs as root (like GNU tar). */
  readonly preserveOwners?: boolean;
  /**
   * Accept symlinks whose target is absolute or leads out of the tree. The extraction never
   * follows symlinks, so this is safe for the extraction itself; the risk is for whatever later
   * follows them outside a container. Off by default.
   */
  readonly allowEscapingSymlinks?: boolean;
}

export interface ExtractSummary {
  files: number;
  directories: number;
  symlinks: number;
  hardlinks: number;
  fifos: number;
  /** File content bytes written. */
  bytes: number;
  /** Entries skipped or handed to an onEntry function. */
  skipped: number;
}

export interface MetadataOptions {
  readonly preserveOwners?: boolean;
}

/**
 * Extracts `tar` into `target`, which must be an existing empty directory. The root entry ('./')
 * if present sets the target's own mode, owner and mtime. Modes, numeric owners (pax uid/gid
 * too) and mtimes (pax mtime too, to the millisecond) are restored; directories get their
 * metadata after their contents. Refusals are ERR_BACKUP_UNSAFE_ENTRY naming the entry: absolute
 * names, `..` components, NUL bytes, a parent that is not a directory extracted earlier (so never
 * through a symlink), duplicates, symlinks whose target is absolute or leaves the tree (unless
 * allowEscapingSymlinks), hard links to paths not extracted earlier or to directories, device
 * nodes and unknown entry types. A malformed archive is ERR_BACKUP_CORRUPT (ERR_BACKUP_TRUNCATED
 * when it ends inside an entry); write failures are ERR_STORAGE. Fifos need the `mkfifo` command.
 *
 * On the first failure it stops, destroys `tar` and rejects, leaving whatever it already wrote:
 * the caller must delete the half-restored target.
 */
export async function extractTree(tar: Readable, target: string, options: ExtractOptions = {}): Promise<ExtractSummary> {
  const input: { error?: unknown } = {};
  // Listening at once: the input may fail while the target is being checked.
  tar.on('error', (error) => {
    input.error ??= error;
  });
  try {
    await requireEmptyDirectory(target);
  } catch (error) {
    tar.destroy();
    throw error;
  }
  if (input.error !== undefined) throw translateError(input.error, 'ERR_STORAGE', 'cannot read the archive');
  const owners = options.preserveOwners ?? isRoot();
  const summary: ExtractSummary = { files: 0, directories: 0, symlinks: 0, hardlinks: 0, fifos: 0, bytes: 0, skipped: 0 };
  const directories = new Set<string>(['']);
  const deferred: Array<{ absolute: string; path: string; metadata: EntryMetadata }> = [];
  let root: EntryMetadata | undefined;

  const extractor = tarExtract();
  let stopped = false;
  const feeding = feed(tar, extractor, () => stopped, input);
  try {
    for await (const source of extractor) {
      const content = detachable(source);
      const entry = decodeEntry(source.header);
      const action = (await options.onEntry?.(entry)) ?? 'extract';
      if (action !== 'extract') {
        summary.skipped++;
        if (typeof action === 'function') await action(content.iterable);
        await content.drain();
        continue;
      }
      const display = JSON.stringify(entry.name);
      const refuse = (reason: string) => new BerthError('ERR_BACKUP_UNSAFE_ENTRY', `archive entry ${display} is unsafe: ${reason}`, { details: { entry: entry.name } });
      if (entry.path === '') {
        if (entry.type !== 'directory') throw refuse('the root entry is not a directory');
        if (root) throw refuse('it is a duplicate of an earlier entry');
        root = entry;
        await content.drain();
        continue;
      }
      const parent = parentTreePath(entry.path);
      if (!directories.has(parent)) throw refuse(`its parent ${JSON.stringify(parent)} is not a directory extracted before it`);
      const absolute = join(target, entry.path);
      const parentStats = await storage(display, () => lstat(join(target, parent)));
      if (!parentStats.isDirectory()) throw refuse(`its parent ${JSON.stringify(parent)} is no longer a directory`);
      const duplicate = (error: unknown): never => {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw refuse('it is a duplicate of an earlier entry');
        throw translateError(error, 'ERR_STORAGE', `cannot restore ${display}`);
      };
      switch (entry.type) {
        case 'file': {
          const before = summary.bytes;
          const onBytes = (written: number): void => {
            summary.bytes = before + written;
            options.onProgress?.(summary.bytes);
          };
          await createFile(content.iterable, absolute, entry, { owners, display, onBytes, expectedSize: entry.size, refuseExisting: refuse, ...(options.tapContent ? { tapContent: options.tapContent } : {}) });
          summary.files++;
          break;
        }
        case 'directory':
          await mkdir(absolute, 0o700).catch(duplicate);
          directories.add(entry.path);
          deferred.push({ absolute, path: display, metadata: entry });
          summary.directories++;
          break;
        case 'symlink': {
          const problem = options.allowEscapingSymlinks ? basicSymlinkProblem(entry.linkTarget) : symlinkTargetProblem(entry.path, entry.linkTarget);
          if (problem !== undefined) throw refuse(problem);
          await symlink(entry.linkTarget!, absolute).catch(duplicate);
          await storage(display, () => setSymlinkMetadata(absolute, entry, owners));
          summary.symlinks++;
          break;
        }
        case 'hardlink': {
          const linked = entry.linkTarget!;
          if (!directories.has(parentTreePath(linked))) throw refuse(`its hard link target ${JSON.stringify(linked)} was not extracted before it`);
          const linkedStats = await lstat(join(target, linked)).catch(() => undefined);
          if (!linkedStats) throw refuse(`its hard link target ${JSON.stringify(linked)} was not extracted before it`);
          if (linkedStats.isDirectory()) throw refuse(`its hard link target ${JSON.stringify(linked)} is a directory`);
          await link(join(target, linked), absolute).catch(duplicate);
          summary.hardlinks++;
          break;
        }
        case 'fifo':
          if (await exists(absolute)) throw refuse('it is a duplicate of an earlier entry');
          await makeFifo(absolute, display);
          await storage(display, () => withHandle(absolute, constants.O_RDONLY | constants.O_NONBLOCK, (handle) => applyMetadata(handle, entry, owners)));
          summary.fifos++;
          break;
      }
      await content.drain();
    }
    await feeding;
    if (input.error !== undefined) throw translateError(input.error, 'ERR_STORAGE', 'cannot read the archive');
    for (const directory of deferred.reverse()) {
      await storage(directory.path, () => withHandle(directory.absolute, constants.O_RDONLY | constants.O_DIRECTORY, (handle) => applyMetadata(handle, directory.metadata, owners)));
    }
    if (root) {
      const metadata = root;
      await storage('the root entry', () => withHandle(target, constants.O_RDONLY | constants.O_DIRECTORY, (handle) => applyMetadata(handle, metadata, owners)));
    }
    return summary;
  } catch (error) {
    stopped = true;
    extractor.destroy();
    tar.destroy();
    await feeding;
    if (isBerthError(error)) throw error;
    if (input.error !== undefined) throw translateError(input.error, 'ERR_STORAGE', 'cannot read the archive');
    const message = error instanceof Error ? error.message : String(error);
    if (message === 'Unexpected end of data') throw new BerthError('ERR_BACKUP_TRUNCATED', 'archive ends in the middle of an entry', { cause: error });
    throw translateError(error, 'ERR_BACKUP_CORRUPT', 'archive is corrupt');
  }
}

/**
 * Validates `relativePath` (a tree path: no absolute, `..`, NUL or empty components) and returns
 * its absolute path under `target`, after checking with lstat that `target` and every parent
 * are real directories (not symlinks). The path itself may or may not exist and is not checked.
 * '' resolves to `target`. Refusals are ERR_BACKUP_UNSAFE_ENTRY.
 */
export async function safeResolve(target: string, relativePath: string): Promise<string> {
  const refuse = (reason: string) => new BerthError('ERR_BACKUP_UNSAFE_ENTRY', `path ${JSON.stringify(relativePath)} is unsafe: ${reason}`, { details: { entry: relativePath } });
  if (relativePath !== '') {
    const problem = treePathProblem(relativePath);
    if (problem !== undefined) throw refuse(problem);
  }
  const components = relativePath === '' ? [] : relativePath.split('/');
  let current = target;
  for (let i = 0; ; i++) {
    const checked = current;
    const stats = await lstat(checked).catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw translateError(error, 'ERR_STORAGE', `cannot check ${checked}`);
    });
    if (!stats?.isDirectory()) throw refuse(i === 0 ? `the target ${target} is not a directory` : `its parent ${JSON.stringify(components.slice(0, i).join('/'))} is not a directory`);
    if (i >= components.length - 1) break;
    current = join(current, components[i]!);
  }
  return relativePath === '' ? target : join(target, relativePath);
}

export interface WriteFileOptions extends MetadataOptions {
  /** Replace an existing file (or symlink, fifo) atomically: written beside it, then renamed over it. */
  readonly replace?: boolean;
  /** Bytes of this file written so far, after each chunk. */
  readonly onBytes?: (bytes: number) => void;
  /** When given, content of another length is ERR_BACKUP_CORRUPT and nothing is left behind. */
  readonly expectedSize?: number;
  /** Sees the content as it is written. */
  readonly tapContent?: TapContent;
}

/**
 * Writes `content` as a new regular file at `absolutePath` (from safeResolve) with `metadata`
 * applied through the open descriptor. Without `replace`, an existing path of any kind is
 * ERR_BACKUP_UNSAFE_ENTRY. Returns the bytes written. Errors reading `content` pass through.
 */
export async function writeFileFrom(content: AsyncIterable<Buffer | Uint8Array> | Iterable<Buffer | Uint8Array>, absolutePath: string, metadata: EntryMetadata, options: WriteFileOptions = {}): Promise<number> {
  const display = JSON.stringify(absolutePath);
  const refuse = (reason: string) => new BerthError('ERR_BACKUP_UNSAFE_ENTRY', `path ${display} is unsafe: ${reason}`);
  const owners = options.preserveOwners ?? isRoot();
  const base = {
    owners,
    display,
    refuseExisting: refuse,
    ...(options.onBytes ? { onBytes: options.onBytes } : {}),
    ...(options.expectedSize !== undefined ? { expectedSize: options.expectedSize } : {}),
    ...(options.tapContent ? { tapContent: options.tapContent } : {}),
  };
  if (!options.replace) return createFile(content, absolutePath, metadata, base);
  const temporary = join(dirname(absolutePath), `.berth-restore-${randomUUID()}`);
  const written = await createFile(content, temporary, metadata, base);
  try {
    await rename(temporary, absolutePath);
  } catch (error) {
    await rm(temporary, { force: true });
    throw translateError(error, 'ERR_STORAGE', `cannot replace ${display}`);
  }
  return written;
}

/**
 * Sets mode, owner (numeric, when preserving owners) and mtime on an existing path without
 * following symlinks: through a descriptor opened with O_NOFOLLOW, or lchown/lutimes for a
 * symlink (whose mode Linux ignores). A path whose kind differs from `entry.type` ('hardlink'
 * matches any non-directory) is ERR_BACKUP_UNSAFE_ENTRY.
 */
export async function setMetadata(absolutePath: string, entry: EntryMetadata & { readonly type: TreeEntryType }, options: MetadataOptions = {}): Promise<void> {
  const owners = options.preserveOwners ?? isRoot();
  const display = JSON.stringify(absolutePath);
  const stats = await storage(display, () => lstat(absolutePath));
  const kind = kindOf(stats);
  const expected = entry.type === 'hardlink' && kind !== 'directory' ? kind : entry.type;
  if (kind !== expected) throw new BerthError('ERR_BACKUP_UNSAFE_ENTRY', `path ${display} is a ${kindOf(stats)}, not a ${expected}`);
  if (expected === 'symlink') return storage(display, () => setSymlinkMetadata(absolutePath, entry, owners));
  const flags = constants.O_RDONLY | constants.O_NONBLOCK | (expected === 'directory' ? constants.O_DIRECTORY : 0);
  await storage(display, () => withHandle(absolutePath, flags, (handle) => applyMetadata(handle, entry, owners)));
}

/** Applies metadata through an open descriptor: owner first (chown clears setuid/setgid), then mode, then mtime. */
export async function applyMetadata(handle: FileHandle, metadata: EntryMetadata, preserveOwners: boolean): Promise<void> {
  if (preserveOwners) await handle.chown(metadata.uid, metadata.gid);
  await handle.chmod(metadata.mode & PERMISSION_BITS);
  // Dates, not numbers: fs treats a negative number of seconds as "now".
  const time = new Date(metadata.mtimeMs);
  await handle.utimes(time, time);
}

/**
 * Opens an existing regular file read-write for patching in place (O_NOFOLLOW); anything else at
 * the path is ERR_BACKUP_UNSAFE_ENTRY. The caller closes it (and may applyMetadata first).
 */
export async function openForPatch(absolutePath: string): Promise<FileHandle> {
  const display = JSON.stringify(absolutePath);
  const handle = await open(absolutePath, constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') throw new BerthError('ERR_BACKUP_UNSAFE_ENTRY', `path ${display} is a symlink, not a file`);
    throw translateError(error, 'ERR_STORAGE', `cannot open ${display}`);
  });
  const stats = await handle.stat().catch(async (error: unknown) => {
    await handle.close();
    throw translateError(error, 'ERR_STORAGE', `cannot open ${display}`);
  });
  if (!stats.isFile()) {
    await handle.close();
    throw new BerthError('ERR_BACKUP_UNSAFE_ENTRY', `path ${display} is a ${kindOf(stats)}, not a file`);
  }
  return handle;
}

/** Deletes `relativePath` under `target` (a whole subtree for a directory; a symlink itself, never what it points to). Missing is fine. */
export async function removePath(target: string, relativePath: string): Promise<void> {
  if (relativePath === '') throw new BerthError('ERR_BACKUP_UNSAFE_ENTRY', 'path "" is unsafe: it is the target itself');
  const absolute = await safeResolve(target, relativePath);
  await rm(absolute, { recursive: true, force: true }).catch((error: unknown) => {
    throw translateError(error, 'ERR_STORAGE', `cannot remove ${JSON.stringify(relativePath)}`);
  });
}

/**
 * Why a symlink at tree path `linkPath` with `target` could lead outside the tree, or undefined.
 * Refused: absolute targets, more leading `..` than the link's depth, and `..` after a name
 * (`a/../b`): `a` may itself be a symlink, so only a leading run of `..`, which climbs real
 * directories, can be checked without resolving anything.
 */
export function symlinkTargetProblem(linkPath: string, target: string | undefined): string | undefined {
  const basic = basicSymlinkProblem(target);
  if (basic !== undefined) return basic;
  if (target!.startsWith('/')) return `its symlink target ${JSON.stringify(target)} is absolute`;
  let depth = linkPath.split('/').length - 1;
  let named = false;
  for (const component of target!.split('/')) {
    if (component === '' || component === '.') continue;
    if (component !== '..') {
      named = true;
    } else if (named) {
      return `its symlink target ${JSON.stringify(target)} has ".." after a name`;
    } else if (--depth < 0) {
      return `its symlink target ${JSON.stringify(target)} leads outside the tree`;
    }
  }
  return undefined;
}

function basicSymlinkProblem(target: string | undefined): string | undefined {
  if (target === undefined || target === '') return 'its symlink target is empty';
  if (target.includes('\0')) return 'its symlink target contains a NUL byte';
  return undefined;
}

/** Decodes names, types and pax records; refuses unsafe names and types. */
function decodeEntry(header: Header): ArchiveEntry {
  const name = header.name;
  const display = JSON.stringify(name);
  const refuse = (reason: string) => new BerthError('ERR_BACKUP_UNSAFE_ENTRY', `archive entry ${display} is unsafe: ${reason}`, { details: { entry: name } });
  const path = normaliseName(name, refuse);
  const pax = (header.pax ?? {}) as Record<string, string | undefined>;
  const number = (key: 'uid' | 'gid', fallback: number): number => {
    const value = pax[key] === undefined ? fallback : Number(pax[key]);
    if (!Number.isSafeInteger(value) || value < 0) throw new BerthError('ERR_BACKUP_CORRUPT', `archive entry ${display} has an invalid ${key}`);
    return value;
  };
  let mtimeMs = pax.mtime === undefined ? header.mtime.getTime() : Number(pax.mtime) * 1000;
  // A negative header mtime can only be GNU base-256, which tar-stream decodes one second too late
  // (it negates the inverted bytes without adding one).
  if (pax.mtime === undefined && mtimeMs < 0) mtimeMs -= 1000;
  if (!Number.isFinite(mtimeMs)) throw new BerthError('ERR_BACKUP_CORRUPT', `archive entry ${display} has an invalid mtime`);
  const base = { name, path, mode: header.mode & PERMISSION_BITS, uid: number('uid', header.uid), gid: number('gid', header.gid), mtimeMs, size: header.size };
  const type = header.type as string | null;
  switch (type) {
    case 'file':
    case 'contiguous-file':
      return { ...base, type: 'file' };
    case 'directory':
      return { ...base, type: 'directory', size: 0 };
    case 'fifo':
      return { ...base, type: 'fifo', size: 0 };
    case 'symlink':
      return { ...base, type: 'symlink', size: 0, linkTarget: header.linkname ?? '' };
    case 'link': {
      const linked = normaliseName(header.linkname ?? '', (reason) => refuse(`its hard link target ${JSON.stringify(header.linkname)}: ${reason}`));
      if (linked === '') throw refuse('its hard link target is the root');
      return { ...base, type: 'hardlink', size: 0, linkTarget: linked };
    }
    case 'character-device':
    case 'block-device':
      throw refuse('it is a device node');
    default:
      throw refuse(`its entry type ${type === null ? '(unknown)' : type} is not supported`);
  }
}

function normaliseName(name: string, refuse: (reason: string) => BerthError): string {
  if (name.includes('\0')) throw refuse('the name contains a NUL byte');
  if (name.startsWith('/')) throw refuse('the name is an absolute path');
  const components: string[] = [];
  for (const component of name.split('/')) {
    if (component === '..') throw refuse('the name has a ".." component');
    if (component !== '' && component !== '.') components.push(component);
  }
  return components.join('/');
}

interface CreateOptions {
  readonly owners: boolean;
  readonly display: string;
  readonly onBytes?: (bytes: number) => void;
  readonly expectedSize?: number;
  readonly refuseExisting: (reason: string) => BerthError;
  readonly tapContent?: TapContent;
}

/** Creates a new file (never through a symlink), streams content into it, applies metadata; removes it on failure. */
async function createFile(content: AsyncIterable<Buffer | Uint8Array> | Iterable<Buffer | Uint8Array>, absolute: string, metadata: EntryMetadata, options: CreateOptions): Promise<number> {
  let handle: FileHandle;
  try {
    handle = await open(absolute, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw options.refuseExisting('it is a duplicate of an earlier entry');
    throw translateError(error, 'ERR_STORAGE', `cannot restore ${options.display}`);
  }
  let written = 0;
  let tap: ContentTap | undefined;
  // Archive chunks are small (64 KiB pipe reads): gather them into ~1 MiB batches written with
  // one positional writev each, and keep WRITES_IN_FLIGHT of them going while the next one is
  // gathered, so the thread pool always has the next write at hand.
  let batch: Buffer[] = [];
  let batchBytes = 0;
  let position = 0;
  const inFlight: Array<Promise<void>> = [];
  const flush = async (): Promise<void> => {
    const buffers = batch;
    const bytes = batchBytes;
    const at = position;
    batch = [];
    batchBytes = 0;
    position += bytes;
    if (inFlight.length >= WRITES_IN_FLIGHT) await inFlight.shift();
    const writing = storage(options.display, () => writeAll(handle, buffers, bytes, at)).then(() => {
      written += bytes;
      options.onBytes?.(written);
    });
    writing.catch(() => undefined); // awaited below; keeps an early failure from going unhandled
    inFlight.push(writing);
  };
  try {
    if (options.tapContent) {
      const { dev, ino } = await storage(options.display, () => handle.stat({ bigint: true }));
      tap = options.tapContent({ dev, ino });
    }
    let received = 0;
    for await (const piece of content) {
      const chunk = piece instanceof Buffer ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
      received += chunk.length;
      if (options.expectedSize !== undefined && received > options.expectedSize) throw new BerthError('ERR_BACKUP_CORRUPT', `content of ${options.display} is longer than its ${options.expectedSize} bytes`);
      tap?.write(chunk);
      batch.push(chunk);
      batchBytes += chunk.length;
      if (batchBytes >= WRITE_BATCH_BYTES) await flush();
    }
    if (batchBytes > 0) await flush();
    await Promise.all(inFlight);
    if (options.expectedSize !== undefined && written !== options.expectedSize) throw new BerthError('ERR_BACKUP_CORRUPT', `content of ${options.display} is ${written} bytes, not ${options.expectedSize}`);
    await storage(options.display, () => applyMetadata(handle, metadata, options.owners));
    await storage(options.display, () => handle.close());
    tap?.end();
    return written;
  } catch (error) {
    tap?.abort();
    await Promise.allSettled(inFlight);
    await handle.close().catch(() => undefined);
    await unlink(absolute).catch(() => undefined);
    throw error;
  }
}

const WRITE_BATCH_BYTES = 1024 * 1024;
const WRITES_IN_FLIGHT = 2;

async function writeAll(handle: FileHandle, buffers: Buffer[], bytes: number, position: number): Promise<void> {
  let pending = buffers;
  for (let done = 0; done < bytes; ) {
    const { bytesWritten } = await handle.writev(pending, position + done);
    done += bytesWritten;
    pending = dropBytes(pending, bytesWritten);
  }
}

/** The buffers left after a short write of `count` bytes. */
function dropBytes(buffers: Buffer[], count: number): Buffer[] {
  let skip = count;
  let index = 0;
  while (index < buffers.length && skip >= buffers[index]!.length) skip -= buffers[index++]!.length;
  const rest = buffers.slice(index);
  if (skip > 0 && rest.length > 0) rest[0] = rest[0]!.subarray(skip);
  return rest;
}

async function setSymlinkMetadata(absolute: string, metadata: EntryMetadata, owners: boolean): Promise<void> {
  if (owners) await lchown(absolute, metadata.uid, metadata.gid);
  const time = new Date(metadata.mtimeMs);
  await lutimes(absolute, time, time);
}

async function withHandle<T>(absolute: string, flags: number, use: (handle: FileHandle) => Promise<T>): Promise<T> {
  const handle = await open(absolute, flags | constants.O_NOFOLLOW);
  try {
    return await use(handle);
  } finally {
    await handle.close();
  }
}

async function makeFifo(absolute: string, display: string): Promise<void> {
  try {
    await run('mkfifo', ['-m', '600', '--', absolute]);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new BerthError('ERR_STORAGE', `cannot restore fifo ${display}: the mkfifo command is not installed`, { cause: error });
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new BerthError('ERR_STORAGE', `cannot restore fifo ${display}: ${stderr || String(error)}`, { cause: error });
  }
}

/** Runs a filesystem step for `what`, translating a foreign failure to ERR_STORAGE. */
async function storage<T>(what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    throw translateError(error, 'ERR_STORAGE', `cannot restore ${what}`);
  }
}

async function exists(absolute: string): Promise<boolean> {
  return lstat(absolute).then(
    () => true,
    () => false,
  );
}

async function requireEmptyDirectory(target: string): Promise<void> {
  let stats: Stats;
  let names: string[];
  try {
    stats = await lstat(target);
    names = stats.isDirectory() ? await readdir(target) : [];
  } catch (error) {
    throw translateError(error, 'ERR_STORAGE', `cannot use restore target ${target}`);
  }
  if (!stats.isDirectory()) throw new BerthError('ERR_STORAGE', `restore target ${target} is not a directory`);
  if (names.length > 0) throw new BerthError('ERR_INTERNAL', `restore target ${target} is not empty`);
}

type Extractor = ReturnType<typeof tarExtract>;

/**
 * Pushes the input into the extractor with backpressure. Never rejects: a read error destroys the
 * extractor and is kept in `failure.error`, so it is not mistaken for a corrupt archive.
 */
async function feed(input: Readable, extractor: Extractor, stopped: () => boolean, failure: { error?: unknown }): Promise<void> {
  try {
    for await (const chunk of input) {
      if (stopped() || extractor.destroying) return;
      if (!extractor.write(chunk)) await drained(extractor);
    }
    if (!stopped() && !extractor.destroying) extractor.end(undefined);
  } catch (error) {
    if (stopped()) return;
    failure.error ??= error;
    extractor.destroy(error instanceof Error ? error : new Error(String(error)));
  }
}

/** Resolves once the extractor takes more data, or is destroyed. */
function drained(extractor: Extractor): Promise<void> {
  if (extractor.destroying) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const settle = (): void => {
      extractor.off('drain', settle);
      extractor.off('close', settle);
      resolve();
    };
    extractor.on('drain', settle);
    extractor.on('close', settle);
  });
}

/**
 * The entry's content as an iterable that a consumer may abandon early without destroying the
 * whole archive stream (tar-stream destroys the parent when an entry stream is destroyed).
 */
function detachable(source: AsyncIterable<unknown>): { iterable: AsyncIterable<Buffer>; drain: () => Promise<void> } {
  const iterator = source[Symbol.asyncIterator]();
  let done = false;
  const next = async (): Promise<IteratorResult<Buffer, undefined>> => {
    if (done) return { done: true, value: undefined };
    const result = await iterator.next();
    if (result.done) {
      done = true;
      return { done: true, value: undefined };
    }
    return { done: false, value: result.value as Buffer };
  };
  return {
    iterable: { [Symbol.asyncIterator]: () => ({ next }) },
    drain: async () => {
      while (!(await next()).done);
    },
  };
}

function kindOf(stats: Stats): string {
  if (stats.isFile()) return 'file';
  if (stats.isDirectory()) return 'directory';
  if (stats.isSymbolicLink()) return 'symlink';
  if (stats.isFIFO()) return 'fifo';
  if (stats.isSocket()) return 'socket';
  return 'device';
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}
