import { BerthError, errorMessage } from '../../plugins/errors/berth-error.js';
import type { Engine, EngineContainer } from '../../plugins/engine/engine.js';
import type { Logger } from '../../plugins/logging/logger.js';
import type { KeyedMutex } from '../../plugins/util/keyed-mutex.js';
import type { BackendSnapshot, StorageBackend } from '../storage/storage-backend.js';
import { validateSnapshotName, validateVolumeName } from '../volume-name.js';
import { parseVolumeOptions, type VolumeOptions } from '../volume-options.js';
import { mountCount } from '../volume-record.js';
import type { VolumeRepository } from '../volume-repository.js';
import { findVolumeUsers } from '../volume-users.js';

export interface SnapshotView extends BackendSnapshot {
  /** `manual`, `scheduled` (made by a volume's schedule), `pre-restore` (safety copy) or `backup` (source of a running backup). */
  readonly origin: SnapshotOrigin;
}

export type SnapshotOrigin = 'manual' | 'scheduled' | 'pre-restore' | 'backup';

export interface RestoreResult {
  readonly volume: string;
  readonly snapshot: string;
  /** The snapshot of the content that the restore replaced: nothing is lost. */
  readonly safetySnapshot: string;
  /** Containers stopped for a forced restore and started again afterwards. */
  readonly restartedContainers: readonly string[];
}

export interface SnapshotServiceDeps {
  readonly repository: VolumeRepository;
  readonly backend: StorageBackend;
  readonly locks: KeyedMutex;
  readonly engine?: Engine;
  readonly driverName: string;
  readonly log: Logger;
  /** Bound on waiting for stopped containers' Unmounts during a forced restore. */
  readonly unmountWaitMs?: number;
}

/** A quiesce command that hangs must not hold the volume (and a scheduled snapshot) forever. */
const QUIESCE_COMMAND_TIMEOUT_MS = 60_000;

const ORIGIN_PREFIX: Record<Exclude<SnapshotOrigin, 'manual'>, string> = { scheduled: 'auto-', 'pre-restore': 'pre-restore-', backup: 'backup-' };

/** Snapshot names made by Berth carry their origin and a sortable UTC time. */
export function generatedSnapshotName(origin: SnapshotOrigin, at = new Date()): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.(\d{3})Z$/, '$1Z');
  return `${origin === 'manual' ? 'snap-' : ORIGIN_PREFIX[origin]}${stamp}`;
}

export function snapshotOrigin(name: string): SnapshotOrigin {
  if (name.startsWith(ORIGIN_PREFIX.scheduled)) return 'scheduled';
  if (name.startsWith(ORIGIN_PREFIX['pre-restore'])) return 'pre-restore';
  if (name.startsWith(ORIGIN_PREFIX.backup)) return 'backup';
  return 'manual';
}

/**
 * Point-in-time snapshots of volumes. Every change to a volume's data runs under the volume's
 * lock shared with VolumeService, so a snapshot, a restore and a Mount never interleave.
 */
export class SnapshotService {
  constructor(private readonly deps: SnapshotServiceDeps) {}

  async create(volume: string, name?: string, origin: SnapshotOrigin = 'manual'): Promise<SnapshotView> {
    validateVolumeName(volume);
    const snapshot = name === undefined ? generatedSnapshotName(origin) : validateSnapshotName(name);
    return this.deps.locks.run(volume, async () => {
      const { record } = await this.requireVolume(volume);
      if ((await this.deps.backend.snapshotNames(volume)).includes(snapshot)) {
        throw new BerthError('ERR_SNAPSHOT_EXISTS', `snapshot ${volume}@${snapshot} already exists`);
      }
      const options = parseVolumeOptions(record.options);
      const made = await this.quiesced(volume, options, () => this.deps.backend.createSnapshot(volume, snapshot));
      this.deps.log.info({ volume, snapshot, quiesce: options.quiesce ?? 'none' }, 'snapshot created');
      return view(made);
    });
  }

