import type { Engine } from '../plugins/engine/engine.js';
import type { Logger } from '../plugins/logging/logger.js';
import { mountCount } from './volume-record.js';
import type { VolumeRepository } from './volume-repository.js';
import { findVolumeUsers } from './volume-users.js';

export interface ReconcileReport {
  readonly checked: number;
  /** Volumes whose recorded mounts no container holds any more, now released. */
  readonly released: readonly string[];
  /** Volumes that kept their mounts because an active container uses them. */
  readonly inUse: readonly string[];
}

/**
 * The engine never replays Mount/Unmount: after an agent or engine crash, Unmounts are lost
 * (moby#35120, docker/for-linux#404). Recorded mounts are therefore compared with the engine's
 * containers, and released only when no active container uses the volume. The record is read
 * before the containers are listed and released with compare-and-swap, so a Mount that lands
 * in between wins and is never erased.
 */
export class MountReconciler {
  constructor(
    private readonly repository: VolumeRepository,
    private readonly engine: Engine,
    private readonly driverName: string,
    private readonly log: Logger,
  ) {}

  async reconcile(onlyVolume?: string): Promise<ReconcileReport> {
    const candidates = (onlyVolume === undefined ? await this.repository.list() : [await this.repository.get(onlyVolume)])
      .filter((entry) => entry !== undefined)
      .filter((entry) => entry.record.state === 'ready' && mountCount(entry.record) > 0);
    if (candidates.length === 0) return { checked: 0, released: [], inUse: [] };

    const users = await this.activeUsers();
    const released: string[] = [];
    const inUse: string[] = [];
    for (const { record, revision } of candidates) {
      const holders = users.get(record.name);
      if (holders && holders.length > 0) {
        inUse.push(record.name);
        continue;
      }
      if (await this.repository.tryPut({ ...record, mounts: {} }, revision)) {
        released.push(record.name);
        this.log.info({ volume: record.name, staleMounts: record.mounts }, 'released mounts that no container holds');
      }
    }
    return { checked: candidates.length, released, inUse };
  }

  /** Volume name → names of active containers that mount it through this driver. */
  async activeUsers(): Promise<Map<string, string[]>> {
    const users = await findVolumeUsers(this.engine, this.driverName);
    return new Map([...users].map(([volume, containers]) => [volume, containers.map((container) => container.name)]));
  }
}
