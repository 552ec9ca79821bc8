import { BerthError, errorMessage } from '../plugins/errors/berth-error.js';
import type { Logger } from '../plugins/logging/logger.js';
import { KeyedMutex } from '../plugins/util/keyed-mutex.js';
import { runTool } from '../plugins/util/run-tool.js';
import type { MountReconciler } from './mount-reconciler.js';
import type { StorageBackend } from './storage/storage-backend.js';
import type { UsageTracker } from './usage-tracker.js';
import { validateVolumeName } from './volume-name.js';
import { parseVolumeOptions, type VolumeOptions } from './volume-options.js';
import { mountCount, type VolumeRecord } from './volume-record.js';
import type { VolumeRepository } from './volume-repository.js';

export interface VolumeView {
  readonly name: string;
  readonly mountpoint: string;
  readonly createdAt: string;
  readonly backend: string;
  readonly options: Readonly<Record<string, string>>;
  readonly mountCount: number;
  readonly mounts: Readonly<Record<string, number>>;
  readonly usedBytes: number | null;
  readonly usageMeasuredAt: string | null;
  /** Number of snapshots; only on single-volume reads (null when the backend could not say). */
  readonly snapshots?: number | null;
  /** Owner, epoch and replicas with their lag, for volumes kept on a shared store. */
  readonly replication?: Readonly<Record<string, unknown>>;
}

export interface VolumeServiceDeps {
  readonly repository: VolumeRepository;
  readonly backend: StorageBackend;
  readonly usage: UsageTracker;
  /** Absent when no engine is configured (unit tests); then stale mounts are never released. */
  readonly reconciler?: MountReconciler;
  readonly log: Logger;
  /** How long Remove waits for the engine when checking whether recorded mounts are stale. */
  readonly engineCheckTimeoutMs?: number;
  /** Per-volume locks, shared with every service that changes a volume's data (snapshots, restore). */
  readonly locks?: KeyedMutex;
  /** Restores the backup at `source` (a backup's directory) into the empty directory `destination`. */
  readonly restoreBackup?: (source: string, keyPath: string | undefined, destination: string, log: Logger) => Promise<void>;
  /** Why `replicas` above 1 cannot be honoured here (absent: the caller handles replication). */
  readonly replicasUnavailable?: string;
}

/**
 * Volume lifecycle. Every operation on one volume runs under that volume's lock; every state
 * change is written to the store before it is acknowledged, so a crash at any point leaves
 * either the old or the new state (see VolumeRecord for the in-flight markers).
 */
export class VolumeService {
  private readonly locks: KeyedMutex;
  private mountpointCache: { revision: number; volumes: ReadonlyArray<{ name: string; mountpoint: string }> } | undefined;

  constructor(private readonly deps: VolumeServiceDeps) {
    this.locks = deps.locks ?? new KeyedMutex();
  }

  async create(name: string, rawOptions: Readonly<Record<string, string>>, log: Logger = this.deps.log): Promise<VolumeView> {
    validateVolumeName(name);
    const options = parseVolumeOptions(rawOptions);
    this.checkSupported(options);
    const fromBackup = options.fromBackup;
    const restore = this.deps.restoreBackup;
    if (fromBackup && !restore) throw new BerthError('ERR_INVALID_OPTION', 'option from-backup is not available in this agent');
    const fill = fromBackup && restore ? (path: string) => restore(fromBackup, options.backupKey, path, log) : undefined;
    return this.createLocked(name, rawOptions, options, fill, log);
  }

  /**
   * Creates a volume whose content `fill` writes (a restore). The volume stays invisible to the
   * engine until `fill` succeeds; if it fails, or the agent dies meanwhile, it is rolled back.
   */
  async createFilled(name: string, rawOptions: Readonly<Record<string, string>>, fill: (path: string) => Promise<void>, log: Logger = this.deps.log): Promise<VolumeView> {
    validateVolumeName(name);
    const options = parseVolumeOptions(rawOptions);
    this.checkSupported(options);
    if (options.fromSnapshot || options.fromBackup) throw new BerthError('ERR_INVALID_OPTION', 'a restored volume cannot also take from-snapshot or from-backup');
    return this.createLocked(name, rawOptions, options, fill, log);
  }

