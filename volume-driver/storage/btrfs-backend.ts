import { mkdir, open, readdir, readFile, realpath, rename, rm, rmdir, statfs, lstat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { BerthError, translateError } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import { formatByteSize } from '../../plugins/util/byte-size.js';
import { isValidVolumeName } from '../volume-name.js';
import type { VolumeOptions } from '../volume-options.js';
import { BtrfsReplication } from './btrfs-replication.js';
import { measureTree } from './measure-tree.js';
import { execTool, runTool, toolError } from '../../plugins/util/run-tool.js';
import type { BackendCapabilities, BackendSnapshot, StorageBackend, VolumeUsage } from './storage-backend.js';
import { applyOwnership, present, StorageLayout, syncDirectory, type TreeOps, volumeDirectoryExists } from './storage-layout.js';

/** statfs(2) f_type of btrfs. */
export const BTRFS_SUPER_MAGIC = 0x9123683e;
/** Inode number of every btrfs subvolume's root directory (and of nothing else). */
const SUBVOLUME_ROOT_INO = 256;
/** The superblock's magic, at 64 KiB + 0x40 in the device. */
const SUPERBLOCK_MAGIC = Buffer.from('_BHRfS_M', 'latin1');
const SUPERBLOCK_MAGIC_OFFSET = 0x10040;
const DEFAULT_MODE = 0o755;

export interface BtrfsPoolOptions {
  /** Pool file: created sparse and formatted when missing, never formatted when present. */
  readonly file: string;
  /** Size of a pool file made now; an existing pool keeps its size. */
  readonly sizeBytes: number;
}

export interface BtrfsBackendOptions {
  /** Data root. Without a pool it must be on btrfs and holds the layout; with one, the pool is mounted at `<root>/pool`. */
  readonly root: string;
  readonly pool?: BtrfsPoolOptions;
  readonly log?: Logger;
}

/**
 * Every volume is a btrfs subvolume `<base>/volumes/<name>`, every snapshot a read-only
 * snapshot `<base>/snapshots/<volume>/<snapshot>`: O(1) whatever the volume's size, sharing
 * extents until either side changes, and read-only in the kernel (writes fail with EROFS).
 * `<base>` is the data root when it is on btrfs, or `<root>/pool` where the agent loop-mounts
 * a pool file it created (re-mounted at start when missing, never re-formatted).
 *
 * Create and clone build the subvolume in `staging/` and rename it into place; a restore makes
 * a writable snapshot of the snapshot and switches it in by renames (StorageLayout describes
 * the sequence and the crash discipline). A read-only snapshot cannot be moved to another
 * directory (its `..` would change), so snapshots are created at their final path, which the
 * snapshot ioctl makes atomic, and deleted in place. The `size` option is a limit on the
 * subvolume's quota group; quotas are enabled on the filesystem the first time a volume asks
 * for a size. The replication chain (`replicas/<volume>/<id>`) is BtrfsReplication's.
 */
export class BtrfsBackend implements StorageBackend {
  readonly kind = 'btrfs';
  readonly capabilities: BackendCapabilities = Object.freeze({ instantSnapshots: true, sizeLimit: true });
  readonly layout: StorageLayout;
  /** Directory holding the layout: the data root, or the pool's mount point. */
  readonly base: string;
  private readonly ops: TreeOps;
  private quotaEnabled: Promise<boolean> | undefined;
  /** `btrfs subvolume show` costs a process; a snapshot's creation time never changes. */
  private readonly createdAtCache = new Map<string, string>();
  readonly replication: BtrfsReplication;

  constructor(private readonly options: BtrfsBackendOptions) {
    this.base = options.pool ? join(options.root, 'pool') : options.root;
    this.layout = new StorageLayout(this.base);
    this.ops = {
      discard: (path) => this.discard(path, `cannot delete ${path}`),
      carryOver: (from, to) => this.carryOverLimit(from, to),
      flush: () => syncDirectory(this.layout.volumesDir),
      warn: (message, error) => options.log?.warn({ err: error }, message),
    };
    this.replication = new BtrfsReplication({
      layout: this.layout,
      requireSubvolume: (volume) => this.requireSubvolume(volume),
      snapshotLive: (volume, target, label, what) => this.snapshotLive(volume, target, label, what),
      volumeFromSnapshot: (source, volume, options, what) => this.volumeFromSnapshot(source, volume, options, what),
      removeTree: (path, volume, what) => this.removeTree(path, volume, what),
      remove: (volume) => this.remove(volume),
      discard: (path, what, durable) => this.discard(path, what, durable),
    });
  }

  async prepare(): Promise<void> {
    await runTool(['btrfs', '--version'], 'the btrfs backend needs the btrfs command (package btrfs-progs)');
    if (this.options.pool) await this.ensurePool(this.options.pool);
    await this.requireBtrfs();
    try {
      await this.layout.ensureDirectories();
      this.quotaEnabled = this.readQuotaState();
      await this.quotaEnabled;
      const resolved = await this.layout.resolveInterruptedRestores(this.ops);
      if (resolved.length > 0) this.options.log?.warn({ volumes: resolved }, 'resolved restores interrupted by a crash');
      await this.layout.clearScratch(this.ops);
      await this.replication.prepare();
    } catch (error) {
      throw translateError(error, 'ERR_STORAGE', `cannot prepare the btrfs backend under ${this.base}`);
    }
  }

  async create(name: string, options: VolumeOptions): Promise<string> {
    const target = this.path(name);
    if (await this.exists(name)) {
      throw new BerthError('ERR_VOLUME_EXISTS', `data directory ${target} already exists without a volume record; move it away or remove it first`);
    }
    const what = `cannot create volume ${name}`;
    const staging = this.layout.scratchPath('staging', name);
    try {
      await runTool(['btrfs', 'subvolume', 'create', staging], what);
      await applyOwnership(staging, options, DEFAULT_MODE);
      if (options.sizeBytes !== undefined) await this.limit(staging, options.sizeBytes, what);
      await rename(staging, target);
      await syncDirectory(this.layout.volumesDir);
      return target;
    } catch (error) {
      await this.discard(staging, what).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', what);
    }
  }

  /** Leaves the volume's replication chain alone: a demoted owner keeps it (see BtrfsReplication). */
  async remove(name: string): Promise<void> {
    await this.removeTree(this.path(name), name, 'data');
    await this.removeTree(this.layout.snapshotsOf(name), name, 'snapshots');
    await this.removeTree(this.layout.restorePaths(name).dir, name, 'restore leftovers');
    this.forgetSnapshots(name);
  }

  /** Moves the tree at `path` (the volume's `what`) to trash/ and deletes it there; succeeds when it is gone. */
  private async removeTree(path: string, volume: string, what: string): Promise<void> {
    // Renaming a directory that holds read-only snapshots is allowed; moving the snapshots themselves to another directory is not.
    const trash = await this.layout.moveToTrash(path, volume, what);
    if (trash !== undefined) await this.discard(trash, `the ${what} of volume ${volume} were detached but ${trash} could not be deleted`);
  }

  path(name: string): string {
    return this.layout.volumePath(name);
  }

  exists(name: string): Promise<boolean> {
    return volumeDirectoryExists(this.path(name), name);
  }

  /**
   * Files from a tree walk; bytes from the quota group when quotas are on (what `size` is checked
   * against; as of the last transaction commit, at most ~30 s old), else allocated blocks.
   */
  async usage(name: string): Promise<VolumeUsage> {
    const path = this.path(name);
    let walked: VolumeUsage;
    try {
      walked = await measureTree(path);
    } catch (error) {
      throw translateError(error, 'ERR_STORAGE', `cannot measure volume ${name}`);
    }
    if (!(await this.quotaState()) || (await lstat(path)).ino !== SUBVOLUME_ROOT_INO) return walked;
    const qgroup = await this.qgroup(path, `cannot measure volume ${name}`);
    return qgroup ? { usedBytes: qgroup.referenced, files: walked.files } : walked;
  }

  async listNames(): Promise<string[]> {
    const entries = await readdir(this.layout.volumesDir, { withFileTypes: true }).catch(() => []);
    return entries.filter((entry) => entry.isDirectory() && isValidVolumeName(entry.name)).map((entry) => entry.name);
  }

  async createSnapshot(volume: string, snapshot: string): Promise<BackendSnapshot> {
    await this.snapshotLive(volume, this.layout.snapshotPath(volume, snapshot), `snapshot ${volume}@${snapshot}`, `cannot snapshot volume ${volume} as ${snapshot}`);
    return this.describeSnapshot(volume, snapshot);
  }

  snapshotNames(volume: string): Promise<string[]> {
    return this.layout.snapshotNames(volume);
  }

  async listSnapshots(volume: string): Promise<BackendSnapshot[]> {
    const snapshots: BackendSnapshot[] = [];
    for (const name of await this.layout.snapshotNames(volume)) {
      const described = await this.describeSnapshot(volume, name).catch((error: unknown) => {
        if (error instanceof BerthError && error.code === 'ERR_SNAPSHOT_NOT_FOUND') return undefined; // deleted meanwhile
        throw error;
      });
      if (described) snapshots.push(described);
    }
    return snapshots.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
  }

  async deleteSnapshot(volume: string, snapshot: string): Promise<void> {
    const path = this.layout.snapshotPath(volume, snapshot);
    this.createdAtCache.delete(path);
    await this.discard(path, `cannot delete snapshot ${snapshot} of volume ${volume}`);
  }

  /** The exact sequence and what a crash leaves are described on StorageLayout. */
  async restoreSnapshot(volume: string, snapshot: string): Promise<void> {
    const source = await this.requireSnapshot(volume, snapshot);
    // A leftover of an earlier crash must never be mistaken for this restore's new tree.
    await this.layout.resolveInterruptedRestore(volume, this.ops);
    await this.requireSubvolume(volume);
    const what = `cannot restore volume ${volume} from snapshot ${snapshot}`;
    const { dir, new: fresh } = this.layout.restorePaths(volume);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // A writable snapshot of the snapshot, created atomically at its final name.
      await runTool(['btrfs', 'subvolume', 'snapshot', source, fresh], what);
    } catch (error) {
      await rmdir(dir).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', what);
    }
    await this.layout.switchIn(volume, this.ops);
  }

  async cloneSnapshot(volume: string, snapshot: string, newVolume: string, options: VolumeOptions): Promise<string> {
    const source = await this.requireSnapshot(volume, snapshot);
    return this.volumeFromSnapshot(source, newVolume, options, `cannot create volume ${newVolume} from snapshot ${snapshot} of volume ${volume}`);
  }

  /** A read-only snapshot of the volume's live subvolume at `target` (labelled `label` in errors). */
  private async snapshotLive(volume: string, target: string, label: string, what: string): Promise<void> {
    await this.requireSubvolume(volume);
    if (await present(target)) throw new BerthError('ERR_SNAPSHOT_EXISTS', `${label} already exists`);
    try {
      await mkdir(dirname(target), { recursive: true, mode: 0o700 });
    } catch (error) {
      throw translateError(error, 'ERR_STORAGE', what);
    }
    // The ioctl creates the snapshot whole or not at all, and commits the transaction.
    const command = ['btrfs', 'subvolume', 'snapshot', '-r', this.path(volume), target];
    const made = await execTool(command, what);
    if (made.code !== 0) {
      if (/File exists/i.test(made.stderr)) throw new BerthError('ERR_SNAPSHOT_EXISTS', `${label} already exists`);
      throw toolError(command, what, made);
    }
  }

  /** Makes `newVolume`'s live data a writable snapshot of the read-only tree `source`, with the options' ownership and size. */
  private async volumeFromSnapshot(source: string, newVolume: string, options: VolumeOptions, what: string): Promise<string> {
    const target = this.path(newVolume);
    if (await this.exists(newVolume)) throw new BerthError('ERR_VOLUME_EXISTS', `data directory ${target} of volume ${newVolume} already exists`);
    const staging = this.layout.scratchPath('staging', newVolume);
    try {
      await runTool(['btrfs', 'subvolume', 'snapshot', source, staging], what);
      await applyOwnership(staging, options);
      // A snapshot inherits its source's quota limit; the clone gets its own options' limit, or none.
      if (options.sizeBytes !== undefined) await this.limit(staging, options.sizeBytes, what);
      else if (await this.quotaState()) await runTool(['btrfs', 'qgroup', 'limit', 'none', staging], what);
      if (await this.exists(newVolume)) throw new BerthError('ERR_VOLUME_EXISTS', `data directory ${target} of volume ${newVolume} already exists`);
      await rename(staging, target);
      await syncDirectory(this.layout.volumesDir);
      return target;
    } catch (error) {
      await this.discard(staging, what).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', what);
    }
  }

  private async requireBtrfs(): Promise<void> {
    let type: number;
    try {
      type = (await statfs(this.base)).type;
    } catch (error) {
      throw translateError(error, 'ERR_STORAGE', `cannot inspect the btrfs backend's directory ${this.base}`);
    }
    if (type !== BTRFS_SUPER_MAGIC) {
      throw new BerthError('ERR_INVALID_CONFIG', `${this.base} is not on a btrfs filesystem; use --btrfs-pool FILE or put the data root on btrfs`);
    }
  }

  private async requireSubvolume(volume: string): Promise<void> {
    const path = this.path(volume);
    let stats;
    try {
      stats = await lstat(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new BerthError('ERR_VOLUME_NOT_FOUND', `volume ${volume} has no data at ${path}`);
      throw translateError(error, 'ERR_STORAGE', `cannot inspect data of volume ${volume}`);
    }
    if (!stats.isDirectory() || stats.ino !== SUBVOLUME_ROOT_INO) {
      throw new BerthError('ERR_STORAGE', `data of volume ${volume} at ${path} is a plain directory, not a btrfs subvolume (made by the dir backend?); it cannot be snapshotted`);
    }
  }

  private async requireSnapshot(volume: string, snapshot: string): Promise<string> {
    const path = this.layout.snapshotPath(volume, snapshot);
    if (!(await present(path))) throw new BerthError('ERR_SNAPSHOT_NOT_FOUND', `snapshot ${volume}@${snapshot} does not exist`);
    return path;
  }

  private async describeSnapshot(volume: string, snapshot: string): Promise<BackendSnapshot> {
    const path = this.layout.snapshotPath(volume, snapshot);
    let createdAt = this.createdAtCache.get(path);
    if (createdAt === undefined) {
      // The snapshot's root inode is a copy of the volume's, so its times are the volume's; the subvolume's own creation time is not.
      const shown = await execTool(['btrfs', 'subvolume', 'show', path], `cannot inspect snapshot ${volume}@${snapshot}`);
      if (shown.code !== 0) {
        if (!(await present(path))) throw new BerthError('ERR_SNAPSHOT_NOT_FOUND', `snapshot ${volume}@${snapshot} does not exist`);
        throw toolError(['btrfs', 'subvolume', 'show', path], `cannot inspect snapshot ${volume}@${snapshot}`, shown);
      }
      const match = /Creation time:\s*(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d) ([+-]\d\d)(\d\d)/.exec(shown.stdout);
      if (!match) throw new BerthError('ERR_STORAGE', `cannot read the creation time of snapshot ${volume}@${snapshot} from btrfs subvolume show`);
      createdAt = new Date(`${match[1]}T${match[2]}${match[3]}:${match[4]}`).toISOString();
      this.createdAtCache.set(path, createdAt);
    }
    return { volume, name: snapshot, createdAt, path };
  }

  private forgetSnapshots(volume: string): void {
    const prefix = `${this.layout.snapshotsOf(volume)}/`;
    for (const path of this.createdAtCache.keys()) if (path.startsWith(prefix)) this.createdAtCache.delete(path);
  }

  /**
   * Deletes a tree that may be a subvolume, a read-only snapshot, or a plain directory holding
   * some (a volume's snapshots directory moved to trash): subvolumes with `btrfs subvolume delete`
   * (instant whatever their size, and committed so a crash cannot bring them back), plain
   * directories entry by entry (rm -r would empty a subvolume inside file by file, and fails
   * on read-only ones), anything else with unlink.
   */
  private async discard(path: string, what: string, durable = true): Promise<void> {
    try {
      const stats = await lstat(path);
      if (!stats.isDirectory()) return await rm(path, { force: true });
      if (stats.ino === SUBVOLUME_ROOT_INO) return await this.deleteSubvolume(path, what, durable);
      for (const entry of await readdir(path)) await this.discard(join(path, entry), what, durable);
      await rmdir(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw translateError(error, 'ERR_STORAGE', what);
    }
  }

  private async deleteSubvolume(path: string, what: string, durable = true): Promise<void> {
    const command = ['btrfs', 'subvolume', 'delete', ...(durable ? ['--commit-after'] : []), path];
    let result = await execTool(command, what);
    if (result.code !== 0 && /not empty/i.test(result.stderr)) {
      // Subvolumes nested inside (made by a container): delete those first.
      for (const nested of await nestedSubvolumes(path)) await this.deleteSubvolume(nested, what, durable);
      result = await execTool(command, what);
    }
    if (result.code !== 0 && (await present(path))) throw toolError(command, what, result);
  }

  private quotaState(): Promise<boolean> {
    this.quotaEnabled ??= this.readQuotaState();
    return this.quotaEnabled;
  }

  private async readQuotaState(): Promise<boolean> {
    const command = ['btrfs', 'qgroup', 'show', this.base];
    const result = await execTool(command, `cannot read the quota state of ${this.base}`);
    if (result.code === 0) return true;
    if (/quotas not enabled/i.test(result.stderr)) return false;
    throw toolError(command, `cannot read the quota state of ${this.base}`, result);
  }

  private async ensureQuota(what: string): Promise<void> {
    if (await this.quotaState()) return;
    this.quotaEnabled = (async () => {
      this.options.log?.warn({ path: this.base }, 'enabling btrfs quotas on this filesystem for the size option');
      await runTool(['btrfs', 'quota', 'enable', this.base], what);
      await runTool(['btrfs', 'quota', 'rescan', '-W', this.base], what);
      return true;
    })();
    try {
      await this.quotaEnabled;
    } catch (error) {
      this.quotaEnabled = undefined;
      throw error;
    }
  }

  private async limit(subvolume: string, bytes: number, what: string): Promise<void> {
    await this.ensureQuota(what);
    await runTool(['btrfs', 'qgroup', 'limit', String(bytes), subvolume], `${what}: cannot limit it to ${formatByteSize(bytes)}`);
  }

  /** The qgroup of a subvolume, or undefined when quotas are off. */
  private async qgroup(subvolume: string, what: string): Promise<{ referenced: number; maxReferenced: number | undefined } | undefined> {
    const command = ['btrfs', 'qgroup', 'show', '--raw', '-r', '-f', subvolume];
    const result = await execTool(command, what);
    if (result.code !== 0) {
      if (/quotas not enabled/i.test(result.stderr)) {
        this.quotaEnabled = Promise.resolve(false);
        return undefined;
      }
      throw toolError(command, what, result);
    }
    const line = result.stdout.split('\n').find((candidate) => /^\d+\/\d+\s/.test(candidate.trim()));
    const [, referenced, , maxReferenced] = line?.trim().split(/\s+/) ?? [];
    if (referenced === undefined || !/^\d+$/.test(referenced)) throw new BerthError('ERR_STORAGE', `${what}: unexpected output of ${command.join(' ')}: ${result.stdout.trim()}`);
    return { referenced: Number(referenced), maxReferenced: maxReferenced !== undefined && /^\d+$/.test(maxReferenced) ? Number(maxReferenced) : undefined };
  }

  /**
   * A restored tree is a new subvolume whose quota group inherited the snapshot's limit, which
   * may be older than the volume's: give it the replaced tree's limit (or none).
   */
  private async carryOverLimit(from: string, to: string): Promise<void> {
    if (!(await this.quotaState())) return;
    if ((await lstat(from)).ino !== SUBVOLUME_ROOT_INO) return;
    const what = `cannot carry the size limit of ${from} over to ${to}`;
    const qgroup = await this.qgroup(from, what);
    if (qgroup) await runTool(['btrfs', 'qgroup', 'limit', qgroup.maxReferenced === undefined ? 'none' : String(qgroup.maxReferenced), to], what);
  }

  /** Mounts the pool at `<root>/pool`, creating and formatting the file first only when it does not exist. */
  private async ensurePool(pool: BtrfsPoolOptions): Promise<void> {
    const mountpoint = this.base;
    const what = `cannot mount the btrfs pool ${pool.file} at ${mountpoint}`;
    try {
      await mkdir(mountpoint, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw translateError(error, 'ERR_STORAGE', what);
    }
    const mounted = await mountAt(mountpoint);
    if (mounted) {
      if (mounted.fsType === 'btrfs' && (await backedBy(mounted.source, pool.file))) return;
      throw new BerthError('ERR_STORAGE', `${what}: ${mounted.source} (${mounted.fsType}) is mounted there instead; unmount it or choose another --root`);
    }
    if (!(await present(pool.file))) {
      await this.createPoolFile(pool);
    } else if (!(await holdsBtrfs(pool.file))) {
      throw new BerthError('ERR_STORAGE', `${what}: the file exists but holds no btrfs filesystem; refusing to format it (move it away or choose another --btrfs-pool)`);
    }
    await runTool(['mount', '-o', 'loop', pool.file, mountpoint], what);
    this.options.log?.info({ pool: pool.file, mountpoint }, 'btrfs pool mounted');
  }

  /** Built under a temporary name and renamed: a pool file that exists has always been formatted. */
  private async createPoolFile(pool: BtrfsPoolOptions): Promise<void> {
    const what = `cannot create the btrfs pool ${pool.file}`;
    const partial = join(dirname(pool.file), `.${basename(pool.file)}.partial`);
    try {
      await mkdir(dirname(pool.file), { recursive: true, mode: 0o700 });
      await rm(partial, { force: true });
      const handle = await open(partial, 'wx', 0o600);
      try {
        await handle.truncate(pool.sizeBytes); // sparse: blocks are allocated as btrfs writes them
      } finally {
        await handle.close();
      }
      await runTool(['mkfs.btrfs', '-q', '-L', 'berth-pool', partial], what);
      await rename(partial, pool.file);
      await syncDirectory(dirname(pool.file));
    } catch (error) {
      await rm(partial, { force: true }).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', what);
    }
    this.options.log?.info({ pool: pool.file, size: formatByteSize(pool.sizeBytes) }, 'btrfs pool created');
  }
}

/** Whether `path`'s filesystem is btrfs (false when it does not exist). */
export async function isOnBtrfs(path: string): Promise<boolean> {
  try {
    return (await statfs(path)).type === BTRFS_SUPER_MAGIC;
  } catch {
    return false;
  }
}

async function holdsBtrfs(file: string): Promise<boolean> {
  const handle = await open(file, 'r');
  try {
    const magic = Buffer.alloc(SUPERBLOCK_MAGIC.length);
    const { bytesRead } = await handle.read(magic, 0, magic.length, SUPERBLOCK_MAGIC_OFFSET);
    return bytesRead === magic.length && magic.equals(SUPERBLOCK_MAGIC);
  } finally {
    await handle.close();
  }
}

interface MountInfo {
  readonly fsType: string;
  readonly source: string;
}

/** The topmost mount at exactly `path` in this process's mount namespace. */
async function mountAt(path: string): Promise<MountInfo | undefined> {
  const target = await realpath(path);
  let found: MountInfo | undefined;
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const [before, after] = line.split(' - ');
    if (before === undefined || after === undefined) continue;
    const mountPoint = unescapeMountinfo(before.split(' ')[4] ?? '');
    const [fsType = '', source = ''] = after.split(' ');
    if (mountPoint === target) found = { fsType, source: unescapeMountinfo(source) };
  }
  return found;
}

/** Whether `device` is a loop device backed by `file`. */
async function backedBy(device: string, file: string): Promise<boolean> {
  const loop = /^\/dev\/(loop\d+)$/.exec(device)?.[1];
  if (loop === undefined) return false;
  try {
    const backing = (await readFile(`/sys/block/${loop}/loop/backing_file`, 'utf8')).trim();
    return backing === (await realpath(file));
  } catch {
    return false;
  }
}

function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Roots of subvolumes nested anywhere below `root` (not descending into them). */
async function nestedSubvolumes(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const path = join(dir, entry.name);
      if ((await lstat(path)).ino === SUBVOLUME_ROOT_INO) found.push(path);
      else await walk(path);
    }
  };
  await walk(root);
  return found;
}
