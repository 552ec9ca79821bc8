import { randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, opendir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError, translateError } from '../../plugins/errors/berth-error.js';
import { isValidVolumeName } from '../volume-name.js';
import type { VolumeOptions } from '../volume-options.js';
import type { StorageBackend, VolumeUsage } from './storage-backend.js';

const DEFAULT_MODE = 0o755;

/**
 * Plain directories on any filesystem: `<root>/volumes/<name>`. A new volume is built in
 * `staging/` and renamed into place (rename is atomic within one filesystem); a removed one
 * is renamed into `trash/` first, so a crash never leaves a half-deleted volume under its name.
 */
export class DirBackend implements StorageBackend {
  readonly kind = 'dir';
  private readonly volumesDir: string;
  private readonly stagingDir: string;
  private readonly trashDir: string;

  constructor(root: string) {
    this.volumesDir = join(root, 'volumes');
    this.stagingDir = join(root, 'staging');
    this.trashDir = join(root, 'trash');
  }

  async prepare(): Promise<void> {
    try {
      for (const dir of [this.volumesDir, this.stagingDir, this.trashDir]) await mkdir(dir, { recursive: true, mode: 0o700 });
      // The volumes directory must be traversable for containers running as non-root users.
      await chmod(this.volumesDir, 0o711);
      for (const dir of [this.stagingDir, this.trashDir]) {
        for (const entry of await readdir(dir)) await rm(join(dir, entry), { recursive: true, force: true });
      }
    } catch (error) {
      throw translateError(error, 'ERR_STORAGE', `cannot prepare the dir backend under ${this.volumesDir}`);
    }
  }

  async create(name: string, options: VolumeOptions): Promise<string> {
    const target = this.path(name);
    if (await this.exists(name)) {
      throw new BerthError('ERR_VOLUME_EXISTS', `data directory ${target} already exists without a volume record; move it away or remove it first`);
    }
    const staging = join(this.stagingDir, scratchName(name));
    try {
      await mkdir(staging, { mode: 0o700 });
      if (options.uid !== undefined || options.gid !== undefined) await chown(staging, options.uid ?? 0, options.gid ?? 0);
      await chmod(staging, options.mode ?? DEFAULT_MODE);
      await rename(staging, target);
      return target;
    } catch (error) {
      await rm(staging, { recursive: true, force: true }).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', `cannot create data directory for volume ${name}`);
    }
  }

  async remove(name: string): Promise<void> {
    const trash = join(this.trashDir, scratchName(name));
    try {
      await rename(this.path(name), trash);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw translateError(error, 'ERR_STORAGE', `cannot remove data of volume ${name}`);
    }
    await rm(trash, { recursive: true, force: true }).catch((error: unknown) => {
      throw translateError(error, 'ERR_STORAGE', `volume ${name} was detached but its data in ${trash} could not be deleted`);
    });
  }

  path(name: string): string {
    return join(this.volumesDir, name);
  }

  async exists(name: string): Promise<boolean> {
    try {
      return (await lstat(this.path(name))).isDirectory();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw translateError(error, 'ERR_STORAGE', `cannot inspect data of volume ${name}`);
    }
  }

  async usage(name: string): Promise<VolumeUsage> {
    const seen = new Set<string>();
    let usedBytes = 0;
    let files = 0;
    const walk = async (dir: string): Promise<void> => {
      const handle = await opendir(dir);
      for await (const entry of handle) {
        const path = join(dir, entry.name);
        const stats = await lstat(path).catch(() => undefined);
        if (!stats) continue; // removed while walking
        const inode = `${stats.dev}:${stats.ino}`;
        if (seen.has(inode)) continue;
        seen.add(inode);
        usedBytes += stats.blocks * 512;
        files++;
        if (stats.isDirectory()) await walk(path);
      }
    };
    try {
      const root = await lstat(this.path(name));
      usedBytes += root.blocks * 512;
      await walk(this.path(name));
    } catch (error) {
      throw translateError(error, 'ERR_STORAGE', `cannot measure volume ${name}`);
    }
    return { usedBytes, files };
  }

  async listNames(): Promise<string[]> {
    const entries = await readdir(this.volumesDir, { withFileTypes: true }).catch(() => []);
    return entries.filter((entry) => entry.isDirectory() && isValidVolumeName(entry.name)).map((entry) => entry.name);
  }
}

/** Unique, and short enough for NAME_MAX even for a 255-byte volume name. */
function scratchName(name: string): string {
  return `${name.slice(0, 64)}.${randomBytes(6).toString('hex')}`;
}
