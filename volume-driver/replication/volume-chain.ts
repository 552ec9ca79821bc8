import type { ReplicationStore } from '../storage/storage-backend.js';
import type { ClusterVolumeRepository } from './cluster-volume-repository.js';
import { chainId, isChainId, isDiverged, parseChainId, type ClusterVolumeRecord } from './replication-records.js';

/** Chain snapshots of the current epoch the owner keeps beyond those replicas still need as parents. */
const OWNER_KEEPS = 2;

/** One host's chain of a volume, read against the volume's record (which says what is diverged). */
export class VolumeChain {
  constructor(
    private readonly chain: ReplicationStore,
    private readonly repo: ClusterVolumeRepository,
    /** Told of every snapshot taken, with how long taking and publishing it took (for the logs). */
    private readonly onSnapshot?: (taken: { volume: string; id: string; snapshotMs: number; publishedMs: number }) => void,
  ) {}

  /** Chain ids held that count for the record (diverged ones excluded), ascending. */
  async ids(record: ClusterVolumeRecord): Promise<string[]> {
    return (await this.chain.replicationSnapshots(record.name)).filter((id) => isChainId(id) && !isDiverged(record, id)).sort();
  }

  async dropDiverged(record: ClusterVolumeRecord): Promise<void> {
    for (const id of await this.chain.replicationSnapshots(record.name)) {
      if (isChainId(id) && isDiverged(record, id)) await this.chain.deleteReplicationSnapshot(record.name, id);
    }
  }

  /**
   * Owner: a new chain snapshot if the data changed since the newest (or none exists), published as the
   * head; returns the newest id, and whether it was taken now.
   */
  async snapshotIfChanged(record: ClusterVolumeRecord, final: boolean): Promise<{ id: string; taken: boolean }> {
    const held = await this.ids(record);
    const newest = held.at(-1);
    if (newest !== undefined && (await this.chain.changedBytesSince(record.name, newest)) === 0) {
      if (final) await this.repo.putHead(record.name, { epoch: record.epoch, id: newest, takenAt: (await this.repo.head(record.name, record.epoch))?.takenAt ?? new Date().toISOString(), final: true });
      return { id: newest, taken: false };
    }
    const seq = held.map((id) => parseChainId(id)).filter((parsed) => parsed?.epoch === record.epoch).reduce((max, parsed) => Math.max(max, parsed!.seq), 0);
    const id = chainId(record.epoch, seq + 1);
    const takenAt = new Date().toISOString();
    const started = Date.now();
    await this.chain.takeReplicationSnapshot(record.name, id);
    const snapshotMs = Date.now() - started;
    await this.repo.putHead(record.name, { epoch: record.epoch, id, takenAt, ...(final ? { final: true } : {}) });
    this.onSnapshot?.({ volume: record.name, id, snapshotMs, publishedMs: Date.now() - started });
    return { id, taken: true };
  }

  /** Owner: keeps the newest snapshots, the base, every snapshot a replica holds, and `alsoKeep` (just sent: next parents). */
  async prune(record: ClusterVolumeRecord, alsoKeep: readonly string[]): Promise<void> {
    const held = await this.ids(record);
    const statuses = await this.repo.replicaStatuses(record.name);
    const keep = new Set([...held.slice(-OWNER_KEEPS), ...alsoKeep, ...(record.base ? [record.base] : []), ...statuses.flatMap((status) => (status.id ? [status.id] : []))]);
    for (const id of held) if (!keep.has(id)) await this.chain.deleteReplicationSnapshot(record.name, id);
  }
}