  async list(volume: string): Promise<SnapshotView[]> {
    validateVolumeName(volume);
    await this.requireVolume(volume);
    return (await this.deps.backend.listSnapshots(volume)).map(view).sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
  }

  async get(volume: string, snapshot: string): Promise<SnapshotView> {
    validateSnapshotName(snapshot);
    const found = (await this.list(volume)).find((candidate) => candidate.name === snapshot);
    if (!found) throw new BerthError('ERR_SNAPSHOT_NOT_FOUND', `snapshot ${volume}@${snapshot} does not exist`);
    return found;
  }

  /** Deletes every snapshot of this origin (at start: backups that a crash interrupted). */
  async removeLeftovers(origin: SnapshotOrigin): Promise<string[]> {
    const removed: string[] = [];
    for (const { record } of await this.deps.repository.list()) {
      if (record.state !== 'ready') continue;
      for (const snapshot of await this.deps.backend.snapshotNames(record.name)) {
        if (snapshotOrigin(snapshot) !== origin) continue;
        await this.remove(record.name, snapshot);
        removed.push(`${record.name}@${snapshot}`);
      }
    }
    return removed;
  }

  /** Removes one snapshot; removing one that is gone succeeds. */
  async remove(volume: string, snapshot: string): Promise<void> {
    validateVolumeName(volume);
    validateSnapshotName(snapshot);
    await this.deps.locks.run(volume, async () => {
      await this.requireVolume(volume);
      await this.deps.backend.deleteSnapshot(volume, snapshot);
      this.deps.log.info({ volume, snapshot }, 'snapshot removed');
    });
  }

  /**
   * Replaces the volume's content with the snapshot's. Refused while containers have the volume
   * mounted, unless `force`: then those containers are stopped first (their bind mounts would
   * otherwise keep showing the old tree), and started again afterwards. The replaced content is
   * kept as a `pre-restore-...` snapshot, so a mistaken restore loses nothing.
   */
  async restore(volume: string, snapshot: string, options: { force?: boolean; stopTimeoutSeconds?: number } = {}): Promise<RestoreResult> {
    validateVolumeName(volume);
    validateSnapshotName(snapshot);
    const { record } = await this.requireVolume(volume);
    await this.get(volume, snapshot);
    let stopped: string[] = [];
    if (mountCount(record) > 0) {
      if (!options.force) {
        throw new BerthError('ERR_VOLUME_IN_USE', `volume ${volume} is mounted (${mountCount(record)} mount${mountCount(record) > 1 ? 's' : ''}); stop its containers or force the restore, which stops and restarts them`);
      }
      // Outside the lock: stopping a container makes the engine call Unmount, which takes it.
      stopped = await this.stopUsers(volume, options.stopTimeoutSeconds ?? 10);
    }
    try {
      const safetySnapshot = await this.deps.locks.run(volume, async () => {
        const current = await this.requireVolume(volume);
        const count = mountCount(current.record);
        if (count > 0) throw new BerthError('ERR_VOLUME_IN_USE', `volume ${volume} is still mounted (${count}) after its containers were stopped; restore not done`);
        const safety = generatedSnapshotName('pre-restore');
        await this.deps.backend.createSnapshot(volume, safety);
        await this.deps.backend.restoreSnapshot(volume, snapshot);
        this.deps.log.info({ volume, snapshot, safetySnapshot: safety }, 'volume restored from snapshot');
        return safety;
      });
      return { volume, snapshot, safetySnapshot, restartedContainers: stopped };
    } finally {
      await this.startAgain(stopped);
    }
  }

