// A btrfs filesystem on a sparse loop-mounted file, as in test/integration/btrfs-backend.test.ts,
// and its release: unmount, detach the loop device, whatever state the run left it in.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { mountsUnder } from '../../test/helpers/mounts.js';
import { checkCommand, runCommand } from '../../test/helpers/run-command.js';

export interface Pool {
  readonly image: string;
  readonly mountpoint: string;
}

/** `<dir>/pool.img` (sparse, `sizeBytes`), formatted btrfs and mounted at `<dir>/pool`. */
export async function createPool(dir: string, sizeBytes: number): Promise<Pool> {
  const image = join(dir, 'pool.img');
  const mountpoint = join(dir, 'pool');
  await mkdir(mountpoint);
  await checkCommand(['truncate', '-s', String(sizeBytes), image]);
  await checkCommand(['mkfs.btrfs', '-q', '-L', 'berth-bench', image]);
  await checkCommand(['mount', '-o', 'loop', image, mountpoint]);
  return { image, mountpoint };
}

/** Unmounts everything under `dir` and detaches loop devices backed by files under it; returns what is left. */
export async function releaseMountsAndLoops(dir: string): Promise<string[]> {
  for (let round = 0; round < 3 && mountsUnder(dir).length > 0; round++) {
    for (const mount of mountsUnder(dir)) {
      const result = await runCommand(['umount', mount.mountPoint], { timeoutMs: 120_000 }).catch(() => undefined);
      if (result?.code !== 0) await runCommand(['umount', '-l', mount.mountPoint], { timeoutMs: 60_000 }).catch(() => undefined);
    }
  }
  // mount -o loop sets autoclear: the device detaches by itself after the unmount, not always at once.
  for (let attempt = 0; attempt < 20 && (await loopDevicesUnder(dir)).length > 0; attempt++) {
    for (const device of await loopDevicesUnder(dir)) await runCommand(['losetup', '-d', device], { timeoutMs: 60_000 }).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return [...mountsUnder(dir).map((mount) => `mount ${mount.mountPoint}`), ...(await loopDevicesUnder(dir)).map((device) => `loop ${device}`)];
}

async function loopDevicesUnder(dir: string): Promise<string[]> {
  const listed = await runCommand(['losetup', '--list', '--json', '--output', 'NAME,BACK-FILE']).catch(() => undefined);
  if (listed?.code !== 0) return [];
  const parsed = JSON.parse(listed.stdout || '{"loopdevices":[]}') as { loopdevices: Array<{ name: string; 'back-file': string | null }> };
  return parsed.loopdevices.filter((device) => (device['back-file'] ?? '').startsWith(`${dir}/`)).map((device) => device.name);
}
