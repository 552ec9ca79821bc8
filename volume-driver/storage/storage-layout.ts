import { randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, open, readdir, rename, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError, translateError } from '../../plugins/errors/berth-error.js';
import { isValidVolumeName, validateSnapshotName, validateVolumeName } from '../volume-name.js';
import type { VolumeOptions } from '../volume-options.js';
import { REPLICATION_SNAPSHOT_ID } from './storage-backend.js';

/** What a backend does to the trees of this layout (plain directories, or btrfs subvolumes). */
export interface TreeOps {
  /** Deletes a tree the backend made; succeeds when it is already gone. */
  discard(path: string): Promise<void>;
  /** Carries what must outlive a restore from the replaced tree to its replacement (btrfs: the quota limit). */
  carryOver?(from: string, to: string): Promise<void>;
  /** Makes the renames under `volumes/` durable. */
  flush(): Promise<void>;
  /** Told about a leftover that could not be deleted; the next `prepare()` tries again. */
  warn?(message: string, error: unknown): void;
}

/**
 * The on-disk layout both backends share, under one base directory on one filesystem, so that
 * every rename between these directories is atomic:
 *
 *   volumes/<volume>                the live data, the path the engine bind-mounts
 *   snapshots/<volume>/<snapshot>   point-in-time copies, read-only
 *   staging/                        trees being built; whatever is here at start is a crash leftover
 *   trash/                          trees being deleted; emptied at start
 *   restore/<volume>/new, old       the two sides of a restore while it switches
 *   replicas/<volume>/<id>          the volume's replication chain (backends with replication only)
 *
 * Restore (the caller guarantees no container has the volume mounted):
 *   1. build the snapshot's content as `restore/<v>/new` (built elsewhere and renamed, or
 *      created atomically there): once that name exists, the new tree is complete;
 *   2. rename `volumes/<v>` → `restore/<v>/old`   ← the commit point
 *   3. rename `restore/<v>/new` → `volumes/<v>`, flush;
 *   4. discard `restore/<v>/old`, remove `restore/<v>`.
 * A crash before 2 leaves the old content live (prepare discards `new`); after 2 the restore
 * rolls forward (prepare renames `new` into place, or, if `new` is somehow gone, puts `old`
 * back), so the volume's path ends up holding either the whole old or the whole new content,
 * and nothing is deleted while it is the only copy of the volume's data.
 */
export class StorageLayout {
  readonly volumesDir: string;
  readonly snapshotsDir: string;
  readonly stagingDir: string;
  readonly trashDir: string;
  readonly restoreDir: string;
  readonly replicasDir: string;

  constructor(readonly base: string) {
    this.volumesDir = join(base, 'volumes');
    this.snapshotsDir = join(base, 'snapshots');
    this.stagingDir = join(base, 'staging');
    this.trashDir = join(base, 'trash');
    this.restoreDir = join(base, 'restore');
    this.replicasDir = join(base, 'replicas');
  }

  /** Paths come only from validated names: nothing outside the layout can be named. */
  volumePath(volume: string): string {
    return join(this.volumesDir, validateVolumeName(volume));
  }

  snapshotsOf(volume: string): string {
    return join(this.snapshotsDir, validateVolumeName(volume));
  }

