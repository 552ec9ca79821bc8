// A cluster of simulated Docker hosts on one machine, for integration and e2e tests.
//
// Layout (see docs/environment.md, "Several Docker hosts on one machine"):
// - a `switch` network namespace holds a Linux bridge; each host is a network namespace joined to it
//   by a veth pair and addressed in 198.18.0.0/24 (no default route: traffic cannot leave the machine);
// - each host has a persistent private mount namespace (pinned by a bind mount of its nsfs file) in
//   which its own directories are bound over /run/docker (exec root), /run/docker/plugins,
//   /run/containerd and /etc/docker, so every engine and agent sees only its own plugin sockets;
// - each host runs a real dockerd in both namespaces (entered with nsenter, never `ip netns exec`,
//   which remounts /sys and breaks the engine's cgroup detection);
// - names carry a per-run random id and everything lives under one run directory, recorded in
//   `cluster.json` first, so parallel runs never collide and a crashed run can be cleaned up later.
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Host, type HostContext, type HostLayout } from './cluster-host.js';
import { cleanupStaleClusters, runDirFor, teardownClusterRun, writeClusterRecord, type ClusterRecord } from './cluster-teardown.js';
import { requirePrerequisites } from './prerequisites.js';
import { processStartTime } from './processes.js';
import { repoRoot } from './repo-root.js';
import { checkCommand } from './run-command.js';

export { Host, type StartAgentOptions, type ComposeOptions } from './cluster-host.js';
export { AgentProcess } from './agent-process.js';
export { cleanupStaleClusters } from './cluster-teardown.js';
export type { CommandResult, RunOptions } from './run-command.js';
export type { ExitStatus } from './processes.js';

/** Commands a cluster needs on the machine (docker-compose only for Host.compose). */
export const CLUSTER_PREREQUISITES = ['ip', 'nsenter', 'unshare', 'mount', 'umount', 'dockerd', 'containerd', 'runc', 'docker', 'tar'] as const;

export interface ClusterOptions {
  /** Number of hosts, 1 to 26; they are named hA, hB, ... */
  hosts: number;
  /** Start of every name of the run (namespaces, run directory, cgroups). Default `berth`. */
  prefix?: string;
  /** Extra dockerd flags for every engine (e.g. `--live-restore`). */
  engineArgs?: readonly string[];
  /** The agent's entry script. Default `<repo>/dist/bin/berth.js`. */
  agentEntry?: string;
  /** Bound on each engine's start. Default 90 000 ms. */
  engineReadyTimeoutMs?: number;
  /**
   * dispose() copies every host's logs to `<logArchiveDir>/<id>/<host>/` before deleting the run,
   * keeping the newest 10 runs. Default `<repo>/.cache/berth-test/logs`; `false` keeps none.
   */
  logArchiveDir?: string | false;
}

export interface Cluster extends AsyncDisposable {
  /** `<prefix>-<hex6>`, the start of every namespace name of this run. */
  readonly id: string;
  /** Directory holding everything of this run (`/tmp/<prefix>-cluster-<hex6>`). */
  readonly runDir: string;
  readonly hosts: readonly Host[];
  /** Name of the network namespace holding the underlay bridge. */
  readonly switchNetns: string;
  /** A host by name ('hA') or index (0); throws when there is none. */
  host(nameOrIndex: string | number): Host;
  /**
   * Removes everything the cluster made. Idempotent, and robust after failures: removes all
   * containers (while agents can still serve Unmount), stops agents, stops engines, then kills
   * what is left of the run, unmounts, deletes namespaces, cgroups and the run directory.
   * Rejects, after doing all it can, if something could not be removed.
   */
  dispose(): Promise<void>;
}

const SUBNET_PREFIX = '198.18.0.';
const HOST_LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
const PREFIX_PATTERN = /^[a-z][a-z0-9]{0,11}$/;
const ARCHIVED_RUNS = 10;

