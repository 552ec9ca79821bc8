import { BerthError } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import type { StorageBackend } from '../storage/storage-backend.js';
import { validateVolumeName } from '../volume-name.js';
import { parseVolumeOptions } from '../volume-options.js';
import type { VolumeDriverOps } from '../volume-driver-ops.js';
import { sameOptions, type VolumeService, type VolumeView } from '../volume-service.js';
import type { LiveHosts } from './peer-link.js';
import { placeReplicas } from './replica-placement.js';
import type { ClusterVolumeRecord } from './replication-records.js';
import type { ReplicationService } from './replication-service.js';

/**
 * Volumes on a shared etcd: one name is one volume cluster-wide. Every host's engine sees every volume
 * (List, Get); only the owner has the live data, and a Mount elsewhere moves ownership first (handoff or
 * failover, see ReplicationService). The owner's local lifecycle (records, mount counts, data) stays with
 * VolumeService. Volumes of a host that ran alone become cluster volumes when it joins (agent/single-host-import.ts).
 */
export class ClusteredVolumes implements VolumeDriverOps {
  constructor(
    private readonly volumes: VolumeService,
    private readonly replication: ReplicationService,
    private readonly backend: StorageBackend,
    private readonly live: LiveHosts,
    private readonly hostName: string,
    private readonly log: Logger,
  ) {}

  async create(name: string, rawOptions: Readonly<Record<string, string>>, log: Logger = this.log): Promise<VolumeView> {
    validateVolumeName(name);
    const options = parseVolumeOptions(rawOptions);
    const existing = await this.replication.record(name);
    if (existing) {
      // Compose and users re-run create on every host: the same volume with the same options is not an error.
      if (existing.value.state === 'ready' && sameOptions(existing.value.options, rawOptions)) return this.describe(existing.value);
      if (existing.value.state === 'ready') throw new BerthError('ERR_VOLUME_EXISTS', `volume ${name} already exists (owned by host ${existing.value.owner}) with options ${JSON.stringify(existing.value.options)}`);
      throw new BerthError('ERR_VOLUME_BUSY', `volume ${name} is being created on host ${existing.value.owner}`);
    }
    if (await this.volumes.exists(name)) return this.volumes.create(name, rawOptions, log); // a local volume from before: unchanged
    const copies = options.replicas ?? 1;
    if (copies > 1) {
      const reason = this.replication.unavailableReason;
      if (reason) throw new BerthError('ERR_NOT_SUPPORTED', `option replicas needs ${reason}`);
    }
    const replicaHosts = placeReplicas({ owner: this.hostName, copies, ...(options.replicaHosts ? { named: options.replicaHosts } : {}), live: this.live.liveHostNames(), existing: this.replication.cachedRecords() });
    const creating: ClusterVolumeRecord = {
      name,
      state: 'creating',
      options: { ...rawOptions },
      backend: this.backend.kind,
      createdAt: new Date().toISOString(),
      owner: this.hostName,
      epoch: 1,
      replicaHosts,
      mounted: false,
    };
    const repo = this.replication;
    const revision = await repo.putRecord(creating, 0);
    try {
      await repo.claimNew(creating);
      await this.volumes.create(name, rawOptions, log);
    } catch (error) {
      await repo.deleteRecord(name, revision).catch((rollback: unknown) => log.error({ err: rollback }, 'could not roll back the cluster record of a failed create'));
      throw error;
    }
    const ready: ClusterVolumeRecord = { ...creating, state: 'ready' };
    await repo.putRecord(ready, revision);
    if (replicaHosts.length > 0) log.info({ replicaHosts }, 'volume replicated to other hosts');
    return this.describe(ready);
  }

