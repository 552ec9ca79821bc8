// The paths the network benchmark measures between two simulated hosts hA and hB, and how each is
// built and taken down: the bare underlay (hA's namespace to hB's), Docker's swarm overlay, and
// Berth's overlay (agents on both hosts sharing one etcd).
import type { Host } from '../../test/helpers/cluster.js';
import { startEtcd, type EtcdServer } from '../../test/helpers/etcd-server.js';
import { runCommand } from '../../test/helpers/run-command.js';
import { waitUntil } from '../../test/helpers/wait-until.js';
import { wallClockMs, type Endpoint } from './measure.js';

export const PATH_IDS = ['berth', 'swarm', 'underlay'] as const;
export type PathId = (typeof PATH_IDS)[number];
export type OverlayId = Exclude<PathId, 'underlay'>;

/** Label on every container the benchmark starts. */
export const BENCH_LABEL = 'org.berth.bench=network';

/** How long a benchmark container lives at most, should every removal fail. */
const CONTAINER_LIFETIME_SECONDS = 3600;

export interface PathUnderTest {
  readonly id: PathId;
  /** Runs iperf3 and ping: on hA. */
  readonly client: Endpoint;
  /** Runs the iperf3 server and answers pings: on hB. */
  readonly server: Endpoint;
  /** MTU of the client's interface towards the server. */
  readonly mtu: number;
}

/** hA's network namespace to hB's over the veth pairs and the switch's bridge: the anchor for both overlays. */
export async function underlayPath(hA: Host, hB: Host): Promise<PathUnderTest> {
  const client: Endpoint = { where: `${hA.name}'s namespace`, prefix: hA.nsenter([]), address: hA.address };
  const server: Endpoint = { where: `${hB.name}'s namespace`, prefix: hB.nsenter([]), address: hB.address };
  return { id: 'underlay', client, server, mtu: await routeMtu(client, server.address) };
}

/** A container on hA and one on hB attached to `network`; tools run in their network namespaces. */
export async function overlayPath(id: OverlayId, hA: Host, hB: Host, network: string, image: string): Promise<PathUnderTest> {
  const client = await startContainer(hA, network, `bench-${id}-${hA.name}`, image);
  const server = await startContainer(hB, network, `bench-${id}-${hB.name}`, image);
  return { id, client, server, mtu: await routeMtu(client, server.address) };
}

export interface StartedContainer extends Endpoint {
  readonly id: string;
  /** Wall-clock times (ms) when `docker run -d` was started and when it returned. */
  readonly runStartedAt: number;
  readonly runReturnedAt: number;
}

/** `docker run -d --network NETWORK IMAGE sleep ...` on `host`; resolves with the container's namespace and address. */
export async function startContainer(host: Host, network: string, name: string, image: string): Promise<StartedContainer> {
  const runStartedAt = wallClockMs();
  const run = await host.dockerOk(['run', '--detach', '--network', network, '--name', name, '--label', BENCH_LABEL, image, 'sleep', String(CONTAINER_LIFETIME_SECONDS)]);
  const runReturnedAt = wallClockMs();
  const id = run.stdout.trim();
  const { pid, address } = await inspectContainer(host, id, network);
  return { id, where: `container ${name} on ${host.name}`, prefix: ['nsenter', '-t', String(pid), '-n', '--'], address, runStartedAt, runReturnedAt };
}

/** The pid and the address on `network` of a running container. */
async function inspectContainer(host: Host, container: string, network: string): Promise<{ pid: number; address: string }> {
  const format = `{{.State.Pid}} {{(index .NetworkSettings.Networks ${JSON.stringify(network)}).IPAddress}}`;
  const inspected = await host.dockerOk(['container', 'inspect', '--format', format, container]);
  const [pidText = '', address = ''] = inspected.stdout.trim().split(' ');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0 || address === '') {
    throw new Error(`container ${container} on ${host.name} has no pid or no address on ${network}: ${inspected.stdout.trim()}`);
  }
  return { pid, address };
}

/** MTU of the interface the endpoint's namespace routes `address` through. */
async function routeMtu(from: Endpoint, address: string): Promise<number> {
  const route = await runCommand([...from.prefix, 'ip', '-o', 'route', 'get', address], { timeoutMs: 10_000 });
  const device = / dev (\S+)/.exec(route.stdout)?.[1];
  if (route.code !== 0 || device === undefined) throw new Error(`no route from ${from.where} to ${address}: ${route.stderr.trim()}`);
  const link = await runCommand([...from.prefix, 'ip', '-o', 'link', 'show', 'dev', device], { timeoutMs: 10_000 });
  const mtu = Number(/ mtu (\d+)/.exec(link.stdout)?.[1]);
  if (!Number.isInteger(mtu)) throw new Error(`cannot read the MTU of ${device} in ${from.where}: ${link.stderr.trim()}`);
  return mtu;
}

// ---- Docker swarm overlay ------------------------------------------------------------------------

export interface SwarmSettings {
  readonly network: string;
  readonly subnet: string;
  /** VXLAN UDP port of the swarm's data path (swarm's default is 4789). */
  readonly dataPathPort: number;
}

