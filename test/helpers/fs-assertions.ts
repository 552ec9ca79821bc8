import { lstat } from 'node:fs/promises';

/** Fails unless nothing (not even a dangling symlink) exists at `path`. */
export async function expectMissing(path: string): Promise<void> {
  try {
    await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  throw new Error(`expected ${path} not to exist`);
}
