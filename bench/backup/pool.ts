// A btrfs filesystem on a sparse loop-mounted file, as in test/integration/btrfs-backend.test.ts,
// and its release: unmount, detach the loop device, whatever state the run left it in.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { checkCommand } from '../../test/helpers/run-command.js';

export { releaseMountsAndLoops } from '../../test/helpers/loop-mounts.js';

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
