// Namespaced hosts (startCluster) sharing one etcd in the underlay's switch namespace, so that cutting one
// host's link leaves the others their store, and peer certificates for every host from `berth cluster
// init`: the set-up of the replication tests and benchmark. Agents are left to the caller.
import { join } from 'node:path';
import { startCluster, type Cluster } from './cluster.js';
import { startEtcd, type EtcdServer } from './etcd-server.js';
import { repoRoot } from './repo-root.js';
import { checkCommand } from './run-command.js';

const SWITCH_ADDRESS = '198.18.0.250';

export interface EtcdCluster {
  readonly cluster: Cluster;
  readonly etcd: EtcdServer;
  /** `--pki-dir` of every agent: the cluster CA and each host's certificate, named by host. */
  readonly pkiDir: string;
  /** The cluster (agents and engines with it), then etcd; never rejects: resolves with what failed. */
  dispose(): Promise<string[]>;
}

export async function startEtcdCluster(options: { hosts: number; prefix: string; agentEntry?: string }): Promise<EtcdCluster> {
  const cluster = await startCluster({ hosts: options.hosts, prefix: options.prefix, ...(options.agentEntry === undefined ? {} : { agentEntry: options.agentEntry }) });
  let etcd: EtcdServer | undefined;
  const dispose = async (): Promise<string[]> => {
    const problems: string[] = [];
    // Agents stop with the cluster, before etcd goes away under them.
    await cluster.dispose().catch((err: unknown) => problems.push(err instanceof Error ? err.message : String(err)));
    await etcd?.stop().catch((err: unknown) => problems.push(`etcd stop: ${err instanceof Error ? err.message : String(err)}`));
    return problems;
  };
  try {
    await checkCommand(['ip', '-n', cluster.switchNetns, 'addr', 'add', `${SWITCH_ADDRESS}/24`, 'dev', 'br0']);
    etcd = await startEtcd({ listenAddress: SWITCH_ADDRESS, clientPort: 2379, peerPort: 2380, commandPrefix: ['nsenter', `--net=/run/netns/${cluster.switchNetns}`] });
    const pkiDir = join(cluster.runDir, 'pki');
    await checkCommand([process.execPath, options.agentEntry ?? join(repoRoot, 'dist', 'bin', 'berth.js'), 'cluster', 'init', '--pki-dir', pkiDir, ...cluster.hosts.map((host) => host.name)]);
    return { cluster, etcd, pkiDir, dispose };
  } catch (error) {
    const problems = await dispose();
    if (problems.length > 0 && error instanceof Error) error.message += `\n(cleanup after the failed start: ${problems.join('; ')})`;
    throw error;
  }
}
