import { lstat, opendir } from 'node:fs/promises';
import { join } from 'node:path';
import type { VolumeUsage } from './storage-backend.js';

/** Allocated bytes and inodes of a tree, hard links counted once; entries removed while walking are skipped. */
export async function measureTree(root: string): Promise<VolumeUsage> {
  const seen = new Set<string>();
  let usedBytes = (await lstat(root)).blocks * 512;
  let files = 0;
  const walk = async (dir: string): Promise<void> => {
    const handle = await opendir(dir);
    for await (const entry of handle) {
      const path = join(dir, entry.name);
      const stats = await lstat(path).catch(() => undefined);
      if (!stats) continue;
      const inode = `${stats.dev}:${stats.ino}`;
      if (seen.has(inode)) continue;
      seen.add(inode);
      usedBytes += stats.blocks * 512;
      files++;
      if (stats.isDirectory()) await walk(path);
    }
  };
  await walk(root);
  return { usedBytes, files };
}
