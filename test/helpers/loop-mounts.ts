// Release of loop-mounted filesystems a test or benchmark made (btrfs pools on sparse files):
// unmount, detach the loop device, whatever state the run left them in.
import { mountsUnder } from './mounts.js';
import { runCommand } from './run-command.js';

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

/** Loop devices whose backing file is under `dir`. */
export async function loopDevicesUnder(dir: string): Promise<string[]> {
  const listed = await runCommand(['losetup', '--list', '--json', '--output', 'NAME,BACK-FILE']).catch(() => undefined);
  if (listed?.code !== 0) return [];
  const parsed = JSON.parse(listed.stdout || '{"loopdevices":[]}') as { loopdevices: Array<{ name: string; 'back-file': string | null }> };
  return parsed.loopdevices.filter((device) => (device['back-file'] ?? '').startsWith(`${dir}/`)).map((device) => device.name);
}

/** Releases what `releaseMountsAndLoops` does under a temporary directory, then deletes the directory unless something was left; returns what was left. */
export async function disposeWithMounts(temp: { path: string; dispose(): Promise<void> }): Promise<string[]> {
  const problems = await releaseMountsAndLoops(temp.path);
  if (problems.length === 0) await temp.dispose();
  return problems;
}
