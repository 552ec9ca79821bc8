// Each test engine puts its containers under its own cgroup parent, so cleanup can find container
// processes (which live in their own namespaces) and remove the cgroups afterwards.
import { existsSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { readMounts } from './mounts.js';

/** Directories named `parent` at the top of every mounted cgroup hierarchy (v1 controllers or v2). */
export function cgroupDirs(parent: string): string[] {
  const roots = readMounts()
    .filter((m) => m.fsType === 'cgroup' || m.fsType === 'cgroup2')
    .map((m) => m.mountPoint);
  return [...new Set(roots)].map((root) => join(root, parent)).filter((dir) => existsSync(dir));
}

/** Pids in the cgroups at or below `dirs`. */
export function pidsInCgroups(dirs: readonly string[]): number[] {
  const pids = new Set<number>();
  for (const dir of dirs) {
    for (const sub of walk(dir)) {
      try {
        for (const line of readFileSync(join(sub, 'cgroup.procs'), 'utf8').split('\n')) {
          if (/^\d+$/.test(line)) pids.add(Number(line));
        }
      } catch {
        // Removed meanwhile.
      }
    }
  }
  return [...pids];
}

/** Removes the (now empty) cgroups at or below `dirs`, children first. Returns those that remain. */
export function removeCgroups(dirs: readonly string[]): string[] {
  const left: string[] = [];
  for (const dir of dirs) {
    for (const sub of walk(dir).reverse()) {
      try {
        rmdirSync(sub);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') left.push(sub);
      }
    }
  }
  return left;
}

/** `dir` and its sub-cgroups, parents before children (bounded depth). */
function walk(dir: string, depth = 0): string[] {
  if (depth > 8) return [];
  const out = [dir];
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const entry of entries) {
    if (entry.isDirectory()) out.push(...walk(join(dir, entry.name), depth + 1));
  }
  return out;
}