  /**
   * Takes over a volume whose data `make` produces at the volume's path (a replica made live on
   * promotion). Like create, the volume is invisible until `make` succeeds and rolled back if it fails.
   */
  async adopt(name: string, rawOptions: Readonly<Record<string, string>>, make: () => Promise<void>, log: Logger = this.deps.log): Promise<VolumeView> {
    validateVolumeName(name);
    const options = parseVolumeOptions(rawOptions);
    return this.locks.run(name, async () => {
      if (await this.deps.repository.get(name)) throw new BerthError('ERR_VOLUME_EXISTS', `volume ${name} already has live data on this host`);
      const creating: VolumeRecord = { name, state: 'creating', backend: this.deps.backend.kind, options: { ...rawOptions }, createdAt: new Date().toISOString(), mounts: {} };
      const revision = await this.deps.repository.put(creating, 0);
      try {
        await make();
      } catch (error) {
        await this.deps.repository.delete(name, revision).catch((rollbackError: unknown) => log.error({ err: rollbackError }, 'could not roll back the volume record; the next start will'));
        throw error;
      }
      const ready: VolumeRecord = { ...creating, state: 'ready' };
      await this.deps.repository.put(ready, revision);
      log.info({ sizeLimit: options.sizeBytes ?? null }, 'volume taken over from its replica');
      return this.view(ready);
    });
  }

  /**
   * Gives up this host's live copy (another host owns the volume now): `drop` deletes the data, the
   * record goes after it. Refused while mounted.
   */
  async relinquish(name: string, drop: () => Promise<void>, log: Logger = this.deps.log): Promise<void> {
    await this.locks.run(name, async () => {
      const current = await this.deps.repository.get(name);
      if (!current) return;
      const count = mountCount(current.record);
      if (count > 0) throw new BerthError('ERR_VOLUME_IN_USE', `volume ${name} is still mounted on this host (${count} mount${count > 1 ? 's' : ''})`);
      const revision = await this.deps.repository.put({ ...current.record, state: 'removing' }, current.revision);
      await drop();
      await this.deps.repository.delete(name, revision);
      this.deps.usage.forget(name);
      log.info('live copy of the volume given up');
    });
  }

  /** Mount references this host holds on the volume (0 when it has no live copy). */
  async localMountCount(name: string): Promise<number> {
    const current = await this.deps.repository.get(name);
    return current ? mountCount(current.record) : 0;
  }

  /** Whether this host has the volume's live data (a ready local record). */
  async hasLiveCopy(name: string): Promise<boolean> {
    return (await this.deps.repository.get(name))?.record.state === 'ready';
  }

  private async createLocked(name: string, rawOptions: Readonly<Record<string, string>>, options: VolumeOptions, fill: ((path: string) => Promise<void>) | undefined, log: Logger): Promise<VolumeView> {
    return this.locks.run(name, async () => {
      const existing = await this.deps.repository.get(name);
      if (existing) {
        if (existing.record.state === 'ready' && sameOptions(existing.record.options, rawOptions)) return this.view(existing.record);
        if (existing.record.state === 'ready') {
          throw new BerthError('ERR_VOLUME_EXISTS', `volume ${name} already exists with options ${JSON.stringify(existing.record.options)}`);
        }
        throw new BerthError('ERR_VOLUME_BUSY', `volume ${name} is being ${existing.record.state === 'creating' ? 'created' : 'removed'}`);
      }
      const creating: VolumeRecord = {
        name,
        state: 'creating',
        backend: this.deps.backend.kind,
        options: { ...rawOptions },
        createdAt: new Date().toISOString(),
        mounts: {},
      };
      const revision = await this.deps.repository.put(creating, 0);
      try {
        const source = options.fromSnapshot;
        if (source) {
          // Hold the source's lock so its snapshot cannot be removed or restored mid-copy.
          await this.locks.run(source.volume, async () => {
            await this.requireSnapshot(source.volume, source.snapshot);
            await this.deps.backend.cloneSnapshot(source.volume, source.snapshot, name, options);
          });
        } else {
          await this.deps.backend.create(name, options);
        }
        if (fill) {
          const path = this.deps.backend.path(name);
          try {
            await fill(path);
            // Written files sit in the page cache for up to 30 s: the volume is ready only once they are
            // on disk, or a power loss could leave a restored volume listed complete with files missing.
            await runTool(['sync', '-f', path], `cannot write the data of volume ${name} to disk`);
          } catch (error) {
            await this.deps.backend.remove(name).catch((removeError: unknown) => log.error({ err: removeError }, 'could not remove a half-filled volume; the next start will'));
            throw error;
          }
        }
      } catch (error) {
        await this.deps.repository.delete(name, revision).catch((rollbackError: unknown) =>
          log.error({ err: rollbackError }, 'could not roll back the volume record; the next start will'),
        );
        throw error;
      }
      const ready: VolumeRecord = { ...creating, state: 'ready' };
      await this.deps.repository.put(ready, revision);
      log.info({ backend: ready.backend, options: ready.options }, 'volume created');
      return this.view(ready);
    });
  }

