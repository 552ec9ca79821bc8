// The simulated cluster of the control-plane scale benchmark: N hosts as network namespaces joined by
// veth pairs to one bridge in a switch namespace (no route off the machine), one etcd on the switch,
// and a Berth agent in each host's namespace with its own data root, run and plugin directories. No
// engine: the benchmark calls each agent's plugin socket itself, as the host's engine would.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { AgentProcess } from '../../test/helpers/agent-process.js';
import { startEtcd, type EtcdServer } from '../../test/helpers/etcd-server.js';
import type { NetnsSet } from '../../test/helpers/netns-set.js';

export interface ScaleHost {
  /** h01, h02, ...: the agent's --host-name and the namespace's short name. */
  readonly name: string;
  /** Underlay address (the VTEP the agent advertises). */
  readonly address: string;
  /** Full name of the host's network namespace (`ip -n NAME`). */
  readonly netns: string;
  readonly netnsPath: string;
  /** The agent's own directory: root/, run/, plugins/ and agent.log. */
  readonly dir: string;
  readonly pluginSocket: string;
  readonly runDir: string;
  readonly logPath: string;
}

export interface UnderlaySettings {
  /** First three octets of the /24 the hosts share, e.g. 198.19.80. */
  readonly prefix: string;
  /** Last octet of the switch's own address, where etcd listens. */
  readonly switchOctet: number;
}

const SWITCH = 'sw';
const SWITCH_BRIDGE = 'br0';

/** Short host names h01...hNN, as many digits as N needs (at least two). */
export function hostNames(count: number): string[] {
  const width = Math.max(2, String(count).length);
  return Array.from({ length: count }, (_, i) => `h${String(i + 1).padStart(width, '0')}`);
}

/**
 * Creates the switch namespace (bridge br0 holding the switch's address) and one namespace per host,
 * each with a veth `ul0` on the bridge and address `<prefix>.<i>/24`; resolves with the hosts.
 */
export async function buildUnderlay(netns: NetnsSet, count: number, settings: UnderlaySettings, runDir: string): Promise<ScaleHost[]> {
  if (count < 2 || count > 200) throw new Error(`host count must be from 2 to 200, got ${count}`);
  await netns.add(SWITCH);
  await netns.ip(SWITCH, 'link', 'add', SWITCH_BRIDGE, 'type', 'bridge');
  await netns.ip(SWITCH, 'addr', 'add', `${settings.prefix}.${settings.switchOctet}/24`, 'dev', SWITCH_BRIDGE);
  await netns.ip(SWITCH, 'link', 'set', SWITCH_BRIDGE, 'up');
  const hosts: ScaleHost[] = [];
  for (const [i, name] of hostNames(count).entries()) {
    await netns.add(name);
    const port = `p${name}`;
    await netns.ip(SWITCH, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'ul0', 'netns', netns.name(name));
    await netns.ip(SWITCH, 'link', 'set', port, 'master', SWITCH_BRIDGE, 'up');
    const address = `${settings.prefix}.${i + 1}`;
    await netns.ip(name, 'addr', 'add', `${address}/24`, 'dev', 'ul0');
    await netns.ip(name, 'link', 'set', 'ul0', 'up');
    const dir = join(runDir, name);
    mkdirSync(dir, { recursive: true });
    const pluginSocket = join(dir, 'plugins', 'berth.sock');
    if (Buffer.byteLength(pluginSocket) > 107) throw new Error(`plugin socket path ${pluginSocket} exceeds the 107-byte Unix socket limit`);
    hosts.push({ name, address, netns: netns.name(name), netnsPath: netns.path(name), dir, pluginSocket, runDir: join(dir, 'run'), logPath: join(dir, 'agent.log') });
  }
  return hosts;
}

/** etcd inside the switch namespace on the switch's address, reachable from every host. */
export function startSwitchEtcd(netns: NetnsSet, settings: UnderlaySettings): Promise<EtcdServer> {
  return startEtcd({
    commandPrefix: netns.enter(SWITCH, []),
    listenAddress: `${settings.prefix}.${settings.switchOctet}`,
    clientPort: 2379,
    peerPort: 2380,
    startTimeoutMs: 30_000,
  });
}

export interface AgentSettings {
  readonly entry: string;
  readonly etcdEndpoint: string;
  /** Extra agent arguments, after the benchmark's own. */
  readonly agentArgs: readonly string[];
  /** Extra node arguments for one host's agent (a CPU profile). */
  readonly nodeArgs: (host: ScaleHost) => readonly string[];
  readonly readyTimeoutMs: number;
}

/**
 * Starts the agents `batch` at a time, each batch waiting for its plugin sockets (starting twenty node
 * processes at once on two cores makes every one of them slow). Each agent is handed to `started`
 * before its wait, so the caller can stop it whatever happens next.
 */
export async function startAgents(hosts: readonly ScaleHost[], settings: AgentSettings, batch: number, started: (agent: AgentProcess) => void): Promise<void> {
  if (!existsSync(settings.entry)) throw new Error(`agent entry ${settings.entry} not found; build first (npx tsc -p tsconfig.json)`);
  for (let from = 0; from < hosts.length; from += batch) {
    const agents = hosts.slice(from, from + batch).map((host) => {
      const agent = spawnAgent(host, settings);
      started(agent);
      return agent;
    });
    await Promise.all(agents.map((agent) => agent.waitReady(settings.readyTimeoutMs)));
  }
}

function spawnAgent(host: ScaleHost, settings: AgentSettings): AgentProcess {
  const command = [
    'nsenter', `--net=${host.netnsPath}`, '--',
    process.execPath, ...settings.nodeArgs(host), settings.entry, 'agent',
    '--name', 'berth',
    '--root', join(host.dir, 'root'),
    '--run-dir', host.runDir,
    '--plugin-dir', join(host.dir, 'plugins'),
    // Nobody serves it: the agent's engine sync logs warnings, which is expected here.
    '--docker-host', `unix://${join(host.dir, 'no-engine.sock')}`,
    '--store', `etcd://${settings.etcdEndpoint}`,
    '--host-name', host.name,
    '--advertise-addr', host.address,
    '--log-level', 'warn',
    ...settings.agentArgs,
  ];
  const log = openSync(host.logPath, 'a');
  try {
    // Its own process group: a Ctrl-C reaches the benchmark, which stops the agents in order.
    const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', log, log], detached: true });
    child.unref();
    return new AgentProcess(child, { name: `berth on ${host.name}`, socketPath: host.pluginSocket, logPath: host.logPath, command });
  } finally {
    closeSync(log);
  }
}