/** Builds the namespaces and starts one engine per host; on any failure removes what it made and rethrows. */
export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const prefix = options.prefix ?? 'berth';
  if (!PREFIX_PATTERN.test(prefix)) throw new Error(`cluster prefix ${JSON.stringify(prefix)} must match ${PREFIX_PATTERN}`);
  if (!Number.isInteger(options.hosts) || options.hosts < 1 || options.hosts > HOST_LETTERS.length) {
    throw new Error(`cluster hosts must be an integer from 1 to ${HOST_LETTERS.length}, got ${options.hosts}`);
  }
  requirePrerequisites(CLUSTER_PREREQUISITES);
  await cleanupStaleClusters();

  const record = createRunDir(prefix, options.hosts);
  const context: HostContext = {
    dockerConfigDir: join(record.runDir, 'docker-config'),
    engineArgs: options.engineArgs ?? [],
    agentEntry: options.agentEntry ?? join(repoRoot, 'dist', 'bin', 'berth.js'),
    engineReadyTimeoutMs: options.engineReadyTimeoutMs ?? 90_000,
  };
  const archive = options.logArchiveDir ?? join(repoRoot, '.cache', 'berth-test', 'logs');
  const cluster = new TestCluster(record, record.hosts.map((layout) => new Host(layout, context)), archive);
  try {
    mkdirSync(context.dockerConfigDir, { recursive: true });
    await buildUnderlay(record);
    await pinNamespaceDir(record);
    for (const host of cluster.hosts) await prepareHost(host);
    await Promise.all(cluster.hosts.map((host) => host.startEngine()));
  } catch (err) {
    const problems = await cluster.disposeQuietly();
    if (problems.length > 0 && err instanceof Error) err.message += `\n(cleanup after the failed start: ${problems.join('; ')})`;
    throw err;
  }
  return cluster;
}

class TestCluster implements Cluster {
  readonly id: string;
  readonly runDir: string;
  readonly switchNetns: string;
  readonly hosts: readonly Host[];
  private disposal: Promise<string[]> | undefined;

  constructor(
    private readonly record: ClusterRecord,
    hosts: Host[],
    private readonly logArchiveDir: string | false,
  ) {
    this.id = record.id;
    this.runDir = record.runDir;
    this.switchNetns = record.switchNetns;
    this.hosts = hosts;
  }

  host(nameOrIndex: string | number): Host {
    const host = typeof nameOrIndex === 'number' ? this.hosts[nameOrIndex] : this.hosts.find((h) => h.name === nameOrIndex);
    if (host === undefined) throw new Error(`cluster ${this.id} has no host ${String(nameOrIndex)}`);
    return host;
  }