  async remove(name: string, log: Logger = this.deps.log): Promise<void> {
    validateVolumeName(name);
    await this.locks.run(name, async () => {
      let current = await this.deps.repository.get(name);
      if (!current) return; // already gone: removal is idempotent
      if (mountCount(current.record) > 0) {
        await this.releaseStaleMounts(name, log);
        current = await this.deps.repository.get(name);
        if (!current) return;
        const count = mountCount(current.record);
        if (count > 0) throw new BerthError('ERR_VOLUME_IN_USE', `volume ${name} is in use (${count} mount${count > 1 ? 's' : ''})`);
      }
      const removing: VolumeRecord = { ...current.record, state: 'removing' };
      const revision = await this.deps.repository.put(removing, current.revision);
      await this.deps.backend.remove(name);
      await this.deps.repository.delete(name, revision);
      this.deps.usage.forget(name);
      log.info('volume removed');
    });
  }

  async mount(name: string, mountId: string, log: Logger = this.deps.log): Promise<string> {
    return this.locks.run(name, async () => {
      const { record, revision } = await this.requireReady(name);
      if (!(await this.deps.backend.exists(name))) {
        throw new BerthError('ERR_STORAGE', `data of volume ${name} is missing at ${this.deps.backend.path(name)}`);
      }
      const mounts = { ...record.mounts, [mountId]: (record.mounts[mountId] ?? 0) + 1 };
      await this.deps.repository.put({ ...record, mounts }, revision);
      log.info({ mountId, mountCount: mountCount({ ...record, mounts }) }, 'volume mounted');
      return this.deps.backend.path(name);
    });
  }

  async unmount(name: string, mountId: string, log: Logger = this.deps.log): Promise<void> {
    await this.locks.run(name, async () => {
      const current = await this.deps.repository.get(name);
      const held = current?.record.mounts[mountId];
      if (!current || held === undefined) {
        // Reconciliation may have released it already; the engine must still be able to stop the container.
        log.warn({ mountId }, 'unmount of a mount that is not recorded; nothing to do');
        return;
      }
      const mounts: Record<string, number> = { ...current.record.mounts };
      if (held > 1) mounts[mountId] = held - 1;
      else delete mounts[mountId];
      await this.deps.repository.put({ ...current.record, mounts }, current.revision);
      log.info({ mountId, mountCount: mountCount({ ...current.record, mounts }) }, 'volume unmounted');
    });
  }

  async exists(name: string): Promise<boolean> {
    validateVolumeName(name);
    return (await this.deps.repository.get(name)) !== undefined;
  }

  /** The engine's Get (before every Mount): the record plus the snapshot count, nothing slow. */
  async get(name: string): Promise<VolumeView> {
    const { record } = await this.requireReady(name);
    const snapshots = await this.deps.backend.snapshotNames(name).then(
      (list) => list.length,
      () => null, // a transient backend error must not make the engine forget the volume
    );
    return { ...this.view(record), snapshots };
  }

  async path(name: string): Promise<string> {
    await this.requireReady(name);
    return this.deps.backend.path(name);
  }

  async list(): Promise<VolumeView[]> {
    return (await this.readyRecords()).map((record) => this.view(record));
  }