  /**
   * Runs `work` (the snapshot) with the volume's running containers made consistent:
   * `pause` freezes them, `exec` runs the pre command in each and the post command after.
   * Whatever happens, every paused container is unpaused and every pre is followed by its post.
   */
  private async quiesced<T>(volume: string, options: VolumeOptions, work: () => Promise<T>): Promise<T> {
    const mode = options.quiesce ?? 'none';
    if (mode === 'none') return work();
    const engine = this.deps.engine;
    if (!engine) throw new BerthError('ERR_ENGINE_UNAVAILABLE', `volume ${volume} asks for quiesce=${mode} and no engine is configured`);
    const users = ((await findVolumeUsers(engine, this.deps.driverName)).get(volume) ?? []).filter((container) => container.state === 'running');
    const prepared: EngineContainer[] = [];
    try {
      for (const container of users) {
        if (mode === 'pause') {
          await engine.pauseContainer(container.id);
        } else {
          const result = await engine.exec(container.id, ['sh', '-c', options.quiescePre ?? 'true'], QUIESCE_COMMAND_TIMEOUT_MS);
          if (result.exitCode !== 0) {
            throw new BerthError('ERR_QUIESCE_FAILED', `quiesce-pre failed in container ${container.name} with exit code ${result.exitCode}: ${result.output.trim().slice(-500)}; no snapshot taken`);
          }
        }
        prepared.push(container);
      }
      return await work();
    } finally {
      await this.release(mode, prepared, options.quiescePost);
    }
  }

  private async release(mode: 'pause' | 'exec', containers: readonly EngineContainer[], post: string | undefined): Promise<void> {
    const engine = this.deps.engine;
    if (!engine) return;
    for (const container of containers) {
      try {
        if (mode === 'pause') await engine.unpauseContainer(container.id);
        else if (post !== undefined) {
          const result = await engine.exec(container.id, ['sh', '-c', post], QUIESCE_COMMAND_TIMEOUT_MS);
          if (result.exitCode !== 0) this.deps.log.error({ container: container.name, exitCode: result.exitCode, output: result.output }, 'quiesce-post failed');
        }
      } catch (error) {
        this.deps.log.error({ container: container.name, err: errorMessage(error) }, mode === 'pause' ? 'could not unpause a container after a snapshot' : 'quiesce-post failed');
      }
    }
  }

  private async stopUsers(volume: string, timeoutSeconds: number): Promise<string[]> {
    const engine = this.deps.engine;
    if (!engine) throw new BerthError('ERR_ENGINE_UNAVAILABLE', `volume ${volume} is mounted and no engine is configured to stop its containers`);
    // A container that was only created holds no mount; it needs neither stopping nor starting.
    const users = ((await findVolumeUsers(engine, this.deps.driverName)).get(volume) ?? []).filter((container) => container.state !== 'created');
    const stopped: string[] = [];
    try {
      for (const container of users) {
        await engine.stopContainer(container.id, timeoutSeconds);
        stopped.push(container.id);
        this.deps.log.info({ volume, container: container.name }, 'stopped container for a forced restore');
      }
      await this.waitUnmounted(volume);
    } catch (error) {
      await this.startAgain(stopped);
      throw error;
    }
    return stopped;
  }

  private async waitUnmounted(volume: string): Promise<void> {
    const deadline = Date.now() + (this.deps.unmountWaitMs ?? 30_000);
    for (let attempt = 0; attempt < 10_000; attempt++) {
      const { record } = await this.requireVolume(volume);
      if (mountCount(record) === 0 || Date.now() > deadline) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  private async startAgain(containers: readonly string[]): Promise<void> {
    for (const id of containers) {
      await this.deps.engine?.startContainer(id).catch((error: unknown) => this.deps.log.error({ container: id, err: errorMessage(error) }, 'could not restart a container after restore'));
    }
  }

  private async requireVolume(volume: string) {
    const found = await this.deps.repository.get(volume);
    if (!found || found.record.state !== 'ready') throw new BerthError('ERR_VOLUME_NOT_FOUND', `volume ${volume} does not exist`);
    return found;
  }
}

function view(snapshot: BackendSnapshot): SnapshotView {
  return { ...snapshot, origin: snapshotOrigin(snapshot.name) };
}
