// Cross-host replication and ownership of volumes on a shared etcd.
//
// Design notes
// - One owner per volume mounts it read-write. The record `vol/records/<name>` names the owner and an
//   epoch; every change of owner is one compare-and-swap on that record that raises the epoch. The owner
//   also holds `vol/owners/<name>` under its agent's lease: while that key names the record's owner, the
//   owner is alive; when it expires, the owner is gone.
// - Data moves as a chain of read-only snapshots (ids `e<epoch>-<seq>`). The owner takes one when the
//   data changed (as soon as every replica holds the last one, else every `replicate-every`; see
//   owner-shipping.ts) and publishes it as the head of its epoch; replicas pull it over the peer port
//   relative to the newest snapshot they hold (btrfs send/receive, or the dir backend's block-level
//   diffs) and report what they hold. Pulling, not pushing: a former owner can never write into
//   anyone's copy. A replica host gone too long is replaced by the owner (owner-shipping.ts too).
// - Fencing: snapshots a former owner took after the snapshot the next epoch started from (`base`) are
//   diverged: never served, never used as a parent, deleted from chains, and the former owner's own live
//   data from after the cut is kept aside under a `diverged-*` id before it rejoins as a replica.
// - Planned handoff: the owner's last Unmount ships a final snapshot to the replicas; a Mount elsewhere
//   asks the owner to confirm (or take) its final snapshot, catches up to it, then takes the record.
//   Failover (the owner's lease is gone): the most up-to-date live replica is caught up and promoted, by a
//   Mount with failover=auto or by `berth volume promote`; it loses the writes after its newest snapshot.
import { setTimeout as sleep } from 'node:timers/promises';
import { BerthError, errorMessage, isBerthError } from '../../plugins/errors/berth-error.js';
import type { Engine } from '../../plugins/engine/engine.js';
import type { Logger } from '../../plugins/logging/logger.js';
import { PrefixMirror } from '../../plugins/state/prefix-mirror.js';
import type { Lease } from '../../plugins/state/state-store.js';
import { KeyedMutex } from '../../plugins/util/keyed-mutex.js';
import type { ReplicationStore } from '../storage/storage-backend.js';
import { parseVolumeOptions } from '../volume-options.js';
import type { VolumeService } from '../volume-service.js';
import { findVolumeUsers } from '../volume-users.js';
import { pullChainSnapshot } from './chain-transfer.js';
import { ClusterVolumeRepository, VOLUME_CLUSTER_PREFIX, type Versioned } from './cluster-volume-repository.js';
import { OwnershipLease } from './ownership-lease.js';
import type { LiveHosts, PeerLink } from './peer-link.js';
import { OwnerShipping } from './owner-shipping.js';
import { isChainId, isDiverged, type ClusterVolumeRecord, type ReplicaStatus } from './replication-records.js';
import { VolumeChain } from './volume-chain.js';
import { ReplicationStatusView, type MetricSample } from './replication-status.js';

export type { MetricSample } from './replication-status.js';

export interface ReplicationSettings {
  readonly hostName: string;
  readonly leaseTtlSeconds: number;
  /** A Mount that must copy data first gives up (cleanly) after this; the engine's own limit is 2 min. */
  readonly catchUpBudgetMs: number;
  /** How long the owner's last Unmount waits for the replicas to hold its final snapshot. */
  readonly finalShipWaitMs: number;
  readonly defaultIntervalMs: number;
  /** How long a host that asked for a handoff has to take the volume before the owner may mount it again. */
  readonly handoffHoldMs: number;
  /** A replica host gone this long is replaced by another live host, if there is one. */
  readonly replaceReplicasAfterMs: number;
}

export interface ReplicationDeps {
  readonly repo: ClusterVolumeRepository;
  readonly volumes: VolumeService;
  /** The backend's replication chain; absent when the backend cannot ship snapshots (both built-in backends can). */
  readonly chain?: ReplicationStore;
  readonly backendKind: string;
  /** Absent without a peer port: volumes then stay on the host that made them. */
  readonly peers?: PeerLink;
  readonly live: LiveHosts;
  readonly engine: Engine;
  readonly driverName: string;
  readonly log: Logger;
  readonly settings: ReplicationSettings;
}

/** The snapshot last sent to a peer becomes its next parent before its status says so: kept this long. */
const SENT_KEEP_MS = 10 * 60_000;
const RECONCILE_EVERY_MS = 10_000;
const STOP_TIMEOUT_SECONDS = 10;