  async remove(name: string, log: Logger = this.log): Promise<void> {
    validateVolumeName(name);
    const found = await this.replication.record(name);
    if (!found) return this.volumes.remove(name, log);
    const record = found.value;
    if (record.mounted && (await this.replication.ownerAlive(record))) {
      throw new BerthError('ERR_VOLUME_IN_USE', `volume ${name} is in use on host ${record.owner}`);
    }
    // The owner's data first (it refuses while mounted here); the other hosts drop theirs when the record goes.
    if (record.owner === this.hostName) await this.volumes.remove(name, log);
    await this.replication.forget(name, found.revision);
    log.info({ owner: record.owner, replicaHosts: record.replicaHosts }, 'volume removed cluster-wide; backups are kept');
  }

  async mount(name: string, mountId: string, log: Logger = this.log): Promise<string> {
    validateVolumeName(name);
    if (!(await this.replication.record(name))) return this.volumes.mount(name, mountId, log);
    return this.replication.mount(name, log, () => this.volumes.mount(name, mountId, log));
  }

  async unmount(name: string, mountId: string, log: Logger = this.log): Promise<void> {
    const found = await this.replication.record(name);
    if (found?.value.owner !== this.hostName) return this.volumes.unmount(name, mountId, log);
    await this.replication.unmount(name, log, async () => {
      await this.volumes.unmount(name, mountId, log);
      return this.volumes.localMountCount(name);
    });
  }

  async path(name: string): Promise<string> {
    validateVolumeName(name);
    if (await this.volumes.hasLiveCopy(name)) return this.volumes.path(name);
    if (!(await this.replication.record(name))) throw new BerthError('ERR_VOLUME_NOT_FOUND', `volume ${name} does not exist`);
    return this.backend.path(name);
  }

  get(name: string): Promise<VolumeView> {
    return this.read(name, 'get');
  }

  inspect(name: string): Promise<VolumeView> {
    return this.read(name, 'inspect');
  }

  private async read(name: string, depth: 'get' | 'inspect'): Promise<VolumeView> {
    validateVolumeName(name);
    const found = await this.replication.record(name);
    if (!found) return depth === 'get' ? this.volumes.get(name) : this.volumes.inspect(name);
    if (found.value.state !== 'ready') throw new BerthError('ERR_VOLUME_NOT_FOUND', `volume ${name} does not exist`);
    return this.describe(found.value, depth);
  }

  async list(): Promise<VolumeView[]> {
    const local = await this.volumes.list();
    const seen = new Set(local.map((volume) => volume.name));
    const remote = this.replication.cachedRecords().filter((record) => record.state === 'ready' && !seen.has(record.name));
    return [...local, ...remote.map((record) => this.remoteView(record))].sort((a, b) => a.name.localeCompare(b.name));
  }

  async listMountpoints(): Promise<ReadonlyArray<{ name: string; mountpoint: string }>> {
    const local = await this.volumes.listMountpoints();
    const seen = new Set(local.map((volume) => volume.name));
    const remote = this.replication.cachedRecords().filter((record) => record.state === 'ready' && !seen.has(record.name));
    return [...local, ...remote.map((record) => ({ name: record.name, mountpoint: this.backend.path(record.name) }))];
  }

  /** The local view where this host has the data (the owner), the record's otherwise; plus replication. */
  private async describe(record: ClusterVolumeRecord, depth: 'get' | 'inspect' | 'create' = 'create'): Promise<VolumeView> {
    let view: VolumeView;
    if (await this.volumes.hasLiveCopy(record.name)) view = depth === 'inspect' ? await this.volumes.inspect(record.name) : await this.volumes.get(record.name);
    else view = this.remoteView(record);
    // Get runs before every Mount: it leaves out the bytes behind, which read the filesystem.
    return { ...view, replication: await this.replication.describe(record, depth !== 'get') };
  }

  private remoteView(record: ClusterVolumeRecord): VolumeView {
    return {
      name: record.name,
      mountpoint: this.backend.path(record.name),
      createdAt: record.createdAt,
      backend: record.backend,
      options: record.options,
      mountCount: 0,
      mounts: {},
      usedBytes: null,
      usageMeasuredAt: null,
      replication: { owner: record.owner, epoch: record.epoch, replicaHosts: record.replicaHosts },
    };
  }
}