  /**
   * Names and paths only: the engine calls List on every `docker volume ls`. The answer is reused
   * while the store's revision is unchanged; the revision is read first, so a write that lands
   * meanwhile can only cause a miss, never a stale answer.
   */
  async listMountpoints(): Promise<ReadonlyArray<{ name: string; mountpoint: string }>> {
    const revision = await this.deps.repository.revision();
    if (this.mountpointCache?.revision === revision) return this.mountpointCache.volumes;
    const volumes = (await this.readyRecords()).map((record) => ({ name: record.name, mountpoint: this.deps.backend.path(record.name) }));
    this.mountpointCache = { revision, volumes };
    return volumes;
  }

  private async readyRecords(): Promise<VolumeRecord[]> {
    return (await this.deps.repository.list()).filter(({ record }) => record.state === 'ready').map(({ record }) => record);
  }

  /** Fresh usage figures, for operators. */
  async inspect(name: string): Promise<VolumeView> {
    await this.requireReady(name);
    await this.deps.usage.measure(name);
    return this.get(name);
  }

  /**
   * Finishes or rolls back what a crash interrupted; runs before the agent serves requests.
   * A `creating` volume was never acknowledged to the engine, so it is rolled back; a
   * `removing` one was already being deleted, so the removal is finished.
   */
  async recover(): Promise<{ rolledBack: string[]; finishedRemovals: string[] }> {
    await this.deps.backend.prepare();
    const rolledBack: string[] = [];
    const finishedRemovals: string[] = [];
    for (const { record, revision } of await this.deps.repository.list()) {
      if (record.state === 'ready') continue;
      await this.deps.backend.remove(record.name);
      await this.deps.repository.delete(record.name, revision);
      (record.state === 'creating' ? rolledBack : finishedRemovals).push(record.name);
      this.deps.log.warn({ volume: record.name, state: record.state }, 'completed a volume operation interrupted by a crash');
    }
    return { rolledBack, finishedRemovals };
  }

  private async releaseStaleMounts(name: string, log: Logger): Promise<void> {
    const reconciler = this.deps.reconciler;
    if (!reconciler) return;
    const timeoutMs = this.deps.engineCheckTimeoutMs ?? 3000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        reconciler.reconcile(name),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs))),
      ]);
    } catch (error) {
      log.warn({ err: errorMessage(error) }, 'could not ask the engine whether recorded mounts are stale');
    } finally {
      clearTimeout(timer);
    }
  }

  /** Options the backend cannot honour are refused rather than silently ignored. */
  private checkSupported(options: VolumeOptions): void {
    const { backend } = this.deps;
    if (options.sizeBytes !== undefined && !backend.capabilities.sizeLimit) {
      throw new BerthError('ERR_INVALID_OPTION', `option size needs a backend that enforces size limits (btrfs); this agent uses ${backend.kind}`);
    }
    if ((options.replicas ?? 1) > 1 && this.deps.replicasUnavailable !== undefined) {
      throw new BerthError('ERR_NOT_SUPPORTED', `option replicas needs ${this.deps.replicasUnavailable}`);
    }
  }

  private async requireSnapshot(volume: string, snapshot: string): Promise<void> {
    const source = await this.deps.repository.get(volume);
    if (!source || source.record.state !== 'ready') throw new BerthError('ERR_VOLUME_NOT_FOUND', `option from-snapshot names volume ${volume}, which does not exist`);
    if (!(await this.deps.backend.snapshotNames(volume)).includes(snapshot)) {
      throw new BerthError('ERR_SNAPSHOT_NOT_FOUND', `option from-snapshot names snapshot ${volume}@${snapshot}, which does not exist`);
    }
  }

  private async requireReady(name: string): Promise<{ record: VolumeRecord; revision: number }> {
    validateVolumeName(name);
    const found = await this.deps.repository.get(name);
    if (!found || found.record.state !== 'ready') throw new BerthError('ERR_VOLUME_NOT_FOUND', `volume ${name} does not exist`);
    return found;
  }

  private view(record: VolumeRecord): VolumeView {
    const usage = this.deps.usage.peek(record.name);
    return {
      name: record.name,
      mountpoint: this.deps.backend.path(record.name),
      createdAt: record.createdAt,
      backend: record.backend,
      options: record.options,
      mountCount: mountCount(record),
      mounts: record.mounts,
      usedBytes: usage?.usedBytes ?? null,
      usageMeasuredAt: usage?.measuredAt ?? null,
    };
  }
}

export function sameOptions(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => a[key] === b[key]);
}
