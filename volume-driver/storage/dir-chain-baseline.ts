/**
 * What the live tree was when a chain snapshot was taken from it (or when the live tree was made
 * from one): per regular file its inode number and ctime, kept beside the snapshot as
 * `replicas/<volume>/.<id>.live` (host-local, never shipped). ctime cannot be set by users and moves
 * with every write, truncate, chmod, chown or utimes, so a file whose inode and ctime are still the
 * recorded ones holds what the snapshot holds, without being read.
 *
 * Racy entries (git's racy-clean rule): timestamps come from a clock that ticks coarsely (a jiffy;
 * up to 2 s on some filesystems), so a write in the same tick as the recorded stat leaves ctime
 * unchanged. `atMs` is the time from which the live tree may have changed unseen (the start of the
 * walk that recorded it, or the moment a made tree became visible); an entry whose ctime is within
 * RACY_MS of it is trusted only while the file's mtime is older than that window (a later write
 * would have moved it). Otherwise the file is hashed.
 *
 * File format 1: a JSON line {"format":1,"atMs":...}, then one JSON line [path, ino, ctimeMs] a file.
 */
import { readFile } from 'node:fs/promises';
import { BerthError } from '../../plugins/errors/berth-error.js';
import type { TreeEntry } from '../backups/tree/tree-entry.js';
import { writeFileDurably } from './storage-layout.js';

/** Safety margin for timestamp granularity (the racy window). */
export const RACY_MS = 2000;

export interface FileIdentity {
  readonly ino: number;
  readonly ctimeMs: number;
}

export interface LiveBaseline {
  readonly atMs: number;
  readonly files: ReadonlyMap<string, FileIdentity>;
}

/** The baseline of a walked tree (hard links and other types carry nothing their first path does not). */
export function baselineOf(entries: Iterable<TreeEntry>, atMs: number): LiveBaseline {
  const files = new Map<string, FileIdentity>();
  for (const entry of entries) {
    if (entry.type === 'file' && entry.ino !== undefined && entry.ctimeMs !== undefined) files.set(entry.path, { ino: entry.ino, ctimeMs: entry.ctimeMs });
  }
  return { atMs, files };
}

/** Whether the file of a live walk certainly still has the content it had when `baseline` was recorded. */
export function unchangedSinceBaseline(baseline: LiveBaseline | undefined, entry: TreeEntry): boolean {
  const known = baseline?.files.get(entry.path);
  if (!baseline || !known || known.ino !== entry.ino || known.ctimeMs !== entry.ctimeMs) return false;
  const settled = baseline.atMs - RACY_MS;
  return known.ctimeMs < settled || entry.mtimeMs < settled;
}

export async function writeBaseline(path: string, baseline: LiveBaseline): Promise<void> {
  const lines = [`${JSON.stringify({ format: 1, atMs: baseline.atMs })}\n`];
  for (const [file, { ino, ctimeMs }] of baseline.files) lines.push(`${JSON.stringify([file, ino, ctimeMs])}\n`);
  await writeFileDurably(path, [Buffer.from(lines.join(''), 'utf8')]);
}

/** The baseline at `path`; undefined when there is none (a snapshot received, not taken here). */
export async function readBaseline(path: string, where: string): Promise<LiveBaseline | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const damaged = () => new BerthError('ERR_STORAGE', `the live baseline of ${where} (${path}) is damaged; delete it`);
  const [first = '', ...rest] = text.split('\n');
  let atMs: unknown;
  const files = new Map<string, FileIdentity>();
  try {
    atMs = (JSON.parse(first) as { atMs?: unknown }).atMs;
    for (const line of rest) {
      if (line === '') continue;
      const [file, ino, ctimeMs] = JSON.parse(line) as unknown[];
      if (typeof file !== 'string' || typeof ino !== 'number' || typeof ctimeMs !== 'number') throw damaged();
      files.set(file, { ino, ctimeMs });
    }
  } catch {
    throw damaged();
  }
  if (typeof atMs !== 'number') throw damaged();
  return { atMs, files };
}
