// Trees, digests and transfers shared by the replication tests of both backends.
import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, link, lstat, mkdir, open, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { isBerthError } from '../../plugins/errors/berth-error.js';
import type { ReplicationStore, StorageBackend } from '../../volume-driver/storage/storage-backend.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** A host of a replication test, as far as shipping snapshots goes. */
export interface ChainHolder {
  readonly chain: ReplicationStore;
}

/** Creates `volume` on the host with a file `data` of `bytes` random bytes and takes chain snapshot `id` of it; returns the live path. */
export async function volumeWithSnapshot(on: ChainHolder & { readonly backend: Pick<StorageBackend, 'create'> }, volume: string, bytes: number, id = 'e0000001-00000001'): Promise<string> {
  const live = await on.backend.create(volume, {});
  await writeRandomFile(join(live, 'data'), bytes);
  await on.chain.takeReplicationSnapshot(volume, id);
  return live;
}

/** Sends `id` (relative to `parent`) from one host and receives it on another; returns the stream's size and the time taken. */
export async function ship(from: ChainHolder, to: ChainHolder, volume: string, id: string, parent?: string): Promise<{ bytes: number; ms: number }> {
  let bytes = 0;
  const counted = async function* (): AsyncGenerator<Buffer> {
    for await (const chunk of from.chain.sendReplicationSnapshot(volume, id, parent)) {
      bytes += (chunk as Buffer).length;
      yield chunk as Buffer;
    }
  };
  const ms = await timed(() => to.chain.receiveReplicationSnapshot(volume, id, counted()));
  return { bytes, ms };
}

/** About 50 MiB: large and small files, a hard link, a symlink, an empty directory, other owners and modes. */
export async function fillVolume(root: string): Promise<void> {
  await mkdir(join(root, 'big'));
  for (let index = 0; index < 4; index++) await writeRandomFile(join(root, 'big', `blob-${index}`), 12 * MiB);
  await mkdir(join(root, 'small', 'deeper'), { recursive: true });
  for (let index = 0; index < 200; index++) await writeFile(join(root, 'small', index % 2 ? 'deeper' : '', `f-${index}`), randomBytes(10 * KiB));
  await writeFile(join(root, 'private'), 'secret');
  await chown(join(root, 'private'), 1234, 1234);
  await chmod(join(root, 'private'), 0o600);
  await link(join(root, 'private'), join(root, 'private-link'));
  await symlink('big/blob-0', join(root, 'to-blob'));
  await mkdir(join(root, 'empty'));
  await writeFile(join(root, 'sparse'), '');
  const handle = await open(join(root, 'sparse'), 'r+');
  try {
    await handle.write(Buffer.from('end'), 0, 3, 32 * MiB);
  } finally {
    await handle.close();
  }
}

/** Every entry below `root` with its type, owner, mode, size and content hash (inode numbers for hard links). */
export async function treeDigest(root: string): Promise<string[]> {
  const lines: string[] = [];
  const inodes = new Map<number, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const stats = await lstat(path);
      const rel = relative(root, path);
      let what: string;
      if (stats.isSymbolicLink()) what = `link ${await readlink(path)}`;
      else if (stats.isDirectory()) what = 'dir';
      else if (stats.isFIFO()) what = 'fifo';
      else if (stats.nlink > 1 && inodes.has(stats.ino)) what = `hardlink ${inodes.get(stats.ino) ?? ''}`;
      else what = `file ${stats.size} ${await fileDigest(path)}`;
      if (stats.isFile()) inodes.set(stats.ino, rel);
      lines.push(`${rel} ${stats.uid}:${stats.gid} ${(stats.mode & 0o7777).toString(8)} ${what}`);
      if (stats.isDirectory()) await walk(path);
    }
  };
  const top = await lstat(root);
  lines.push(`. ${top.uid}:${top.gid} ${(top.mode & 0o7777).toString(8)}`);
  await walk(root);
  return lines;
}

export async function fileDigest(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

export async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const handle = await open(path, 'w');
  try {
    for (let written = 0; written < bytes; written += MiB) await handle.write(randomBytes(Math.min(MiB, bytes - written)));
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function overwrite(path: string, offset: number, bytes: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(randomBytes(bytes), 0, bytes, offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** `count` distinct block numbers below `blocks`, spread over the range. */
export function distinctBlocks(count: number, blocks: number): number[] {
  const chosen = new Set<number>();
  while (chosen.size < count) chosen.add(randomBytes(4).readUInt32LE(0) % blocks);
  return [...chosen].sort((x, y) => x - y);
}

export async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - started) / 1e6;
}

export function expectThrows(call: () => unknown, code: 'ERR_INVALID_NAME'): void {
  try {
    call();
  } catch (error) {
    if (isBerthError(error, code)) return;
    throw new Error(`expected a BerthError ${code}, got ${String(error)}`, { cause: error });
  }
  throw new Error(`expected a BerthError ${code}, but the call returned`);
}
