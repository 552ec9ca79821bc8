// Running one measured command the same way for every tool, and the machine-level helpers
// around it: page cache dropping, flushing, repository sizes.
import { existsSync } from 'node:fs';
import { lstat, opendir, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { checkCommand, formatCommand, runCommand, type RunOptions } from '../../test/helpers/run-command.js';
import { round } from '../common/stats.js';
import { sha256File } from './dataset.js';

export const GNU_TIME = '/usr/bin/time';

export interface Measured {
  readonly wallMs: number;
  /** CPU seconds of the command and the children it waited for; null without GNU time. */
  readonly userSeconds: number | null;
  readonly systemSeconds: number | null;
  /** Peak RSS in KiB of the command or of its largest waited-for child; null without GNU time. */
  readonly maxRssKiB: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `command` under `/usr/bin/time -v` (when installed), timed with the monotonic clock around
 * the whole process, and fails unless it exits 0. GNU time's report goes to a file, so the
 * command's own stderr is untouched.
 */
export async function measureCommand(command: readonly string[], scratchDir: string, options: RunOptions = {}): Promise<Measured> {
  const withTime = existsSync(GNU_TIME);
  const report = join(scratchDir, `time-${process.pid}-${Date.now()}.txt`);
  const argv = withTime ? [GNU_TIME, '-v', '-o', report, ...command] : [...command];
  const started = process.hrtime.bigint();
  const result = await runCommand(argv, { timeoutMs: 30 * 60_000, ...options });
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  if (result.code !== 0) {
    throw new Error(`${formatCommand(command)} failed with exit code ${String(result.code)}: ${(result.stderr || result.stdout).trim().split('\n').slice(-15).join('\n')}`);
  }
  let userSeconds: number | null = null;
  let systemSeconds: number | null = null;
  let maxRssKiB: number | null = null;
  if (withTime) {
    const text = await readFile(report, 'utf8');
    await rm(report, { force: true });
    const field = (name: string): number | null => {
      const match = new RegExp(`^\\s*${name}:\\s*([\\d.]+)\\s*$`, 'm').exec(text);
      return match ? Number(match[1]) : null;
    };
    userSeconds = field('User time \\(seconds\\)');
    systemSeconds = field('System time \\(seconds\\)');
    maxRssKiB = field('Maximum resident set size \\(kbytes\\)');
  }
  return { wallMs: round(wallMs, 1), userSeconds, systemSeconds, maxRssKiB, stdout: result.stdout, stderr: result.stderr };
}

/** Writes dirty pages back (the `sync` command); returns how long that took. */
export async function flush(): Promise<number> {
  const started = process.hrtime.bigint();
  await checkCommand(['sync'], { timeoutMs: 10 * 60_000 });
  return round(Number(process.hrtime.bigint() - started) / 1e6, 1);
}

/** sync, then drops the page cache, dentries and inodes. False when the kernel refuses (no privilege). */
export async function dropCaches(): Promise<boolean> {
  await flush();
  try {
    await writeFile('/proc/sys/vm/drop_caches', '3\n');
    return true;
  } catch {
    return false;
  }
}

/** Reads every file below `root` once (to warm the page cache when it cannot be dropped). */
export async function readTree(root: string): Promise<void> {
  await checkCommand(['sh', '-c', 'find "$1" -type f -exec cat {} + > /dev/null', 'read-tree', root], { timeoutMs: 10 * 60_000 });
}

export interface TreeSize {
  /** Sum of file sizes (what `du -sb` counts, directories' own sizes included). */
  readonly apparentBytes: number;
  /** Allocated blocks (what `du -s` counts). */
  readonly allocatedBytes: number;
  readonly files: number;
}

/** Sizes of everything below `root` (hard links counted once); a missing root is empty. */
export async function treeSize(root: string): Promise<TreeSize> {
  const seen = new Set<string>();
  let apparentBytes = 0;
  let allocatedBytes = 0;
  let files = 0;
  const visit = async (path: string): Promise<void> => {
    const stats = await lstat(path).catch(() => undefined);
    if (!stats) return;
    const inode = `${stats.dev}:${stats.ino}`;
    if (seen.has(inode)) return;
    seen.add(inode);
    apparentBytes += stats.size;
    allocatedBytes += stats.blocks * 512;
    if (stats.isFile()) files++;
    if (!stats.isDirectory()) return;
    const dir = await opendir(path);
    for await (const entry of dir) await visit(join(path, entry.name));
  };
  await visit(root);
  return { apparentBytes, allocatedBytes, files };
}

export function loadAverage1(): number {
  return round(loadavg()[0] ?? 0, 2);
}

/** The restored tree must hold exactly the files of `expected`, each with its sha256. */
export async function compareRestored(root: string, expected: Readonly<Record<string, string>>): Promise<{ bytes: number; mismatches: string[] }> {
  const mismatches: string[] = [];
  const found = new Map<string, number>();
  const walk = async (dir: string, prefix: string): Promise<void> => {
    for await (const entry of await opendir(dir)) {
      const path = prefix === '' ? entry.name : `${prefix}/${entry.name}`;
      if (entry.isDirectory()) await walk(join(dir, entry.name), path);
      else found.set(path, (await lstat(join(dir, entry.name))).size);
    }
  };
  await walk(root, '').catch((error: unknown) => mismatches.push(`cannot read ${root}: ${error instanceof Error ? error.message : String(error)}`));
  for (const path of found.keys()) if (!(path in expected)) mismatches.push(`unexpected ${path}`);
  for (const [path, sha] of Object.entries(expected)) {
    if (!found.has(path)) mismatches.push(`missing ${path}`);
    else if ((await sha256File(join(root, path))) !== sha) mismatches.push(`${path} differs`);
  }
  return { bytes: [...found.values()].reduce((sum, size) => sum + size, 0), mismatches };
}
