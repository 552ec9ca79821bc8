import { lstat, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { BerthError, translateError } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import { isValidVolumeName } from '../volume-name.js';
import type { VolumeOptions } from '../volume-options.js';
import { measureTree } from './measure-tree.js';
import { runTool } from '../../plugins/util/run-tool.js';
import { copyTree } from './copy-tree.js';
import { DirReplication } from './dir-replication.js';
import type { BackendCapabilities, BackendSnapshot, StorageBackend, VolumeUsage } from './storage-backend.js';
import { applyOwnership, present, StorageLayout, syncDirectory, type TreeOps, volumeDirectoryExists } from './storage-layout.js';

const DEFAULT_MODE = 0o755;

export interface DirBackendOptions {
  /** Told about leftovers that could not be deleted (they are retried at the next start). */
  readonly log?: Logger;
}

/**
 * Plain directories on any filesystem, in the layout of StorageLayout: `<root>/volumes/<name>`.
 * A new volume, snapshot or clone is built in `staging/` and renamed into place (rename is atomic
 * within one filesystem); a removed one is renamed into `trash/` first, so a crash never leaves a
 * half-built or half-deleted tree under a name. Snapshots are full copies (`cp -a`, sharing
 * extents where the filesystem has reflinks), so they cost time and space in proportion to the
 * volume, and they are read-only by convention only: nothing in the kernel stops a root process
 * from writing into `snapshots/`. A snapshot taken while a container writes is not
 * point-in-time consistent; the services above take snapshots under the volume's lock.
 * The replication chain (`replicas/<volume>/<id>`, shipped as block-level diffs) is DirReplication's.
 */
export class DirBackend implements StorageBackend {
  readonly kind = 'dir';
  readonly capabilities: BackendCapabilities = Object.freeze({ instantSnapshots: false, sizeLimit: false });
  readonly layout: StorageLayout;
  private readonly ops: TreeOps;
  private readonly log: Logger | undefined;
  readonly replication: DirReplication;

  constructor(root: string, options: DirBackendOptions = {}) {
    this.layout = new StorageLayout(root);
    const log = options.log;
    this.log = log;
    this.ops = {
      discard: (path) => rm(path, { recursive: true, force: true }),
      flush: () => syncDirectory(this.layout.volumesDir),
      warn: (message, error) => log?.warn({ err: error }, message),
    };
    this.replication = new DirReplication({
      layout: this.layout,
      log,
      requireVolume: (volume) => this.requireVolume(volume),
      remove: (volume) => this.remove(volume),
      removeTree: (path, volume, what) => this.removeTree(path, volume, what),
      volumeFromTree: (source, volume, volumeOptions, what, prepared) => this.volumeFromTree(source, volume, volumeOptions, what, prepared),
    });
  }

  async prepare(): Promise<void> {
    try {
      await this.layout.ensureDirectories();
      const resolved = await this.layout.resolveInterruptedRestores(this.ops);
      if (resolved.length > 0) this.log?.warn({ volumes: resolved }, 'resolved restores interrupted by a crash');
      await this.layout.clearScratch(this.ops);
      await this.replication.prepare();
    } catch (error) {
      throw translateError(error, 'ERR_STORAGE', `cannot prepare the dir backend under ${this.layout.base}`);
    }
  }

  async create(name: string, options: VolumeOptions): Promise<string> {
    refuseSize(name, options);
    const target = this.path(name);
    if (await this.exists(name)) {
      throw new BerthError('ERR_VOLUME_EXISTS', `data directory ${target} already exists without a volume record; move it away or remove it first`);
    }
    const staging = this.layout.scratchPath('staging', name);
    try {
      await mkdir(staging, { mode: 0o700 });
      await applyOwnership(staging, options, DEFAULT_MODE);
      await rename(staging, target);
      return target;
    } catch (error) {
      await rm(staging, { recursive: true, force: true }).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', `cannot create data directory for volume ${name}`);
    }
  }

  /** Leaves the volume's replication chain alone: a demoted owner keeps it (see DirReplication). */
  async remove(name: string): Promise<void> {
    await this.removeTree(this.path(name), name, 'data');
    await this.removeTree(this.layout.snapshotsOf(name), name, 'snapshots');
    await this.removeTree(this.layout.restorePaths(name).dir, name, 'restore leftovers');
  }

  /** Moves the tree at `path` (the volume's `what`) to trash/ and deletes it there; succeeds when it is gone. */
  private async removeTree(path: string, volume: string, what: string): Promise<void> {
    const trash = await this.layout.moveToTrash(path, volume, what);
    if (trash === undefined) return;
    await rm(trash, { recursive: true, force: true }).catch((error: unknown) => {
      throw translateError(error, 'ERR_STORAGE', `the ${what} of volume ${volume} were detached but ${trash} could not be deleted`);
    });
  }

  path(name: string): string {
    return this.layout.volumePath(name);
  }

  exists(name: string): Promise<boolean> {
    return volumeDirectoryExists(this.path(name), name);
  }

  async usage(name: string): Promise<VolumeUsage> {
    try {
      return await measureTree(this.path(name));
    } catch (error) {
      throw translateError(error, 'ERR_STORAGE', `cannot measure volume ${name}`);
    }
  }

  async listNames(): Promise<string[]> {
    const entries = await readdir(this.layout.volumesDir, { withFileTypes: true }).catch(() => []);
    return entries.filter((entry) => entry.isDirectory() && isValidVolumeName(entry.name)).map((entry) => entry.name);
  }

  async createSnapshot(volume: string, snapshot: string): Promise<BackendSnapshot> {
    const target = this.layout.snapshotPath(volume, snapshot);
    await this.requireVolume(volume);
    if (await present(target)) throw snapshotExists(volume, snapshot);
    const staging = this.layout.scratchPath('staging', snapshot);
    try {
      await copyTree(this.path(volume), staging, `cannot snapshot volume ${volume}`);
      await runTool(['sync', '-f', staging], `cannot snapshot volume ${volume}`);
      await mkdir(dirname(target), { recursive: true, mode: 0o700 });
      // rename(2) would silently replace an empty directory: check again right before it.
      if (await present(target)) throw snapshotExists(volume, snapshot);
      await rename(staging, target);
      await syncDirectory(dirname(target));
    } catch (error) {
      await rm(staging, { recursive: true, force: true }).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', `cannot snapshot volume ${volume} as ${snapshot}`);
    }
    return this.describeSnapshot(volume, snapshot);
  }

  snapshotNames(volume: string): Promise<string[]> {
    return this.layout.snapshotNames(volume);
  }

  async listSnapshots(volume: string): Promise<BackendSnapshot[]> {
    const snapshots: BackendSnapshot[] = [];
    for (const name of await this.layout.snapshotNames(volume)) {
      snapshots.push(await this.describeSnapshot(volume, name));
    }
    return snapshots.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
  }

  async deleteSnapshot(volume: string, snapshot: string): Promise<void> {
    const path = this.layout.snapshotPath(volume, snapshot);
    const trash = this.layout.scratchPath('trash', snapshot);
    try {
      await rename(path, trash);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw translateError(error, 'ERR_STORAGE', `cannot delete snapshot ${snapshot} of volume ${volume}`);
    }
    await rm(trash, { recursive: true, force: true }).catch((error: unknown) => {
      throw translateError(error, 'ERR_STORAGE', `snapshot ${snapshot} of volume ${volume} was detached but ${trash} could not be deleted`);
    });
  }

  /** The exact sequence and what a crash leaves are described on StorageLayout. */
  async restoreSnapshot(volume: string, snapshot: string): Promise<void> {
    const source = await this.requireSnapshot(volume, snapshot);
    // A leftover of an earlier crash must never be mistaken for this restore's new tree.
    await this.layout.resolveInterruptedRestore(volume, this.ops);
    await this.requireVolume(volume);
    const what = `cannot restore volume ${volume} from snapshot ${snapshot}`;
    const staging = this.layout.scratchPath('staging', volume);
    const { dir, new: fresh } = this.layout.restorePaths(volume);
    try {
      await copyTree(source, staging, what);
      await runTool(['sync', '-f', staging], what);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await rename(staging, fresh);
    } catch (error) {
      await rm(staging, { recursive: true, force: true }).catch(() => undefined);
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', what);
    }
    await this.layout.switchIn(volume, this.ops);
  }

  async cloneSnapshot(volume: string, snapshot: string, newVolume: string, options: VolumeOptions): Promise<string> {
    refuseSize(newVolume, options);
    const source = await this.requireSnapshot(volume, snapshot);
    return this.volumeFromTree(source, newVolume, options, `cannot create volume ${newVolume} from snapshot ${snapshot} of volume ${volume}`);
  }

  /**
   * Makes `newVolume`'s live data a copy of the tree `source` with the options' ownership;
   * `prepared` sees the complete copy right before it is renamed into place.
   */
  private async volumeFromTree(source: string, newVolume: string, options: VolumeOptions, what: string, prepared?: (staging: string) => Promise<void>): Promise<string> {
    refuseSize(newVolume, options);
    const target = this.path(newVolume);
    if (await this.exists(newVolume)) throw new BerthError('ERR_VOLUME_EXISTS', `data directory ${target} of volume ${newVolume} already exists`);
    const staging = this.layout.scratchPath('staging', newVolume);
    try {
      await copyTree(source, staging, what);
      await applyOwnership(staging, options);
      await runTool(['sync', '-f', staging], what);
      await prepared?.(staging);
      if (await this.exists(newVolume)) throw new BerthError('ERR_VOLUME_EXISTS', `data directory ${target} of volume ${newVolume} already exists`);
      await rename(staging, target);
      await syncDirectory(this.layout.volumesDir);
      return target;
    } catch (error) {
      await rm(staging, { recursive: true, force: true }).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', what);
    }
  }

  private async requireVolume(volume: string): Promise<void> {
    if (!(await this.exists(volume))) throw new BerthError('ERR_VOLUME_NOT_FOUND', `volume ${volume} has no data at ${this.path(volume)}`);
  }

  private async requireSnapshot(volume: string, snapshot: string): Promise<string> {
    const path = this.layout.snapshotPath(volume, snapshot);
    if (!(await present(path))) throw new BerthError('ERR_SNAPSHOT_NOT_FOUND', `snapshot ${volume}@${snapshot} does not exist`);
    return path;
  }

  private async describeSnapshot(volume: string, snapshot: string): Promise<BackendSnapshot> {
    const path = this.layout.snapshotPath(volume, snapshot);
    try {
      // The snapshot's root was created by the copy, so its birth time is the snapshot's time.
      const stats = await lstat(path);
      const createdAt = (stats.birthtimeMs > 0 ? stats.birthtime : stats.ctime).toISOString();
      return { volume, name: snapshot, createdAt, path };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new BerthError('ERR_SNAPSHOT_NOT_FOUND', `snapshot ${volume}@${snapshot} does not exist`);
      throw translateError(error, 'ERR_STORAGE', `cannot inspect snapshot ${volume}@${snapshot}`);
    }
  }
}

function refuseSize(name: string, options: VolumeOptions): void {
  if (options.sizeBytes !== undefined) {
    throw new BerthError('ERR_INVALID_OPTION', `option size cannot be enforced by the dir backend (volume ${name}); use the btrfs backend (--backend btrfs with a btrfs data root or --btrfs-pool)`);
  }
}

function snapshotExists(volume: string, snapshot: string): BerthError {
  return new BerthError('ERR_SNAPSHOT_EXISTS', `snapshot ${volume}@${snapshot} already exists`);
}
