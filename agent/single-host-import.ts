// A host that ran alone keeps its volumes when it joins a cluster. Its records were in the single-host
// file store (<root>/state/berth.db); on a shared etcd the agent reads this host's records from etcd
// instead, so without this step the volumes would vanish from the engine while their data stays on
// disk. Run at start, before recovery: each volume moves from the file store to this host's records on
// etcd and becomes a cluster volume this host owns, unless its name is already in use in the cluster
// (then it stays in the file store, untouched).
import { rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { NETWORKS_KEY } from '../network-driver/control/network-repository.js';
import { errorMessage } from '../plugins/errors/berth-error.js';
import type { Logger } from '../plugins/logging/logger.js';
import { FileStateStore } from '../plugins/state/file-state-store.js';
import type { ClusterVolumeRepository } from '../volume-driver/replication/cluster-volume-repository.js';
import type { ClusterVolumeRecord } from '../volume-driver/replication/replication-records.js';
import { present, syncDirectory } from '../volume-driver/storage/storage-layout.js';
import { mountCount, type VolumeRecord } from '../volume-driver/volume-record.js';
import { VolumeRepository } from '../volume-driver/volume-repository.js';

/** Where a carried-over file store goes, so later starts do not read it again (kept for the operator). */
const IMPORTED_SUFFIX = '.imported';

/**
 * Moves the volume records of the file store at `path` to this host's records on etcd (`target`) and makes
 * each ready one a cluster volume this host owns (`cluster`, epoch 1, no replicas; the owner claim is
 * taken when replication starts, as for every volume it owns). Each record is written to etcd first and
 * deleted from the file store last, so a crash in between repeats nothing; nothing to do without a file
 * store. A name another host's volume has in the cluster, or this host's records on etcd with another
 * volume, is a conflict: that volume stays in the file store, untouched.
 */
export async function importSingleHostVolumes(path: string, target: VolumeRepository, cluster: ClusterVolumeRepository, hostName: string, log: Logger): Promise<void> {
  if (!(await present(path))) return;
  const source = await FileStateStore.open(path);
  const imported: string[] = [];
  const alreadyThere: string[] = [];
  const conflicts: Array<{ name: string; reason: string }> = [];
  let networks: string[];
  try {
    const sourceRecords = new VolumeRepository(source);
    for (const { record, revision } of await sourceRecords.list()) {
      const existing = await target.get(record.name);
      if (existing !== undefined && !sameVolume(existing.record, record)) {
        conflicts.push({ name: record.name, reason: `this host already has another volume ${record.name} on the cluster store (created ${existing.record.createdAt})` });
        continue;
      }
      const conflict = await claimName(cluster, record, hostName);
      if (conflict !== undefined) {
        conflicts.push({ name: record.name, reason: conflict });
        continue;
      }
      if (existing === undefined) {
        await target.put(record, 0);
        imported.push(record.name);
      } else {
        alreadyThere.push(record.name);
      }
      await sourceRecords.delete(record.name, revision);
    }
    networks = await networkNames(source);
  } finally {
    await source.close();
  }
  if (conflicts.length === 0) {
    await rename(path, `${path}${IMPORTED_SUFFIX}`);
    await syncDirectory(dirname(path));
  }
  if (imported.length + alreadyThere.length > 0) log.info({ imported, alreadyThere, from: path }, 'volumes of the single-host store carried over to the cluster store');
  for (const conflict of conflicts) log.error({ volume: conflict.name, from: path }, `volume not carried over to the cluster store: ${conflict.reason}; its data is untouched`);
  if (networks.length > 0) {
    log.warn({ networks }, 'networks of the single-host store are not carried over to the cluster store: remove them (docker network rm) and create them again');
  }
}

/**
 * Writes the cluster record of a ready volume (compare-and-swap on absence); the reason it cannot, or
 * undefined. A record already there for this very volume (an import a crash interrupted) is fine.
 */
async function claimName(cluster: ClusterVolumeRepository, record: VolumeRecord, hostName: string): Promise<string | undefined> {
  const clusterRecord: ClusterVolumeRecord = {
    name: record.name,
    state: 'ready',
    options: { ...record.options },
    backend: record.backend,
    createdAt: record.createdAt,
    owner: hostName,
    epoch: 1,
    replicaHosts: [],
    mounted: mountCount(record) > 0,
  };
  const existing = await cluster.get(record.name);
  if (existing === undefined) {
    // Records mid-create or mid-remove are settled by recovery; only ready volumes are claimed.
    if (record.state !== 'ready' || (await cluster.tryPut(clusterRecord, 0)) !== undefined) return undefined;
    return `another host took the name ${record.name} in the cluster meanwhile`;
  }
  if (existing.value.owner === hostName && existing.value.createdAt === record.createdAt) return undefined;
  return `host ${existing.value.owner} has a volume ${record.name} in the cluster`;
}

function sameVolume(a: VolumeRecord, b: VolumeRecord): boolean {
  return a.createdAt === b.createdAt && a.backend === b.backend;
}

async function networkNames(store: FileStateStore): Promise<string[]> {
  const entry = await store.get(NETWORKS_KEY);
  if (entry === undefined) return [];
  try {
    const index = JSON.parse(entry.value) as { networks?: Record<string, unknown> };
    return Object.keys(index.networks ?? {}).sort();
  } catch (error) {
    return [`(unreadable network index: ${errorMessage(error)})`];
  }
}
