import { connect } from 'node:net';
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { BerthError, translateError } from '../errors/berth-error.js';

/** Resolves true when something accepts connections on the socket path. */
export function socketIsLive(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    const timer = setTimeout(() => finish(true), timeoutMs); // a hung listener is still a live owner
    function finish(live: boolean): void {
      clearTimeout(timer);
      socket.destroy();
      resolve(live);
    }
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/**
 * Makes `path` free for a new listener: refuses when a live process owns it, removes a
 * stale socket left by a crash (otherwise the engine would hang on it, moby#22653).
 */
export async function claimSocketPath(path: string, directoryMode: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: directoryMode });
  let stats;
  try {
    stats = await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw translateError(error, 'ERR_INTERNAL', `cannot inspect socket path ${path}`);
  }
  if (!stats.isSocket()) throw new BerthError('ERR_SOCKET_IN_USE', `${path} exists and is not a socket; refusing to replace it`);
  if (await socketIsLive(path)) throw new BerthError('ERR_SOCKET_IN_USE', `another process is serving ${path}; is an agent with this name already running?`);
  await unlink(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw translateError(error, 'ERR_INTERNAL', `cannot remove stale socket ${path}`);
  });
}

export async function restrictSocket(path: string, mode: number): Promise<void> {
  await chmod(path, mode);
}

export async function unlinkQuietly(path: string): Promise<void> {
  await unlink(path).catch(() => undefined);
}