  async dispose(): Promise<void> {
    const problems = await this.disposeQuietly();
    if (problems.length > 0) throw new Error(`cluster ${this.id} cleanup incomplete: ${problems.join('; ')}`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  /** dispose() without throwing; resolves with what could not be removed. */
  disposeQuietly(): Promise<string[]> {
    this.disposal ??= this.runDisposal();
    return this.disposal;
  }

  private async runDisposal(): Promise<string[]> {
    const problems: string[] = [];
    const attempt = async (what: string, step: () => Promise<void>): Promise<void> => {
      try {
        await step();
      } catch (err) {
        problems.push(`${what}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
      }
    };
    // Graceful steps first (each bounded); the teardown below ends whatever they could not.
    await Promise.all(this.hosts.map((h) => attempt(`remove containers on ${h.name}`, () => h.removeAllContainers())));
    await Promise.all(this.hosts.map((h) => attempt(`stop agents on ${h.name}`, () => h.stopAgents())));
    await Promise.all(this.hosts.map((h) => attempt(`stop engine on ${h.name}`, () => h.stopEngine({ timeoutMs: 30_000 }))));
    const archive = this.logArchiveDir;
    if (archive !== false) await attempt('archive logs', async () => archiveLogs(this.hosts, join(archive, this.id)));
    problems.push(...(await teardownClusterRun(this.record)));
    return problems;
  }
}

/** Copies each host's log directory into `target` and prunes the archive to its newest runs. */
function archiveLogs(hosts: readonly Host[], target: string): void {
  for (const host of hosts) {
    if (existsSync(host.logDir)) cpSync(host.logDir, join(target, host.name), { recursive: true });
  }
  const parent = dirname(target);
  // Parallel runs prune the same archive: an entry may vanish between readdir and stat.
  const runs = readdirSync(parent)
    .flatMap((name) => {
      try {
        return [{ name, mtime: statSync(join(parent, name)).mtimeMs }];
      } catch {
        return [];
      }
    })
    .sort((a, b) => b.mtime - a.mtime);
  for (const old of runs.slice(ARCHIVED_RUNS)) rmSync(join(parent, old.name), { recursive: true, force: true });
}

/** Creates `/tmp/<prefix>-cluster-<hex6>` (retrying on a name clash) and writes its record into it first. */
function createRunDir(prefix: string, hostCount: number): ClusterRecord {
  for (let attempt = 0; attempt < 8; attempt++) {
    const hex = randomBytes(3).toString('hex');
    const runDir = runDirFor(prefix, hex);
    try {
      mkdirSync(runDir, { mode: 0o711 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw err;
    }
    const id = `${prefix}-${hex}`;
    const hosts: HostLayout[] = [];
    for (let i = 0; i < hostCount; i++) {
      const name = `h${HOST_LETTERS[i] ?? '?'}`;
      hosts.push({
        name,
        netns: `${id}-${name}`,
        address: `${SUBNET_PREFIX}${11 + i}`,
        dir: join(runDir, name),
        mountNamespaceFile: join(runDir, 'ns', `${name}.mnt`),
        cgroupParent: `${id}-${name}`,
      });
    }
    const record: ClusterRecord = {
      version: 1,
      id,
      runDir,
      switchNetns: `${id}-sw`,
      owner: { pid: process.pid, startTime: processStartTime(process.pid) ?? '' },
      hosts,
    };
    writeClusterRecord(record);
    return record;
  }
  throw new Error(`cannot create a unique run directory for prefix ${prefix}`);
}

/** The switch namespace with its bridge, and one namespace per host joined to it by a veth pair. */
async function buildUnderlay(record: ClusterRecord): Promise<void> {
  const sw = record.switchNetns;
  await checkCommand(['ip', 'netns', 'add', sw]);
  await checkCommand(['ip', '-n', sw, 'link', 'set', 'lo', 'up']);
  await checkCommand(['ip', '-n', sw, 'link', 'add', 'br0', 'type', 'bridge']);
  await checkCommand(['ip', '-n', sw, 'link', 'set', 'br0', 'up']);
  for (const host of record.hosts) {
    const port = `port-${host.name}`;
    await checkCommand(['ip', 'netns', 'add', host.netns]);
    await checkCommand(['ip', '-n', host.netns, 'link', 'set', 'lo', 'up']);
    // Created inside the switch namespace with the peer moved at once: nothing touches the machine's own stack.
    await checkCommand(['ip', '-n', sw, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'ul0', 'netns', host.netns]);
    await checkCommand(['ip', '-n', sw, 'link', 'set', port, 'master', 'br0']);
    await checkCommand(['ip', '-n', sw, 'link', 'set', port, 'up']);
    await checkCommand(['ip', '-n', host.netns, 'addr', 'add', `${host.address}/24`, 'dev', 'ul0']);
    await checkCommand(['ip', '-n', host.netns, 'link', 'set', 'ul0', 'up']);
  }
}

/**
 * Namespace files can only be bind-mounted onto a mount that is not shared; on systemd machines `/`
 * is shared, so the run's `ns` directory becomes a private bind mount of itself first.
 */
async function pinNamespaceDir(record: ClusterRecord): Promise<void> {
  const dir = join(record.runDir, 'ns');
  mkdirSync(dir, { recursive: true });
  await checkCommand(['mount', '--bind', dir, dir]);
  await checkCommand(['mount', '--make-private', dir]);
}

/** Host directories, engine config, and the host's persistent mount namespace. */
async function prepareHost(host: Host): Promise<void> {
  const containerdDir = join(host.dir, 'containerd');
  const etcDockerDir = join(host.dir, 'etc-docker');
  for (const dir of [host.dataRoot, host.execRoot, host.pluginDir, containerdDir, etcDockerDir, host.runDir, host.berthRoot, host.logDir]) {
    mkdirSync(dir, { recursive: true });
  }
  // An empty config file keeps /etc/docker/daemon.json of the machine out of the tests.
  writeFileSync(join(host.dir, 'daemon.json'), '{}\n');
  writeFileSync(host.mountNamespaceFile, '');
  // Paths are passed as positional parameters, never spliced into the script.
  const script = [
    'set -e',
    // Copies of other namespaces' /run/netns entries would keep those namespaces alive; drop them here.
    'umount -l /run/netns 2>/dev/null || true',
    'mkdir -p /run/docker /run/containerd /etc/docker',
    'mount --bind "$1" /run/docker',
    'mkdir -p /run/docker/plugins',
    'mount --bind "$2" /run/docker/plugins',
    'mount --bind "$3" /run/containerd',
    'mount --bind "$4" /etc/docker',
  ].join('\n');
  await checkCommand([
    'unshare', `--mount=${host.mountNamespaceFile}`, '--propagation', 'private', '--',
    'sh', '-c', script, 'sh', host.execRoot, host.pluginDir, containerdDir, etcDockerDir,
  ]);
}
