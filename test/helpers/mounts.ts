// Reads /proc/self/mountinfo so cleanup can find and detach whatever a test left mounted
// (namespace files, loop-mounted pools) before deleting directories.
import { readFileSync } from 'node:fs';
import { resolve, sep } from 'node:path';
import { runCommand } from './run-command.js';

export interface MountEntry {
  id: number;
  parentId: number;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Mounts of the calling process's mount namespace, in mountinfo order (parents before children). */
export function readMounts(mountinfoPath = '/proc/self/mountinfo'): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of readFileSync(mountinfoPath, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    const [before, after] = line.split(' - ');
    if (before === undefined || after === undefined) continue;
    const fields = before.split(' ');
    const tail = after.split(' ');
    entries.push({
      id: Number(fields[0]),
      parentId: Number(fields[1]),
      mountPoint: unescapeMountinfo(fields[4] ?? ''),
      fsType: tail[0] ?? '',
      source: unescapeMountinfo(tail[1] ?? ''),
    });
  }
  return entries;
}

/** Mounts at or below `dir`, deepest first (the order to unmount them in). */
export function mountsUnder(dir: string, mounts: MountEntry[] = readMounts()): MountEntry[] {
  const root = resolve(dir);
  return mounts
    .filter((m) => m.mountPoint === root || m.mountPoint.startsWith(root + sep))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length || b.id - a.id);
}

export function isMountPoint(path: string, mounts: MountEntry[] = readMounts()): boolean {
  const target = resolve(path);
  return mounts.some((m) => m.mountPoint === target);
}

/**
 * Lazily unmounts everything at or below `dir`, deepest first, repeating while mounts remain
 * (stacked mounts need one umount each). Returns the mount points that could not be detached.
 */
export async function unmountUnder(dir: string): Promise<string[]> {
  for (let round = 0; round < 5; round++) {
    const left = mountsUnder(dir);
    if (left.length === 0) return [];
    for (const mount of left) {
      await runCommand(['umount', '-l', mount.mountPoint], { timeoutMs: 30_000 });
    }
  }
  return mountsUnder(dir).map((m) => m.mountPoint);
}

function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}