export class ReplicationService {
  private readonly locks = new KeyedMutex();
  private readonly mirror: PrefixMirror;
  private readonly lease: OwnershipLease;
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly pending = new Set<string>();
  private readonly running = new Set<string>();
  /** When a volume's loop runs next (its replication interval), set by each step. */
  private readonly nextDelay = new Map<string, number>();
  private readonly shipping: OwnerShipping;
  /** `<volume>/<peer>` → the chain snapshot last sent to that peer, and when. */
  private readonly sent = new Map<string, { id: string; at: number }>();
  private reconcileTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly host: string;
  private readonly log: Logger;
  private readonly status: ReplicationStatusView;

  constructor(private readonly deps: ReplicationDeps) {
    this.host = deps.settings.hostName;
    this.log = deps.log;
    this.mirror = new PrefixMirror(deps.repo.store, VOLUME_CLUSTER_PREFIX, (key) => this.onChange(key), deps.log);
    this.status = new ReplicationStatusView({
      repo: deps.repo,
      live: deps.live,
      hostName: deps.settings.hostName,
      defaultIntervalMs: deps.settings.defaultIntervalMs,
      ...(deps.chain ? { chain: deps.chain } : {}),
      ownerAlive: (record) => this.ownerAlive(record),
      unchangedSince: (volume, id) => this.shipping.unchangedSince(volume, id),
    });
    this.lease = new OwnershipLease(deps.repo.store, deps.settings.leaseTtlSeconds, (lease) => this.reclaimOwned(lease), deps.log);
    this.shipping = new OwnerShipping({
      repo: deps.repo,
      live: deps.live,
      replaceReplicasAfterMs: deps.settings.replaceReplicasAfterMs,
      log: deps.log,
      records: () => this.cachedRecords(),
      chain: () => this.volumeChain(),
      recentlySent: (volume) => this.recentlySent(volume),
    });
  }

  /** Why this host cannot keep copies or take volumes over (undefined: it can). */
  get unavailableReason(): string | undefined {
    if (!this.deps.chain) return `a backend that can ship snapshots between hosts; this agent uses ${this.deps.backendKind}`;
    if (!this.deps.peers) return 'the peer port: start every agent with --pki-dir (see berth cluster init)';
    return undefined;
  }

