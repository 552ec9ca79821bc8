// The cluster the replication benchmark runs on: namespaced hosts with one etcd in the underlay's switch
// namespace and certificates from `berth cluster init` (startEtcdCluster), and on every host an agent on
// its own loop-mounted btrfs pool with the peer port enabled. The same set-up as the replication e2e
// tests, with the agents' defaults otherwise.
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Cluster, Host } from '../../test/helpers/cluster.js';
import { startEtcdCluster } from '../../test/helpers/etcd-cluster.js';
import { disposeWithMounts } from '../../test/helpers/loop-mounts.js';
import { ensurePostgresImage } from '../../test/helpers/postgres.js';
import { requirePrerequisites } from '../../test/helpers/prerequisites.js';
import { ensureBusyboxImage } from '../../test/helpers/test-images.js';

export interface ClusterSettings {
  readonly hosts: number;
  /** `--pool-size` of every agent's btrfs pool (a sparse file). */
  readonly poolSize: string;
  /** Folder of a host's pool file by host name (default the host's own folder, on the machine's disk). */
  readonly poolDirs: ReadonlyMap<string, string>;
  /** Extra agent arguments, after the standard ones. */
  readonly agentArgs: readonly string[];
  readonly agentEntry: string | undefined;
  readonly log: (message: string) => void;
}

export interface ReplicationCluster {
  readonly cluster: Cluster;
  readonly hosts: readonly Host[];
  readonly etcdEndpoint: string;
  readonly postgresImage: string;
  readonly busyboxImage: string;
  /** Agents and engines (with the cluster), then etcd; idempotent, never rejects: resolves with what failed. */
  dispose(): Promise<string[]>;
}

/** Starts the hosts, etcd and the agents; on a failure removes what it made and rethrows. */
export async function startReplicationCluster(settings: ClusterSettings): Promise<ReplicationCluster> {
  requirePrerequisites(['mkfs.btrfs', 'losetup', 'openssl', 'etcd', 'etcdctl']);
  const stack = await startEtcdCluster({ hosts: settings.hosts, prefix: 'benchrepl', ...(settings.agentEntry === undefined ? {} : { agentEntry: settings.agentEntry }) });
  const { cluster, etcd, pkiDir } = stack;
  // Pools placed elsewhere (another device) get a folder of their own there, removed at the end.
  const poolFolders = new Map<string, { path: string; dispose(): Promise<void> }>();
  let disposal: Promise<string[]> | undefined;
  const dispose = (): Promise<string[]> => (disposal ??= (async () => {
    const problems = await stack.dispose();
    for (const folder of poolFolders.values()) problems.push(...(await disposeWithMounts(folder).catch((err: unknown) => [err instanceof Error ? err.message : String(err)])));
    return problems;
  })());
  try {
    const endpoint = etcd.endpoint;
    for (const [hostName, dir] of settings.poolDirs) {
      const path = await mkdtemp(join(dir, 'berth-bench-pool-'));
      poolFolders.set(hostName, { path, dispose: () => rm(path, { recursive: true, force: true }) });
    }
    const agentArgs = (host: Host): string[] => [
      '--store', `etcd://${endpoint}`,
      '--host-name', host.name,
      '--advertise-addr', host.address,
      '--btrfs-pool', join(poolFolders.get(host.name)?.path ?? host.dir, 'pool.img'),
      '--pool-size', settings.poolSize,
      '--pki-dir', pkiDir,
      // 'replica caught up' (with the bytes of each transfer) is a debug line.
      '--log-level', 'debug',
      ...settings.agentArgs,
    ];
    settings.log(`etcd on ${endpoint} in the switch namespace; importing images and starting agents on ${cluster.hosts.map((host) => host.name).join(', ')}`);
    const images = await Promise.all(cluster.hosts.map(async (host) => {
      const busybox = await ensureBusyboxImage(host);
      const postgres = await ensurePostgresImage(host);
      await host.startAgent({ args: agentArgs(host) });
      return { busybox, postgres };
    }));
    const first = images[0];
    if (first === undefined) throw new Error('the cluster has no host');
    return { cluster, hosts: cluster.hosts, etcdEndpoint: endpoint, postgresImage: first.postgres, busyboxImage: first.busybox, dispose };
  } catch (err) {
    const problems = await dispose();
    if (problems.length > 0 && err instanceof Error) err.message += `\n(cleanup after the failed start: ${problems.join('; ')})`;
    throw err;
  }
}