  /** Names of the volume's snapshots, read from their directory only (no per-snapshot work). */
  async snapshotNames(volume: string): Promise<string[]> {
    let entries;
    try {
      entries = await readdir(this.snapshotsOf(volume), { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw translateError(error, 'ERR_STORAGE', `cannot list snapshots of volume ${volume}`);
    }
    return entries.filter((entry) => entry.isDirectory() && isValidVolumeName(entry.name)).map((entry) => entry.name);
  }

  snapshotPath(volume: string, snapshot: string): string {
    return join(this.snapshotsOf(volume), validateSnapshotName(snapshot));
  }

  restorePaths(volume: string): { dir: string; old: string; new: string } {
    const dir = join(this.restoreDir, validateVolumeName(volume));
    return { dir, old: join(dir, 'old'), new: join(dir, 'new') };
  }

  /** The directory of the volume's replication chain. */
  replicasOf(volume: string): string {
    return join(this.replicasDir, validateVolumeName(volume));
  }

  replicaPath(volume: string, id: string): string {
    return join(this.replicasOf(volume), validateReplicationSnapshotId(id));
  }

  /** Ids of the volume's chain snapshots, sorted ascending; empty when it has none. */
  async replicationSnapshotIds(volume: string): Promise<string[]> {
    let entries;
    try {
      entries = await readdir(this.replicasOf(volume), { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw translateError(error, 'ERR_STORAGE', `cannot list the chain of volume ${volume}`);
    }
    return entries
      .filter((entry) => entry.isDirectory() && REPLICATION_SNAPSHOT_ID.test(entry.name))
      .map((entry) => entry.name)
      .sort();
  }

  /** Volumes with at least one chain snapshot (a chain whose last snapshot was deleted leaves an empty directory: no chain). */
  async replicationVolumeNames(): Promise<string[]> {
    let entries;
    try {
      entries = await readdir(this.replicasDir, { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw translateError(error, 'ERR_STORAGE', 'cannot list replication chains');
    }
    const volumes: string[] = [];
    for (const entry of entries) {
      if (entry.isDirectory() && isValidVolumeName(entry.name) && (await this.replicationSnapshotIds(entry.name)).length > 0) volumes.push(entry.name);
    }
    return volumes.sort();
  }

  /** Creates replicas/ and lists what each volume's chain directory holds (for the backends' crash cleanup). */
  async chainDirectories(): Promise<Array<{ volume: string; path: string; entries: string[] }>> {
    await mkdir(this.replicasDir, { recursive: true, mode: 0o700 });
    const chains: Array<{ volume: string; path: string; entries: string[] }> = [];
    for (const volume of await readdir(this.replicasDir)) {
      if (!isValidVolumeName(volume)) continue; // not made by us: left alone
      const path = this.replicasOf(volume);
      const entries: string[] = await readdir(path).catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOTDIR') return [];
        throw error;
      });
      chains.push({ volume, path, entries });
    }
    return chains;
  }

  /** The path of chain snapshot `id`; ERR_SNAPSHOT_NOT_FOUND when it does not exist. */
  async requireReplica(volume: string, id: string): Promise<string> {
    const path = this.replicaPath(volume, id);
    if (!(await present(path))) throw new BerthError('ERR_SNAPSHOT_NOT_FOUND', `chain snapshot ${id} of volume ${volume} does not exist`);
    return path;
  }

  /** Moves the tree at `path` (the volume's `what`) into trash/ and returns where it went; undefined when it is gone already. */
  async moveToTrash(path: string, volume: string, what: string): Promise<string | undefined> {
    const trash = this.scratchPath('trash', volume);
    try {
      await rename(path, trash);
      return trash;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw translateError(error, 'ERR_STORAGE', `cannot remove ${what} of volume ${volume}`);
    }
  }

  /** A fresh path in staging/ or trash/, unique, and short enough for NAME_MAX. */
  scratchPath(area: 'staging' | 'trash', name: string): string {
    return join(area === 'staging' ? this.stagingDir : this.trashDir, `${name.slice(0, 64)}.${randomBytes(6).toString('hex')}`);
  }

  async ensureDirectories(): Promise<void> {
    for (const dir of [this.volumesDir, this.snapshotsDir, this.stagingDir, this.trashDir, this.restoreDir]) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    }
    // The volumes directory must be traversable for containers running as non-root users.
    await chmod(this.volumesDir, 0o711);
  }

  /** Empties staging/ and trash/: nothing there is anyone's only copy of data. */
  async clearScratch(ops: TreeOps): Promise<void> {
    for (const dir of [this.stagingDir, this.trashDir]) {
      for (const entry of await readdir(dir)) await ops.discard(join(dir, entry));
    }
  }

  /** Steps 2 to 4 of a restore; `restorePaths(volume).new` must hold the complete new content. */
  async switchIn(volume: string, ops: TreeOps): Promise<void> {
    const live = this.volumePath(volume);
    const { dir, old, new: fresh } = this.restorePaths(volume);
    try {
      await ops.carryOver?.(live, fresh);
      await rename(live, old);
    } catch (error) {
      await ops.discard(fresh).catch(() => undefined);
      await rmdir(dir).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', `cannot restore volume ${volume}`);
    }
    try {
      await rename(fresh, live);
    } catch (error) {
      // Not switched after all: put the old content back rather than leave the volume without data.
      await rename(old, live).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', `cannot restore volume ${volume}`);
    }
    await ops.flush();
    // The restore is done; a leftover `old` is deleted by the next prepare().
    await this.discardRestoreLeftovers(volume, ops, true);
  }

  /** Finishes or rolls back every restore a crash interrupted (see the class comment). */
  async resolveInterruptedRestores(ops: TreeOps): Promise<string[]> {
    const resolved: string[] = [];
    for (const entry of await readdir(this.restoreDir)) {
      if (!isValidVolumeName(entry)) continue; // not made by us: left alone
      await this.resolveInterruptedRestore(entry, ops);
      resolved.push(entry);
    }
    return resolved;
  }

  async resolveInterruptedRestore(volume: string, ops: TreeOps): Promise<void> {
    const live = this.volumePath(volume);
    const { dir, old, new: fresh } = this.restorePaths(volume);
    if (!(await present(dir))) return;
    try {
      if ((await present(old)) && !(await present(live))) {
        // Past the commit point: the live tree was moved aside. Finish, or put the old tree back if no new one exists.
        if (await present(fresh)) {
          await ops.carryOver?.(old, fresh);
          await rename(fresh, live);
        } else {
          await rename(old, live);
        }
        await ops.flush();
      }
    } catch (error) {
      throw translateError(error, 'ERR_STORAGE', `cannot finish the interrupted restore of volume ${volume}`);
    }
    // The live tree now holds the old or the new content; what is left is redundant.
    await this.discardRestoreLeftovers(volume, ops, false);
  }

  private async discardRestoreLeftovers(volume: string, ops: TreeOps, tolerant: boolean): Promise<void> {
    const { dir, old, new: fresh } = this.restorePaths(volume);
    try {
      await ops.discard(old);
      await ops.discard(fresh);
      await rmdir(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      if (!tolerant) throw translateError(error, 'ERR_STORAGE', `cannot delete the replaced data of volume ${volume} in ${dir}`);
      ops.warn?.(`the replaced data of volume ${volume} in ${dir} could not be deleted yet`, error);
    }
  }
}

/** Validates a chain snapshot id before it touches the filesystem. */
export function validateReplicationSnapshotId(id: string): string {
  if (!REPLICATION_SNAPSHOT_ID.test(id)) {
    throw new BerthError('ERR_INVALID_NAME', `replication snapshot id ${JSON.stringify(id)} is invalid: use [a-z0-9][a-z0-9._-]*, at most 128 characters`);
  }
  return id;
}

/** Whether a path exists (without following a final symlink). */
export async function present(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

/** Whether a volume's data directory exists; both backends answer `exists` with it. */
export async function volumeDirectoryExists(path: string, volume: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw translateError(error, 'ERR_STORAGE', `cannot inspect data of volume ${volume}`);
  }
}

/** fsync of a directory, so that renames into it survive a power loss. */
export async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes a file whole or not at all: into a temporary name beside it, synced, then renamed over `path`. */
export async function writeFileDurably(path: string, parts: readonly Buffer[]): Promise<void> {
  const temporary = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    const handle = await open(temporary, 'wx', 0o600);
    try {
      await handle.writeFile(Buffer.concat(parts));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true }).catch(() => undefined);
    throw error;
  }
}

/** Applies the uid, gid and mode options to a volume's root (`defaultMode` when no mode is given). */
export async function applyOwnership(path: string, options: VolumeOptions, defaultMode?: number): Promise<void> {
  if (options.uid !== undefined || options.gid !== undefined) {
    const stats = await lstat(path);
    await chown(path, options.uid ?? stats.uid, options.gid ?? stats.gid);
  }
  const mode = options.mode ?? defaultMode;
  if (mode !== undefined) await chmod(path, mode);
}