  async start(): Promise<void> {
    const lease = await this.lease.start();
    await this.reclaimOwned(lease);
    await this.mirror.start();
    for (const name of await this.knownNames()) this.schedule(name);
    const tick = (): void => {
      if (this.stopped) return;
      void this.knownNames().then((names) => names.forEach((name) => this.schedule(name)), (error: unknown) => this.log.warn({ err: errorMessage(error) }, 'cannot list replicated volumes'));
      this.reconcileTimer = setTimeout(tick, RECONCILE_EVERY_MS);
      this.reconcileTimer.unref();
    };
    this.reconcileTimer = setTimeout(tick, RECONCILE_EVERY_MS);
    this.reconcileTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reconcileTimer);
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.lease.stop();
    await this.mirror.stop();
  }

  /** The mirror lost its watch (store compaction): list again. */
  restartWatch(): Promise<void> {
    return this.mirror.restart();
  }

  // ---- what the volume driver asks -------------------------------------------------------------

  record(name: string): Promise<Versioned<ClusterVolumeRecord> | undefined> {
    return this.deps.repo.get(name);
  }

  putRecord(record: ClusterVolumeRecord, expectRevision: number): Promise<number> {
    return this.deps.repo.put(record, expectRevision);
  }

  /** Rolls back a record whose create failed. */
  deleteRecord(name: string, revision: number): Promise<void> {
    return this.deps.repo.delete(name, revision);
  }

  /** The records as last seen (no round trip), for List. */
  cachedRecords(): ClusterVolumeRecord[] {
    const records: ClusterVolumeRecord[] = [];
    for (const entry of this.mirror.list(`${VOLUME_CLUSTER_PREFIX}records/`)) {
      try {
        records.push(JSON.parse(entry.value) as ClusterVolumeRecord);
      } catch {
        // a damaged record is reported when it is read for real
      }
    }
    return records;
  }

  /** Whether the record's owner holds its claim now (its agent's lease is current). */
  async ownerAlive(record: ClusterVolumeRecord): Promise<boolean> {
    const claim = await this.deps.repo.owner(record.name);
    return claim !== undefined && claim.value.host === record.owner;
  }

  /** Puts the claim for a volume this host just created (epoch 1). */
  async claimNew(record: ClusterVolumeRecord): Promise<void> {
    const current = await this.deps.repo.owner(record.name);
    await this.deps.repo.putOwner(record.name, { host: this.host, epoch: record.epoch }, this.lease.current(), current?.revision ?? 0);
    this.schedule(record.name);
  }

  /**
   * Before a Mount on this host: makes sure this host owns the volume and has its live data, by a planned
   * handoff from a live owner that has it unmounted, or by failover from a gone one. Then marks it mounted
   * and runs `mountLocally`, under the same lock, so no handoff can slip between the two.
   */
  async mount<T>(name: string, log: Logger, mountLocally: () => Promise<T>): Promise<T> {
    return this.locks.run(name, async () => {
      for (let attempt = 1; attempt <= 5; attempt++) {
        const found = await this.deps.repo.get(name);
        if (!found || found.value.state !== 'ready') throw new BerthError('ERR_VOLUME_NOT_FOUND', `volume ${name} does not exist`);
        const { value: record, revision } = found;
        if (record.owner !== this.host) {
          try {
            await this.takeOver(record, { viaMount: true }, log);
          } catch (error) {
            if (!isBerthError(error, 'ERR_STATE_CONFLICT')) throw error;
            await sleep(200);
          }
          continue;
        }
        if (!this.lease.healthy) throw new BerthError('ERR_STATE_UNAVAILABLE', `cannot confirm that this host still owns volume ${name}: the cluster store has not answered for ${this.deps.settings.leaseTtlSeconds}s`);
        if (record.handoff && record.handoff.to !== this.host && Date.parse(record.handoff.until) > Date.now()) {
          throw new BerthError('ERR_VOLUME_BUSY', `volume ${name} is being handed off to host ${record.handoff.to}; start the container there, or retry after ${record.handoff.until}`);
        }
        // Without its claim this host looks gone to the others, who could fail over while it mounts.
        if (!(await this.holdsClaim(record))) continue;
        await this.ensureLiveCopy(record, log);
        if (record.mounted && record.handoff === undefined) return mountLocally();
        const { handoff: _dropped, ...rest } = record;
        if ((await this.deps.repo.tryPut({ ...rest, mounted: true }, revision)) !== undefined) return mountLocally();
      }
      throw new BerthError('ERR_STATE_CONFLICT', `volume ${name} kept changing while it was being mounted; retry`);
    });
  }

  /**
   * Unmount on the owner: after the last local reference goes, ship the final state to the replicas, then
   * mark the volume unmounted. (A former owner unmounts without this lock: its demotion holds the lock
   * while it waits for those unmounts.)
   */
  async unmount(name: string, log: Logger, unmountLocally: () => Promise<number>): Promise<void> {
    await this.locks.run(name, async () => {
      if ((await unmountLocally()) > 0) return;
      const found = await this.deps.repo.get(name);
      if (!found || found.value.owner !== this.host) return;
      let record = found.value;
      let revision = found.revision;
      const chain = this.deps.chain;
      if (chain && record.replicaHosts.length > 0 && this.lease.healthy) {
        const { id } = await this.volumeChain().snapshotIfChanged(record, true);
        await this.waitForReplicas(record, id, log);
        const fresh = await this.deps.repo.get(name);
        if (!fresh || fresh.value.owner !== this.host) return;
        record = fresh.value;
        revision = fresh.revision;
      }
      if (record.mounted) await this.deps.repo.tryPut({ ...record, mounted: false }, revision);
    });
  }

  /** `berth volume promote`: take the volume over on this host although its owner is gone (manual failover). */
  async promote(name: string, log: Logger): Promise<ClusterVolumeRecord> {
    return this.locks.run(name, async () => {
      const found = await this.deps.repo.get(name);
      if (!found) throw new BerthError('ERR_VOLUME_NOT_FOUND', `volume ${name} does not exist`);
      if (found.value.owner === this.host) return found.value;
      return this.takeOver(found.value, { viaMount: false }, log);
    });
  }

  /** `berth volume replicate VOL --to HOST`: keep one more copy on HOST. */
  async addReplica(name: string, host: string): Promise<ClusterVolumeRecord> {
    const reason = this.unavailableReason;
    if (reason) throw new BerthError('ERR_NOT_SUPPORTED', `replication needs ${reason}`);
    for (let attempt = 1; attempt <= 5; attempt++) {
      const found = await this.deps.repo.get(name);
      if (!found) throw new BerthError('ERR_VOLUME_NOT_FOUND', `volume ${name} does not exist`);
      const record = found.value;
      if (host === record.owner) throw new BerthError('ERR_INVALID_REQUEST', `host ${host} owns volume ${name}; a replica must be on another host`);
      if (record.replicaHosts.includes(host)) return record;
      if (!this.deps.live.liveHostNames().has(host)) throw new BerthError('ERR_INVALID_REQUEST', `host ${host} is not a live host of the cluster`);
      const next = { ...record, replicaHosts: [...record.replicaHosts, host] };
      if ((await this.deps.repo.tryPut(next, found.revision)) !== undefined) return next;
    }
    throw new BerthError('ERR_STATE_CONFLICT', `volume ${name} kept changing; retry`);
  }

  /** Deletes the cluster record once the caller removed the owner's data; every other host drops its copy. */
  async forget(name: string, revision: number): Promise<void> {
    await this.deps.repo.delete(name, revision);
    await this.locks.run(name, () => this.deps.chain?.removeReplication(name) ?? Promise.resolve());
  }

  /** Owner, epoch and replicas with their lag, for inspect. */
  describe(record: ClusterVolumeRecord, measureBytes = true): Promise<Record<string, unknown>> {
    return this.status.describe(record, measureBytes);
  }

  /** Replication figures of the volumes this host owns, as metric samples. */
  metrics(): Promise<MetricSample[]> {
    return this.status.metrics(this.cachedRecords());
  }

  // ---- what peers ask (served on the peer port) --------------------------------------------------

  /** A stream of a chain snapshot this host holds; never one from after a takeover it did not see. */
  async serveSnapshot(name: string, id: string, parent: string | undefined, peer: string): Promise<AsyncIterable<Buffer>> {
    const chain = this.requireChain();
    if (!isChainId(id) || (parent !== undefined && !isChainId(parent))) throw new BerthError('ERR_INVALID_REQUEST', 'snapshot ids must be chain ids');
    const found = await this.deps.repo.get(name);
    if (!found) throw new BerthError('ERR_VOLUME_NOT_FOUND', `volume ${name} does not exist`);
    if (isDiverged(found.value, id)) throw new BerthError('ERR_VOLUME_FENCED', `snapshot ${name}@${id} was taken after host ${found.value.owner} took the volume over at epoch ${found.value.epoch}; it is not served`);
    const held = await chain.replicationSnapshots(name);
    if (!held.includes(id)) throw new BerthError('ERR_SNAPSHOT_NOT_FOUND', `host ${this.host} does not hold ${name}@${id}`);
    if (parent !== undefined && !held.includes(parent)) throw new BerthError('ERR_SNAPSHOT_NOT_FOUND', `host ${this.host} no longer holds ${name}@${parent}`);
    this.sent.set(`${name}/${peer}`, { id, at: Date.now() });
    return chain.sendReplicationSnapshot(name, id, parent);
  }

  /**
   * A host wants to take the volume over: confirm it is unmounted here, take (or reuse) the final
   * snapshot, and hold off local Mounts while that host catches up and takes the record.
   */
  async prepareHandoff(name: string, to: string, epoch: number): Promise<{ snapshot: string }> {
    return this.locks.run(name, async () => {
      const chain = this.volumeChain();
      const found = await this.deps.repo.get(name);
      if (!found) throw new BerthError('ERR_VOLUME_NOT_FOUND', `volume ${name} does not exist`);
      const record = found.value;
      if (record.owner !== this.host || record.epoch !== epoch) throw new BerthError('ERR_VOLUME_FENCED', `host ${this.host} no longer owns volume ${name} at epoch ${epoch}`);
      const mounts = await this.deps.volumes.localMountCount(name);
      if (record.mounted || mounts > 0) throw new BerthError('ERR_VOLUME_MOUNTED_ELSEWHERE', `volume ${name} is mounted on host ${this.host}; stop its containers there first`);
      const { id: snapshot } = await chain.snapshotIfChanged(record, true);
      const until = new Date(Date.now() + this.deps.settings.handoffHoldMs).toISOString();
      await this.deps.repo.put({ ...record, handoff: { to, snapshot, until } }, found.revision);
      this.log.info({ volume: name, to, snapshot }, 'handing volume off');
      return { snapshot };
    });
  }

  // ---- taking a volume over ---------------------------------------------------------------------

  private async takeOver(record: ClusterVolumeRecord, how: { viaMount: boolean }, log: Logger): Promise<ClusterVolumeRecord> {
    const reason = this.unavailableReason;
    if (reason) {
      throw new BerthError('ERR_VOLUME_MOUNTED_ELSEWHERE', `volume ${record.name} lives on host ${record.owner}; moving it to this host needs ${reason}`);
    }
    this.requireChain();
    const deadline = Date.now() + this.deps.settings.catchUpBudgetMs;
    const claim = await this.deps.repo.owner(record.name);
    // A claim of a host the record does not name: a change of owner is being committed right now.
    if (claim !== undefined && claim.value.host !== record.owner) throw new BerthError('ERR_STATE_CONFLICT', `volume ${record.name} is changing owner; retry`);
    const ownerAlive = claim !== undefined;
    let base: string;
    if (ownerAlive) {
      if (record.mounted) throw new BerthError('ERR_VOLUME_MOUNTED_ELSEWHERE', `volume ${record.name} is in use on host ${record.owner}; stop its containers there first`);
      const { snapshot } = await this.peers()
        .json<{ snapshot: string }>(record.owner, 'POST', `/v1/replication/volumes/${encodeURIComponent(record.name)}/handoff`, { to: this.host, epoch: record.epoch })
        .catch((error: unknown) => {
          if (!isBerthError(error, 'ERR_PEER_UNAVAILABLE')) throw error;
          throw new BerthError('ERR_OWNER_UNAVAILABLE', `owner host ${record.owner} of volume ${record.name} still holds its lease but does not answer (${error.message}); if it is down, its lease expires within ${this.deps.settings.leaseTtlSeconds}s and the volume can then fail over`, { cause: error });
        });
      try {
        await this.catchUp(record, record.owner, snapshot, deadline, log);
      } catch (error) {
        await this.releaseHandoff(record.name);
        throw error;
      }
      base = snapshot;
    } else {
      const failover = record.options.failover ?? 'manual';
      const candidates = await this.liveCopies(record);
      const best = candidates[0];
      const mine = (await this.volumeChain().ids(record)).at(-1);
      if (how.viaMount && failover !== 'auto') {
        throw new BerthError('ERR_OWNER_UNAVAILABLE',
          `owner host ${record.owner} of volume ${record.name} is gone (its lease expired) and the volume has failover=manual; ` +
          `run "berth volume promote ${record.name}" on the host that should take it over${mine ? ` (this host holds it as of snapshot ${mine})` : ''}`);
      }
      if (!best && !mine) throw new BerthError('ERR_OWNER_UNAVAILABLE', `owner host ${record.owner} of volume ${record.name} is gone and no live host holds a copy of it`);
      if (best && best.host !== this.host && (!mine || best.id > mine)) await this.catchUp(record, best.host, best.id, deadline, log);
      const newest = (await this.volumeChain().ids(record)).at(-1);
      if (!newest) throw new BerthError('ERR_OWNER_UNAVAILABLE', `this host holds no copy of volume ${record.name}`);
      base = newest;
      log.warn({ volume: record.name, formerOwner: record.owner, base }, 'owner is gone: taking the volume over from the newest copy; writes after that snapshot are lost');
    }
    // The commit point: one compare-and-swap raises the epoch and names this host.
    const fresh = await this.deps.repo.get(record.name);
    if (!fresh || fresh.value.epoch !== record.epoch || fresh.value.owner !== record.owner) throw new BerthError('ERR_STATE_CONFLICT', `volume ${record.name} changed owner meanwhile; retry`);
    if (ownerAlive && (fresh.value.mounted || fresh.value.handoff?.to !== this.host || fresh.value.handoff.snapshot !== base)) {
      throw new BerthError('ERR_VOLUME_MOUNTED_ELSEWHERE', `volume ${record.name} was mounted again on host ${record.owner} during the handoff`);
    }
    const { handoff: _done, ...rest } = fresh.value;
    const taken: ClusterVolumeRecord = { ...rest, owner: this.host, epoch: record.epoch + 1, base, mounted: false, replicaHosts: nextReplicaHosts(fresh.value, this.host) };
    await this.deps.repo.put(taken, fresh.revision);
    await this.putClaim(taken);
    this.log.info({ volume: record.name, epoch: taken.epoch, from: record.owner, base, planned: ownerAlive }, 'took volume over');
    await this.ensureLiveCopy(taken, log);
    await this.deps.repo.deleteReplicaStatus(record.name, this.host).catch(() => undefined);
    await this.deps.repo.deleteHeadsBefore(record.name, taken.epoch).catch(() => undefined);
    this.schedule(record.name);
    return taken;
  }

  /** A handoff to this host that will not happen: the owner may mount the volume again at once. */
  private async releaseHandoff(name: string): Promise<void> {
    const found = await this.deps.repo.get(name).catch(() => undefined);
    if (found?.value.handoff?.to !== this.host) return;
    const { handoff: _released, ...rest } = found.value;
    await this.deps.repo.tryPut(rest, found.revision).catch(() => undefined);
  }

  /** Live hosts holding a copy, most up to date first (never a diverged one). */
  private async liveCopies(record: ClusterVolumeRecord): Promise<{ host: string; id: string }[]> {
    const live = this.deps.live.liveHostNames();
    const statuses = await this.deps.repo.replicaStatuses(record.name);
    return statuses
      .filter((status): status is ReplicaStatus & { id: string } => status.id !== undefined && live.has(status.host) && status.host !== record.owner && !isDiverged(record, status.id))
      .map((status) => ({ host: status.host, id: status.id }))
      .sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  }

  private async catchUp(record: ClusterVolumeRecord, from: string, id: string, deadline: number, log: Logger): Promise<void> {
    const chain = this.requireChain();
    await this.volumeChain().dropDiverged(record);
    const held = await this.volumeChain().ids(record);
    if (held.includes(id)) return;
    const parent = held.filter((candidate) => candidate < id).at(-1);
    log.info({ volume: record.name, from, id, parent: parent ?? null }, 'copying volume data before taking it over');
    const bytes = await pullChainSnapshot(chain, this.peers(), { volume: record.name, from, id, ...(parent ? { parent } : {}), deadline }, log);
    log.info({ volume: record.name, from, id, bytes }, 'volume data copied');
  }

  /** The owner's live data: made from the epoch's base snapshot when this host does not have it yet. */
  private async ensureLiveCopy(record: ClusterVolumeRecord, log: Logger): Promise<void> {
    if (await this.deps.volumes.hasLiveCopy(record.name)) return;
    const chain = this.requireChain();
    const base = record.base;
    if (!base) throw new BerthError('ERR_STORAGE', `this host owns volume ${record.name} but holds neither its data nor a snapshot to make it from`);
    const options = parseVolumeOptions(record.options);
    await this.deps.volumes.adopt(record.name, record.options, async () => {
      await chain.materializeReplicationSnapshot(record.name, base, options);
    }, log);
  }

  private async putClaim(record: ClusterVolumeRecord): Promise<void> {
    for (let attempt = 1; attempt <= 5; attempt++) {
      const current = await this.deps.repo.owner(record.name);
      try {
        await this.deps.repo.putOwner(record.name, { host: this.host, epoch: record.epoch }, this.lease.current(), current?.revision ?? 0);
        return;
      } catch (error) {
        if (!isBerthError(error, 'ERR_STATE_CONFLICT')) throw error;
      }
    }
  }

  /** Whether this host holds the owner claim of a volume it owns, putting it back if it is missing (never over another host's). */
  private async holdsClaim(record: ClusterVolumeRecord): Promise<boolean> {
    const current = await this.deps.repo.owner(record.name);
    if (current?.value.host === this.host) return true;
    if (current !== undefined) return false; // another host is taking it over: read the record again
    try {
      await this.deps.repo.putOwner(record.name, { host: this.host, epoch: record.epoch }, this.lease.current(), 0);
      return true;
    } catch (error) {
      if (isBerthError(error, 'ERR_STATE_CONFLICT')) return false;
      throw error;
    }
  }

  /** After a new lease: claims again every volume the records still give this host. */
  private async reclaimOwned(lease: Lease): Promise<void> {
    for (const { value: record } of await this.deps.repo.list()) {
      if (record.owner !== this.host) continue;
      const current = await this.deps.repo.owner(record.name);
      if (current && current.value.host !== this.host) continue; // someone else claimed it meanwhile: not ours to take back
      await this.deps.repo.putOwner(record.name, { host: this.host, epoch: record.epoch }, lease, current?.revision ?? 0).catch((error: unknown) =>
        this.log.warn({ volume: record.name, err: errorMessage(error) }, 'cannot claim volume again'),
      );
    }
  }

  // ---- the per-volume loop ------------------------------------------------------------------------

  private onChange(key?: string): void {
    if (key === undefined) {
      void this.knownNames().then((names) => names.forEach((name) => this.schedule(name)), () => undefined);
      return;
    }
    const name = ClusterVolumeRepository.volumeOf(key);
    if (name) this.schedule(name);
  }

  private async knownNames(): Promise<string[]> {
    const names = new Set(this.cachedRecords().map((record) => record.name));
    for (const name of (await this.deps.chain?.replicationVolumes()) ?? []) names.add(name);
    return [...names];
  }

  /** Runs `step` for the volume soon, once, however many changes asked for it meanwhile. */
  private schedule(name: string, delayMs = 0): void {
    if (this.stopped) return;
    if (this.running.has(name)) {
      this.pending.add(name);
      return;
    }
    const existing = this.timers.get(name);
    if (existing) {
      if (delayMs > 0) return;
      clearTimeout(existing);
    }
    const timer = setTimeout(() => {
      this.timers.delete(name);
      this.running.add(name);
      void this.step(name)
        .catch((error: unknown) => this.log.warn({ volume: name, err: errorMessage(error) }, 'replication step failed; retrying'))
        .finally(() => {
          this.running.delete(name);
          if (this.pending.delete(name)) this.schedule(name);
          else if (this.nextDelay.has(name)) this.schedule(name, this.nextDelay.get(name));
        });
    }, delayMs);
    timer.unref();
    this.timers.set(name, timer);
  }

  private async step(name: string): Promise<void> {
    this.nextDelay.delete(name);
    // The record is read under the lock: a Mount may have just made this host the owner.
    const interval = await this.locks.run(name, async (): Promise<number | undefined> => {
      const found = await this.deps.repo.get(name);
      const chain = this.deps.chain;
      if (!found) {
        await this.dropEverything(name);
        return undefined;
      }
      const record = found.value;
      if (record.state !== 'ready') return undefined;
      const every = parseVolumeOptions(record.options).replicateEveryMs ?? this.deps.settings.defaultIntervalMs;
      if (record.owner === this.host) {
        if (!chain || !this.lease.healthy) return undefined;
        // A takeover interrupted between taking the record and making the live data finishes here.
        if (!(await this.deps.volumes.hasLiveCopy(name))) await this.ensureLiveCopy(record, this.log);
        // Mounts the engine lost (released by the mount reconciler) must not block a handoff forever.
        if (record.mounted && (await this.deps.volumes.localMountCount(name)) === 0) await this.deps.repo.tryPut({ ...record, mounted: false }, found.revision);
        if (record.replicaHosts.length === 0) return undefined;
        return this.shipping.step(found, every);
      }
      this.shipping.forget(name);
      if (await this.deps.volumes.hasLiveCopy(name)) await this.demote(record);
      if (!chain) return undefined;
      if (!record.replicaHosts.includes(this.host)) {
        const held = await chain.replicationSnapshots(name);
        if (held.some(isChainId)) {
          // Writes a former owner kept aside (diverged-*) stay for the operator, whatever happens to the copy.
          const keptAside = held.filter((id) => !isChainId(id));
          if (keptAside.length === 0) await chain.removeReplication(name);
          else for (const id of held.filter(isChainId)) await chain.deleteReplicationSnapshot(name, id);
          await this.deps.repo.deleteReplicaStatus(name, this.host).catch(() => undefined);
          this.log.info({ volume: name, ...(keptAside.length > 0 ? { keptAside } : {}) }, 'dropped the copy of a volume this host no longer keeps');
        }
        return undefined;
      }
      await this.pullHead(record, chain);
      return every;
    });
    if (interval !== undefined) this.nextDelay.set(name, interval);
  }

  /** Replica: pull the owner's newest snapshot of the current epoch, if newer than what is held. */
  private async pullHead(record: ClusterVolumeRecord, chain: ReplicationStore): Promise<void> {
    const peers = this.deps.peers;
    if (!peers) return;
    await this.volumeChain().dropDiverged(record);
    const head = await this.deps.repo.head(record.name, record.epoch);
    const held = await this.volumeChain().ids(record);
    const newest = held.at(-1);
    if (!head || head.epoch !== record.epoch) {
      if (newest) await this.report(record.name, { state: 'in-sync', id: newest });
      return;
    }
    if (newest === head.id) return;
    const parent = held.filter((id) => id < head.id).at(-1);
    await this.report(record.name, { state: 'syncing', ...(newest ? { id: newest } : {}) });
    try {
      const bytes = await pullChainSnapshot(chain, peers, { volume: record.name, from: record.owner, id: head.id, ...(parent ? { parent } : {}) }, this.log);
      await this.report(record.name, { state: 'in-sync', id: head.id, takenAt: head.takenAt, receivedAt: new Date().toISOString(), lastTransferBytes: bytes });
      this.log.debug({ volume: record.name, id: head.id, bytes }, 'replica caught up');
      // Older snapshots go after the report: the owner learns of the new one without waiting for that.
      for (const id of held) if (id !== head.id) await chain.deleteReplicationSnapshot(record.name, id);
    } catch (error) {
      await this.report(record.name, { state: 'failing', ...(newest ? { id: newest } : {}), error: errorMessage(error) });
      throw error;
    }
  }

  /** Writes this replica's status; what is known of the same snapshot (when it was taken, bytes) is kept. */
  private async report(name: string, status: Omit<ReplicaStatus, 'host'>): Promise<void> {
    const previous = (await this.deps.repo.replicaStatuses(name)).find((candidate) => candidate.host === this.host);
    const { error: _old, ...same } = previous?.id === status.id && previous !== undefined ? previous : { error: undefined };
    await this.deps.repo.putReplicaStatus(name, { ...same, ...status, host: this.host });
  }

  /**
   * A former owner: another host took the volume over. Containers still using it here are stopped (they
   * write to data that no longer counts), writes made after the takeover point are kept aside under a
   * `diverged-*` id for the operator, and the live copy goes; the chain stays so the host rejoins as a replica.
   */
  private async demote(record: ClusterVolumeRecord): Promise<void> {
    const name = record.name;
    const users = (await findVolumeUsers(this.deps.engine, this.deps.driverName).catch(() => undefined))?.get(name) ?? [];
    if (users.length > 0) {
      this.log.warn({ volume: name, owner: record.owner, epoch: record.epoch, containers: users.map((user) => user.name) }, 'fenced: another host owns this volume now; stopping its containers here');
      for (const user of users) await this.deps.engine.stopContainer(user.id, STOP_TIMEOUT_SECONDS).catch(() => undefined);
    }
    for (let waited = 0; (await this.deps.volumes.localMountCount(name)) > 0; waited += 500) {
      if (waited > 30_000) throw new BerthError('ERR_VOLUME_IN_USE', `volume ${name} is still mounted here although host ${record.owner} owns it; retrying`);
      await sleep(500);
    }
    const chain = this.requireChain();
    const held = await chain.replicationSnapshots(name);
    const newest = held.filter(isChainId).at(-1);
    const changed = newest === undefined ? 1 : await chain.changedBytesSince(name, newest).catch(() => 1);
    if (changed > 0 || (newest !== undefined && isDiverged(record, newest))) {
      const keep = `diverged-e${String(record.epoch - 1).padStart(8, '0')}-${new Date().toISOString().replace(/[:.]/g, '').toLowerCase()}`;
      await chain.takeReplicationSnapshot(name, keep);
      this.log.warn({ volume: name, kept: keep }, 'writes made here after another host took the volume over are kept aside, not replicated');
    }
    await this.deps.volumes.relinquish(name, () => chain.dropLiveData(name));
    await this.volumeChain().dropDiverged(record);
    this.log.info({ volume: name, owner: record.owner, epoch: record.epoch }, 'gave the volume up to its new owner');
  }

  private async dropEverything(name: string): Promise<void> {
    this.shipping.forget(name);
    if (await this.deps.volumes.hasLiveCopy(name)) {
      if ((await this.deps.volumes.localMountCount(name)) > 0) {
        this.log.error({ volume: name }, 'volume was removed in the cluster while mounted here; keeping the local copy');
        return;
      }
      await this.deps.volumes.remove(name);
    }
    const chain = this.deps.chain;
    if (chain && (await chain.replicationVolumes()).includes(name)) {
      await chain.removeReplication(name);
      this.log.info({ volume: name }, 'removed the copy of a volume removed in the cluster');
    }
  }

  // ---- the chain ------------------------------------------------------------------------------------

  /** The local chain of a volume, seen through its record. */
  private volumeChain(): VolumeChain {
    return new VolumeChain(this.requireChain(), this.deps.repo, (taken) => this.log.debug(taken, 'chain snapshot taken'));
  }

  /** Snapshots last sent to peers of this volume, within SENT_KEEP_MS (their next parents). */
  private recentlySent(name: string): string[] {
    const recent = Date.now() - SENT_KEEP_MS;
    const ids: string[] = [];
    for (const [key, sent] of this.sent) {
      if (sent.at < recent) this.sent.delete(key);
      else if (key.startsWith(`${name}/`)) ids.push(sent.id);
    }
    return ids;
  }

  private async waitForReplicas(record: ClusterVolumeRecord, id: string, log: Logger): Promise<void> {
    const deadline = Date.now() + this.deps.settings.finalShipWaitMs;
    const live = this.deps.live.liveHostNames();
    const waitingFor = record.replicaHosts.filter((host) => live.has(host));
    while (waitingFor.length > 0) {
      const statuses = await this.deps.repo.replicaStatuses(record.name);
      const behind = waitingFor.filter((host) => {
        const held = statuses.find((status) => status.host === host)?.id;
        return held === undefined || held < id;
      });
      if (behind.length === 0) {
        log.info({ volume: record.name, snapshot: id }, 'final state shipped to every live replica');
        return;
      }
      if (Date.now() > deadline) {
        log.warn({ volume: record.name, snapshot: id, behind }, 'replicas did not confirm the final state in time; a handoff to them copies it first');
        return;
      }
      await sleep(100);
    }
  }

  private requireChain(): ReplicationStore {
    const chain = this.deps.chain;
    if (!chain) throw new BerthError('ERR_NOT_SUPPORTED', `replication needs a backend that can ship snapshots; this agent uses ${this.deps.backendKind}`);
    return chain;
  }

  private peers(): PeerLink {
    if (!this.deps.peers) throw new BerthError('ERR_NOT_SUPPORTED', 'replication needs the peer port: start every agent with --pki-dir (see berth cluster init)');
    return this.deps.peers;
  }
}

/** Copies after a change of owner: the former owner first (it holds nearly everything), then the others. */
function nextReplicaHosts(record: ClusterVolumeRecord, newOwner: string): string[] {
  const copies = Math.max(Number(record.options.replicas ?? '1'), 1 + record.replicaHosts.length);
  return [...new Set([record.owner, ...record.replicaHosts])].filter((host) => host !== newOwner).slice(0, copies - 1);
}
