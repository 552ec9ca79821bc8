import type { ReplicationStore } from '../storage/storage-backend.js';
import type { ClusterVolumeRepository } from './cluster-volume-repository.js';
import type { LiveHosts } from './peer-link.js';
import type { ClusterVolumeRecord } from './replication-records.js';

export interface MetricSample {
  readonly name: string;
  readonly help: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface ReplicationStatusDeps {
  readonly repo: ClusterVolumeRepository;
  readonly live: LiveHosts;
  readonly hostName: string;
  readonly defaultIntervalMs: number;
  /** This host's chain: on the owner, bytes behind are measured against it. */
  readonly chain?: ReplicationStore;
  readonly ownerAlive: (record: ClusterVolumeRecord) => Promise<boolean>;
  /** On the owner: when it last found the live data unchanged since that snapshot (see OwnerShipping). */
  readonly unchangedSince?: (volume: string, id: string) => number | undefined;
}

/** What users see of a volume's replication: inspect's `replication` and the metrics. */
export class ReplicationStatusView {
  constructor(private readonly deps: ReplicationStatusDeps) {}

  /** Owner, epoch and replicas with their lag, for inspect; bytes behind only when `measureBytes` (it reads the filesystem). */
  async describe(record: ClusterVolumeRecord, measureBytes = true): Promise<Record<string, unknown>> {
    const [statuses, head, alive] = await Promise.all([this.deps.repo.replicaStatuses(record.name), this.deps.repo.head(record.name, record.epoch), this.deps.ownerAlive(record)]);
    const live = this.deps.live.liveHostNames();
    const chain = measureBytes && record.owner === this.deps.hostName ? this.deps.chain : undefined;
    const replicas = await Promise.all(record.replicaHosts.map(async (host) => {
      const status = statuses.find((candidate) => candidate.host === host);
      const behindHead = status?.id === undefined || (head !== undefined && status.id < head.id);
      let lagBytes: number | null = null;
      if (chain && status?.id !== undefined) lagBytes = await chain.changedBytesSince(record.name, status.id).catch(() => null);
      const behind = behindHead || (lagBytes ?? 0) > 0;
      // Behind since the oldest change the replica lacks: after the snapshot it holds was taken, and after the
      // owner last saw nothing changed since it (a volume idle for an hour is not an hour behind at its first write).
      const unchangedAt = status?.id === undefined ? undefined : this.deps.unchangedSince?.(record.name, status.id);
      const since = status?.takenAt === undefined ? undefined : Math.max(Date.parse(status.takenAt), unchangedAt ?? 0);
      const lagSeconds = since === undefined ? null : behind ? Math.max(0, (Date.now() - since) / 1000) : 0;
      return {
        host,
        alive: live.has(host),
        state: status?.state ?? 'syncing',
        snapshot: status?.id ?? null,
        snapshotTakenAt: status?.takenAt ?? null,
        receivedAt: status?.receivedAt ?? null,
        lagSeconds: lagSeconds === null ? null : Math.round(lagSeconds * 1000) / 1000,
        lagBytes,
        lastTransferBytes: status?.lastTransferBytes ?? null,
        ...(status?.error ? { error: status.error } : {}),
      };
    }));
    return {
      owner: record.owner,
      ownerAlive: alive,
      epoch: record.epoch,
      mounted: record.mounted,
      failover: record.options.failover ?? 'manual',
      replicateEvery: record.options['replicate-every'] ?? `${this.deps.defaultIntervalMs / 1000}s`,
      head: head?.id ?? null,
      headTakenAt: head?.takenAt ?? null,
      replicas,
    };
  }

  /** Replication figures of the volumes this host owns, as metric samples. */
  async metrics(records: readonly ClusterVolumeRecord[]): Promise<MetricSample[]> {
    const samples: MetricSample[] = [];
    for (const record of records) {
      if (record.owner !== this.deps.hostName || record.state !== 'ready') continue;
      samples.push({ name: 'berth_volume_epoch', help: 'ownership epoch of a volume this host owns', labels: { volume: record.name }, value: record.epoch });
      const view = await this.describe(record);
      for (const replica of view.replicas as { host: string; state: string; lagSeconds: number | null; lagBytes: number | null; lastTransferBytes: number | null }[]) {
        const labels = { volume: record.name, replica: replica.host };
        samples.push({ name: 'berth_replica_in_sync', help: '1 when the replica holds the newest snapshot', labels, value: replica.state === 'in-sync' ? 1 : 0 });
        if (replica.lagSeconds !== null) samples.push({ name: 'berth_replica_lag_seconds', help: 'how long the replica has lacked changes of the owner (since the newest snapshot it holds, or the owner last saw none)', labels, value: replica.lagSeconds });
        if (replica.lagBytes !== null) samples.push({ name: 'berth_replica_lag_bytes', help: 'bytes the owner wrote since the replica newest snapshot (estimate)', labels, value: replica.lagBytes });
        if (replica.lastTransferBytes !== null) samples.push({ name: 'berth_replica_last_transfer_bytes', help: 'bytes of the replica last transfer', labels, value: replica.lastTransferBytes });
      }
    }
    return samples;
  }

}
