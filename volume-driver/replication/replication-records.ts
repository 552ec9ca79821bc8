import { recordReader } from '../../plugins/state/record-reader.js';

export type FailoverMode = 'auto' | 'manual';

/**
 * A volume's cluster-wide record (on a shared etcd every volume name is one volume cluster-wide).
 * `owner` is the one host that may mount it read-write; `epoch` grows by one at every change of owner
 * and is the fencing token: chain snapshots carry it in their ids, heads are kept per epoch, and a host
 * acts as owner only while this record names it at the epoch it took.
 */
export interface ClusterVolumeRecord {
  readonly name: string;
  readonly state: 'creating' | 'ready';
  /** Options as the user gave them; every host that takes the volume over creates it with these. */
  readonly options: Readonly<Record<string, string>>;
  readonly backend: string;
  readonly createdAt: string;
  readonly owner: string;
  readonly epoch: number;
  /** Hosts that keep a copy (besides the owner), in the order they were chosen. */
  readonly replicaHosts: readonly string[];
  /** Whether the owner has the volume mounted (set at first Mount, cleared at last Unmount). */
  readonly mounted: boolean;
  /** The chain snapshot the current epoch started from (absent for epoch 1). */
  readonly base?: string;
  /** A planned handoff in progress: the owner took `snapshot` as its final state for `to`. */
  readonly handoff?: { readonly to: string; readonly snapshot: string; readonly until: string };
}

/** The owner's liveness: this key lives under the owner agent's lease and goes when the agent does. */
export interface OwnerClaim {
  readonly host: string;
  readonly epoch: number;
}

/** The newest chain snapshot of an epoch, published by that epoch's owner. */
export interface ChainHead {
  readonly epoch: number;
  readonly id: string;
  readonly takenAt: string;
  /** Set on the snapshot an Unmount took: the owner's final state before a possible handoff. */
  readonly final?: boolean;
}

/** What one replica holds, written by that replica. */
export interface ReplicaStatus {
  readonly host: string;
  /** Newest complete chain snapshot held, and when the owner took it. */
  readonly id?: string;
  readonly takenAt?: string;
  readonly receivedAt?: string;
  /** Bytes of the last transfer. */
  readonly lastTransferBytes?: number;
  readonly state: 'syncing' | 'in-sync' | 'failing';
  readonly error?: string;
}

const CHAIN_ID = /^e(\d{8})-(\d{8})$/;

export function chainId(epoch: number, seq: number): string {
  return `e${String(epoch).padStart(8, '0')}-${String(seq).padStart(8, '0')}`;
}

/** Epoch and sequence of a chain id; undefined for other names (e.g. kept diverged data). */
export function parseChainId(id: string): { epoch: number; seq: number } | undefined {
  const match = CHAIN_ID.exec(id);
  return match ? { epoch: Number(match[1]), seq: Number(match[2]) } : undefined;
}

export function isChainId(id: string): boolean {
  return CHAIN_ID.test(id);
}

/**
 * A chain snapshot of an earlier epoch taken after the one the record's epoch started from: written by a
 * former owner after it lost the volume. Never served, never a parent.
 */
export function isDiverged(record: ClusterVolumeRecord, id: string): boolean {
  const parsed = parseChainId(id);
  if (!parsed || parsed.epoch >= record.epoch) return false;
  return record.base === undefined || id > record.base;
}

const { object, str: string, optionalStr: optionalString, corrupt } = recordReader('replication record');

function count(key: string, record: Record<string, unknown>, field: string): number {
  const value = record[field];
  if (!Number.isInteger(value) || (value as number) < 0) throw corrupt(key, `${field} is invalid`);
  return value as number;
}

export function parseClusterVolume(key: string, text: string): ClusterVolumeRecord {
  const record = object(key, text);
  const state = record.state;
  if (state !== 'creating' && state !== 'ready') throw corrupt(key, 'state is invalid');
  const options = record.options;
  if (typeof options !== 'object' || options === null || Object.values(options).some((value) => typeof value !== 'string')) throw corrupt(key, 'options are invalid');
  const replicaHosts = record.replicaHosts;
  if (!Array.isArray(replicaHosts) || replicaHosts.some((host) => typeof host !== 'string')) throw corrupt(key, 'replicaHosts are invalid');
  if (typeof record.mounted !== 'boolean') throw corrupt(key, 'mounted is invalid');
  const base = optionalString(key, record, 'base');
  let handoff: ClusterVolumeRecord['handoff'];
  if (record.handoff !== undefined) {
    const raw = record.handoff as Record<string, unknown>;
    if (typeof raw !== 'object' || raw === null) throw corrupt(key, 'handoff is invalid');
    handoff = { to: string(key, raw, 'to'), snapshot: string(key, raw, 'snapshot'), until: string(key, raw, 'until') };
  }
  return {
    name: string(key, record, 'name'),
    state,
    options: options as Record<string, string>,
    backend: string(key, record, 'backend'),
    createdAt: string(key, record, 'createdAt'),
    owner: string(key, record, 'owner'),
    epoch: count(key, record, 'epoch'),
    replicaHosts: replicaHosts as string[],
    mounted: record.mounted,
    ...(base === undefined ? {} : { base }),
    ...(handoff === undefined ? {} : { handoff }),
  };
}

export function parseOwnerClaim(key: string, text: string): OwnerClaim {
  const record = object(key, text);
  return { host: string(key, record, 'host'), epoch: count(key, record, 'epoch') };
}

export function parseChainHead(key: string, text: string): ChainHead {
  const record = object(key, text);
  const id = string(key, record, 'id');
  if (!isChainId(id)) throw corrupt(key, 'id is not a chain id');
  return { epoch: count(key, record, 'epoch'), id, takenAt: string(key, record, 'takenAt'), ...(record.final === true ? { final: true } : {}) };
}

export function parseReplicaStatus(key: string, text: string): ReplicaStatus {
  const record = object(key, text);
  const state = record.state;
  if (state !== 'syncing' && state !== 'in-sync' && state !== 'failing') throw corrupt(key, 'state is invalid');
  const id = optionalString(key, record, 'id');
  const takenAt = optionalString(key, record, 'takenAt');
  const receivedAt = optionalString(key, record, 'receivedAt');
  const error = optionalString(key, record, 'error');
  const bytes = record.lastTransferBytes;
  return {
    host: string(key, record, 'host'),
    state,
    ...(id === undefined ? {} : { id }),
    ...(takenAt === undefined ? {} : { takenAt }),
    ...(receivedAt === undefined ? {} : { receivedAt }),
    ...(typeof bytes === 'number' ? { lastTransferBytes: bytes } : {}),
    ...(error === undefined ? {} : { error }),
  };
}