/** `swarm init` on `manager`, `swarm join` of `worker` with the worker token, and an attachable overlay network. */
export async function startSwarmOverlay(manager: Host, worker: Host, settings: SwarmSettings): Promise<void> {
  await manager.dockerOk(['swarm', 'init', '--advertise-addr', manager.address, '--data-path-port', String(settings.dataPathPort)], { timeoutMs: 60_000 });
  const token = (await manager.dockerOk(['swarm', 'join-token', '--quiet', 'worker'])).stdout.trim();
  await worker.dockerOk(['swarm', 'join', '--token', token, '--advertise-addr', worker.address, `${manager.address}:2377`], { timeoutMs: 60_000 });
  await waitUntil(
    async () => {
      const nodes = await manager.docker(['node', 'ls', '--format', '{{.Status}}'], { timeoutMs: 10_000 });
      return nodes.code === 0 && nodes.stdout.split('\n').filter((status) => status.trim() === 'Ready').length === 2;
    },
    { description: `both swarm nodes to be Ready on ${manager.name}`, timeoutMs: 60_000, intervalMs: 250 },
  );
  await manager.dockerOk(['network', 'create', '--driver', 'overlay', '--attachable', '--subnet', settings.subnet, settings.network]);
}

/**
 * Removes the swarm network and makes both engines leave the swarm (worker first). Containers on the
 * network must be gone already. Never throws; resolves with what failed.
 */
export async function stopSwarm(manager: Host, worker: Host, network: string): Promise<string[]> {
  const problems: string[] = [];
  // The worker's attachments are released asynchronously after its containers are removed.
  try {
    await waitUntil(
      async () => {
        const removed = await manager.docker(['network', 'rm', network], { timeoutMs: 30_000 });
        return removed.code === 0 || /not found|No such network/i.test(removed.stderr);
      },
      { description: `swarm network ${network} to be removable`, timeoutMs: 30_000, intervalMs: 500 },
    );
  } catch (err) {
    problems.push(err instanceof Error ? err.message : String(err));
  }
  for (const host of [worker, manager]) {
    const left = await host.docker(['swarm', 'leave', '--force'], { timeoutMs: 60_000 }).catch((err: unknown) => ({ code: 1, stderr: String(err) }));
    if (left.code !== 0 && !/not part of a swarm/i.test(left.stderr)) problems.push(`swarm leave on ${host.name}: ${left.stderr.trim()}`);
  }
  return problems;
}

// ---- Berth overlay -------------------------------------------------------------------------------

export interface BerthSettings {
  readonly network: string;
  readonly subnet: string;
  /** etcd's client and peer ports inside hA's namespace. */
  readonly etcdClientPort: number;
  readonly etcdPeerPort: number;
  /** Extra agent arguments, after the store and the advertised address. */
  readonly agentArgs: readonly string[];
}

/**
 * Starts etcd inside `etcdHost`'s network namespace on its underlay address (reachable from every
 * host), resolving with it before anything else can fail, so the caller can always stop it.
 */
export function startEtcdOn(etcdHost: Host, settings: BerthSettings): Promise<EtcdServer> {
  return startEtcd({
    commandPrefix: ['nsenter', `--net=${etcdHost.netnsPath}`, '--'],
    listenAddress: etcdHost.address,
    clientPort: settings.etcdClientPort,
    peerPort: settings.etcdPeerPort,
  });
}

/**
 * An agent on every host (`--store etcd://... --host-name <host> --advertise-addr <host address>`), the network created
 * on the first host with Berth's driver and IPAM, and a bounded wait until the other hosts list it.
 */
export async function startBerthOverlay(hosts: readonly Host[], etcd: EtcdServer, settings: BerthSettings): Promise<void> {
  for (const host of hosts) {
    await host.startAgent({ args: ['--store', `etcd://${etcd.endpoint}`, '--host-name', host.name, '--advertise-addr', host.address, ...settings.agentArgs] });
  }
  const [creator, ...others] = hosts;
  if (creator === undefined) throw new Error('no host to create the Berth network on');
  await creator.dockerOk(['network', 'create', '--driver', 'berth', '--ipam-driver', 'berth', '--subnet', settings.subnet, settings.network]);
  for (const host of others) {
    await waitUntil(
      async () => {
        const listed = await host.docker(['network', 'ls', '--filter', `name=${settings.network}`, '--format', '{{.Name}} {{.Driver}}'], { timeoutMs: 10_000 });
        return listed.code === 0 && listed.stdout.split('\n').some((line) => line.trim() === `${settings.network} berth`);
      },
      { description: `Berth network ${settings.network} to appear on ${host.name}`, timeoutMs: 60_000, intervalMs: 200 },
    );
  }
}

/** Removes the Berth network on `host` (its containers must be gone). Never throws; resolves with what failed. */
export async function removeNetwork(host: Host, network: string): Promise<string[]> {
  const removed = await host.docker(['network', 'rm', network], { timeoutMs: 60_000 }).catch((err: unknown) => ({ code: 1, stderr: String(err) }));
  return removed.code === 0 || /not found|No such network/i.test(removed.stderr) ? [] : [`network rm ${network} on ${host.name}: ${removed.stderr.trim()}`];
}
