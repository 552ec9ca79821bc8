import { BerthError, isBerthError } from '../../plugins/errors/berth-error.js';
import type { Lease, StateStore } from '../../plugins/state/state-store.js';
import {
  parseChainHead,
  parseClusterVolume,
  parseOwnerClaim,
  parseReplicaStatus,
  type ChainHead,
  type ClusterVolumeRecord,
  type OwnerClaim,
  type ReplicaStatus,
} from './replication-records.js';

/** Everything replication keeps in the shared store lives under this prefix. */
export const VOLUME_CLUSTER_PREFIX = 'vol/';
const RECORDS = `${VOLUME_CLUSTER_PREFIX}records/`;
const OWNERS = `${VOLUME_CLUSTER_PREFIX}owners/`;
const HEADS = `${VOLUME_CLUSTER_PREFIX}heads/`;
const REPLICAS = `${VOLUME_CLUSTER_PREFIX}replicas/`;

export interface Versioned<T> {
  readonly value: T;
  /** modRevision, for compare-and-swap. */
  readonly revision: number;
}

/** Owns the key layout of cluster volumes; every read is validated, every ownership change is compare-and-swap. */
export class ClusterVolumeRepository {
  constructor(readonly store: StateStore) {}

  static recordName(key: string): string | undefined {
    return key.startsWith(RECORDS) ? key.slice(RECORDS.length) : undefined;
  }

  /** Volume name a key of any kind belongs to. */
  static volumeOf(key: string): string | undefined {
    for (const prefix of [RECORDS, OWNERS, HEADS, REPLICAS]) {
      if (key.startsWith(prefix)) return key.slice(prefix.length).split('/')[0];
    }
    return undefined;
  }

  async get(name: string): Promise<Versioned<ClusterVolumeRecord> | undefined> {
    const entry = await this.store.get(RECORDS + name);
    return entry ? { value: parseClusterVolume(entry.key, entry.value), revision: entry.modRevision } : undefined;
  }

  async list(): Promise<Versioned<ClusterVolumeRecord>[]> {
    const { entries } = await this.store.list(RECORDS);
    return entries.map((entry) => ({ value: parseClusterVolume(entry.key, entry.value), revision: entry.modRevision }));
  }

  /** Writes only if the record is still at `expectRevision` (0: must not exist); returns the new revision. */
  put(record: ClusterVolumeRecord, expectRevision: number): Promise<number> {
    return this.store.put(RECORDS + record.name, JSON.stringify(record), { expectRevision });
  }

  /** Like put, but a lost race is `undefined` instead of an error. */
  async tryPut(record: ClusterVolumeRecord, expectRevision: number): Promise<number | undefined> {
    try {
      return await this.put(record, expectRevision);
    } catch (error) {
      if (isBerthError(error, 'ERR_STATE_CONFLICT')) return undefined;
      throw error;
    }
  }

  /** Deletes the record (compare-and-swap), then the heads, statuses and owner claim that belonged to it. */
  async delete(name: string, expectRevision: number): Promise<void> {
    const deleted = await this.store.delete(RECORDS + name, { expectRevision });
    if (!deleted) throw new BerthError('ERR_STATE_CONFLICT', `volume record ${name} vanished while being deleted`);
    for (const prefix of [`${HEADS}${name}/`, `${REPLICAS}${name}/`]) {
      for (const entry of (await this.store.list(prefix)).entries) await this.store.delete(entry.key);
    }
    await this.store.delete(OWNERS + name);
  }

  async owner(name: string): Promise<Versioned<OwnerClaim> | undefined> {
    const entry = await this.store.get(OWNERS + name);
    return entry ? { value: parseOwnerClaim(entry.key, entry.value), revision: entry.modRevision } : undefined;
  }

  /** Puts the owner claim under `lease` if the claim is still at `expectRevision` (0: none). */
  putOwner(name: string, claim: OwnerClaim, lease: Lease, expectRevision: number): Promise<number> {
    return this.store.put(OWNERS + name, JSON.stringify(claim), { lease: lease.id, expectRevision });
  }

  async deleteOwner(name: string, expectRevision: number): Promise<void> {
    await this.store.delete(OWNERS + name, { expectRevision });
  }

  async head(name: string, epoch: number): Promise<ChainHead | undefined> {
    const entry = await this.store.get(headKey(name, epoch));
    return entry ? parseChainHead(entry.key, entry.value) : undefined;
  }

  async putHead(name: string, head: ChainHead): Promise<void> {
    await this.store.put(headKey(name, head.epoch), JSON.stringify(head));
  }

  /** Heads of epochs before `epoch` are of no use once every replica follows the new owner. */
  async deleteHeadsBefore(name: string, epoch: number): Promise<void> {
    for (const entry of (await this.store.list(`${HEADS}${name}/`)).entries) {
      if (parseChainHead(entry.key, entry.value).epoch < epoch) await this.store.delete(entry.key);
    }
  }

  async replicaStatuses(name: string): Promise<ReplicaStatus[]> {
    const { entries } = await this.store.list(`${REPLICAS}${name}/`);
    return entries.map((entry) => parseReplicaStatus(entry.key, entry.value));
  }

  async putReplicaStatus(name: string, status: ReplicaStatus): Promise<void> {
    await this.store.put(`${REPLICAS}${name}/${status.host}`, JSON.stringify(status));
  }

  async deleteReplicaStatus(name: string, host: string): Promise<void> {
    await this.store.delete(`${REPLICAS}${name}/${host}`);
  }
}

function headKey(name: string, epoch: number): string {
  return `${HEADS}${name}/${String(epoch).padStart(8, '0')}`;
}
