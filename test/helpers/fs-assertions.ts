import { lstat } from 'node:fs/promises';
import { constants } from 'node:os';

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

/** Fails unless `promise` rejects with errno `code`, by number too: libuv has no name for some codes (EDQUOT arrives as "Unknown system error -122"). */
export async function expectErrno(promise: Promise<unknown>, code: keyof typeof constants.errno): Promise<void> {
  try {
    await promise;
  } catch (error) {
    const { code: name, errno } = error as NodeJS.ErrnoException;
    if (name === code || errno === -constants.errno[code]) return;
    throw new Error(`expected ${code}, got ${String(error)}`, { cause: error });
  }
  throw new Error(`expected ${code}, but the call succeeded`);
}
