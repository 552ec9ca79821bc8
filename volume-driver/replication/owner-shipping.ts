// The owner's side of a replicated volume's loop: when to take the next chain snapshot, and which replica
// hosts to replace when they stay gone. Runs under the volume's lock, from ReplicationService.step.
import type { Logger } from '../../plugins/logging/logger.js';
import type { ClusterVolumeRepository, Versioned } from './cluster-volume-repository.js';
import type { LiveHosts } from './peer-link.js';
import { replaceGoneReplicas } from './replica-placement.js';
import type { ClusterVolumeRecord } from './replication-records.js';
import type { VolumeChain } from './volume-chain.js';

/**
 * While every live replica holds the newest snapshot, the owner ships the next change this soon after the
 * last look instead of waiting out the interval: the next cycle starts when a transfer ends, so lag follows
 * the transfer time. The interval still bounds how long a change waits when replicas fall behind or the
 * data was unchanged.
 */
const CAUGHT_UP_GAP_MS = 250;

export interface OwnerShippingDeps {
  readonly repo: ClusterVolumeRepository;
  readonly live: LiveHosts;
  /** A replica host gone this long is replaced by another live host, if there is one. */
  readonly replaceReplicasAfterMs: number;
  readonly log: Logger;
  /** Every volume record this host knows (replica placement counts the load of each host). */
  readonly records: () => ClusterVolumeRecord[];
  readonly chain: () => VolumeChain;
  /** Snapshots just sent to peers of a volume (their next parents): pruning keeps them. */
  readonly recentlySent: (volume: string) => string[];
}

export class OwnerShipping {
  /** Replica hosts seen without a lease, and since when (forgotten when they come back). */
  private readonly goneSince = new Map<string, number>();
  /** When the owner last looked for changes to snapshot, per volume, and whether it took one. */
  private readonly lastLook = new Map<string, { at: number; shipped: boolean }>();
  /**
   * Per volume, the owner's last look that found the data unchanged since a snapshot: kept when newer
   * snapshots follow, since a replica still holding that one lacks only changes made after the look.
   */
  private readonly lastUnchanged = new Map<string, { at: number; id: string }>();

  constructor(private readonly deps: OwnerShippingDeps) {}

  /**
   * One owner step of a volume with replicas, every `every` ms at the latest: replaces replica hosts
   * gone too long, then snapshots if the data changed and the next look is due. Steps also run on every
   * change of the volume's keys (its head, replica reports): after a look that shipped something, the
   * next comes soon once every replica holds it; after a look that found nothing, it waits the interval.
   * Returns when the next step is due, in ms.
   */
  async step(found: Versioned<ClusterVolumeRecord>, every: number): Promise<number> {
    const record = found.value;
    if (await this.replaceGone(record, found.revision)) return 0;
    const last = this.lastLook.get(record.name);
    const soon = last?.shipped === true && (await this.replicasHoldHead(record));
    const due = last === undefined ? 0 : last.at + (soon ? Math.min(every, CAUGHT_UP_GAP_MS) : every) - Date.now();
    if (due > 0) return due;
    const at = Date.now();
    const chain = this.deps.chain();
    const { id, taken } = await chain.snapshotIfChanged(record, false);
    this.lastLook.set(record.name, { at, shipped: taken });
    if (!taken) this.lastUnchanged.set(record.name, { at, id });
    await chain.prune(record, this.deps.recentlySent(record.name));
    return every;
  }

  /**
   * When the owner last found the live data unchanged since chain snapshot `id`, in ms since the epoch:
   * changes a replica holding `id` lacks were made after that, whatever snapshots came since. Written
   * back changes count (the look reads the filesystem), as every fsync'ed write is.
   */
  unchangedSince(volume: string, id: string): number | undefined {
    const last = this.lastUnchanged.get(volume);
    return last?.id === id ? last.at : undefined;
  }

  /** The volume is gone (or no longer owned here): its cadence starts afresh next time. */
  forget(volume: string): void {
    this.lastLook.delete(volume);
    this.lastUnchanged.delete(volume);
  }

  /**
   * A replica host gone longer than the setting is replaced by a live host without a copy (which then pulls
   * a whole one while the volume stays in use); the gone host drops its copy if it returns. True when the
   * record changed.
   */
  private async replaceGone(record: ClusterVolumeRecord, revision: number): Promise<boolean> {
    const live = this.deps.live.liveHostNames();
    const now = Date.now();
    for (const host of this.goneSince.keys()) if (live.has(host)) this.goneSince.delete(host);
    const gone = new Set<string>();
    for (const host of record.replicaHosts) {
      if (live.has(host)) continue;
      const since = this.goneSince.get(host) ?? now;
      this.goneSince.set(host, since);
      if (now - since >= this.deps.replaceReplicasAfterMs) gone.add(host);
    }
    if (gone.size === 0) return false;
    const change = replaceGoneReplicas({ record, gone, live, existing: this.deps.records() });
    if (!change) return false;
    if ((await this.deps.repo.tryPut({ ...record, replicaHosts: change.replicaHosts }, revision)) === undefined) return false;
    for (const { gone: host, by } of change.replaced) {
      await this.deps.repo.deleteReplicaStatus(record.name, host).catch(() => undefined);
      const goneForSeconds = Math.round((now - (this.goneSince.get(host) ?? now)) / 1000);
      this.deps.log.warn({ volume: record.name, gone: host, replacement: by, goneForSeconds }, 'replica host gone too long: keeping the copy on another host instead');
    }
    return true;
  }

  /** Whether every live replica reports holding the epoch's newest snapshot. */
  private async replicasHoldHead(record: ClusterVolumeRecord): Promise<boolean> {
    const [head, statuses] = await Promise.all([this.deps.repo.head(record.name, record.epoch), this.deps.repo.replicaStatuses(record.name)]);
    if (!head) return false;
    const live = this.deps.live.liveHostNames();
    return record.replicaHosts.filter((host) => live.has(host)).every((host) => statuses.some((status) => status.host === host && status.id === head.id));
  }
}
