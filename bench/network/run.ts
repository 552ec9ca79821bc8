// Benchmark: Berth's VXLAN overlay against Docker's swarm overlay and the bare underlay between two
// simulated Docker hosts, all three in one run: TCP throughput (iperf3), ping latency, and how soon a
// new container on one host answers pings from the other (convergence).
//
//   node dist/bench/network/run.js [--only berth,swarm,underlay] [--out bench/network/results.json]
//
// See README.md next to this file for what is measured and how to read the figures.
import { mkdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { startCluster, type Host } from '../../test/helpers/cluster.js';
import type { EtcdServer } from '../../test/helpers/etcd-server.js';
import { requirePrerequisites } from '../../test/helpers/prerequisites.js';
import { repoRoot } from '../../test/helpers/repo-root.js';
import { ensureBusyboxImage } from '../../test/helpers/test-images.js';
import { describeMachineBasics, dockerVersions, firstLineOf } from '../common/machine.js';
import { cleanUpOnSignals, runBenchmark } from '../common/main.js';
import { integerOption, parseBenchArgs } from '../common/options.js';
import { describeSource, mdPathFor, writeResultFiles } from '../common/report.js';
import { median, ratio, round, summarize, type Summary } from '../common/stats.js';
import { firstReplyAt, iperfRound, pingSeries, stopBackgroundCommands, type Endpoint, type PingSeries, type ThroughputRound } from './measure.js';
import {
  overlayPath,
  PATH_IDS,
  removeNetwork,
  startBerthOverlay,
  startContainer,
  startEtcdOn,
  startSwarmOverlay,
  stopSwarm,
  underlayPath,
  type BerthSettings,
  type OverlayId,
  type PathId,
  type PathUnderTest,
  type SwarmSettings,
} from './paths.js';
import { renderMarkdown, renderTable, type BenchResults, type ConvergenceFigures, type PathFigures, type Target } from './results.js';

interface Options {
  paths: PathId[];
  rounds: number;
  seconds: number;
  pings: number;
  pingBlocks: number;
  pingIntervalMs: number;
  containers: number;
  convergenceTimeout: number;
  convergenceIntervalMs: number;
  swarmDataPathPort: number;
  out: string;
  agentArgs: string[];
  agentEntry: string | undefined;
}

const USAGE = `usage: node dist/bench/network/run.js [options]   (as root)
  --only LIST               paths to measure, comma-separated from berth,swarm,underlay (default all three)
  --rounds N                iperf3 rounds per path (default 3); the figure is the median round
  --seconds N               length of one iperf3 round (default 5)
  --pings N                 pings per path for the latency figures (default 200)
  --ping-blocks N           the pings run in this many blocks, the path order alternating (default 4)
  --ping-interval-ms N      interval between pings (default 10)
  --containers N            containers started on hB per overlay for the convergence figures (default 50; 0 skips)
  --convergence-timeout N   seconds a new container may take to answer (default 10)
  --convergence-interval-ms N  interval of the pings at a new container (default 5)
  --swarm-data-path-port N  UDP port of swarm's VXLAN data path (default 4789, swarm's own default)
  --out FILE                results JSON (default bench/network/results.json); results.md is written next to it
  --agent-arg ARG           extra argument for the Berth agents (repeatable), e.g. --agent-arg=--log-level=debug
  --agent-entry JS          the agent's entry script (default dist/bin/berth.js), to compare another build`;

const SWARM: Omit<SwarmSettings, 'dataPathPort'> = { network: 'bench-swarm', subnet: '10.78.0.0/24' };
const BERTH: Omit<BerthSettings, 'agentArgs'> = { network: 'bench-berth', subnet: '10.77.0.0/24', etcdClientPort: 2379, etcdPeerPort: 2380 };
/** A user-defined network of the engine's own bridge driver on hB: what `docker run -d` costs with no overlay at all. */
const LOCAL_BRIDGE = { network: 'bench-local', subnet: '10.79.0.0/24' };
const IPERF_PORT = 5201;
const WARMUP_PINGS = 5;

const TARGET_THROUGHPUT_VS_SWARM = 1.05;
const TARGET_THROUGHPUT_VS_UNDERLAY = 0.8;
const TARGET_RTT_VS_SWARM = 1.0;
const TARGET_CONVERGENCE_P99_MS = 500;

const log = (message: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${message}`);
const errorText = (err: unknown): string => (err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err));

async function main(): Promise<number> {
  let options: Options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    return 2;
  }
  requirePrerequisites(['iperf3', 'ping', 'ss', 'ip', 'nsenter']);
  mkdirSync(dirname(options.out), { recursive: true });
  const selected = (id: PathId): boolean => options.paths.includes(id);
  const started = new Date();
  const loadAtStart = loadavg().map((v) => round(v, 2));
  log(`starting a two-host cluster; paths: ${options.paths.join(', ')}`);
  const cluster = await startCluster({ hosts: 2, prefix: 'berthnet', ...(options.agentEntry === undefined ? {} : { agentEntry: options.agentEntry }) });
  const hA = cluster.host('hA');
  const hB = cluster.host('hB');

  let etcd: EtcdServer | undefined;
  let swarmStarted = false;
  let berthStarted = false;
  let tornDown: Promise<void> | undefined;
  const teardown = (): Promise<void> => (tornDown ??= (async () => {
    await stopBackgroundCommands();
    const warnings: string[] = [];
    await Promise.all([hA, hB].map((host) => host.removeAllContainers().catch((err: unknown) => warnings.push(`remove containers on ${host.name}: ${errorText(err)}`))));
    if (swarmStarted) warnings.push(...(await stopSwarm(hA, hB, SWARM.network)));
    if (berthStarted) warnings.push(...(await removeNetwork(hA, BERTH.network)));
    warnings.push(...(await removeNetwork(hB, LOCAL_BRIDGE.network)));
    for (const warning of warnings) log(`cleanup: ${warning}`);
    log('disposing the cluster');
    // Agents stop with the cluster, before etcd goes away under them.
    try {
      await cluster.dispose();
    } finally {
      await etcd?.stop();
    }
  })());
  cleanUpOnSignals(teardown);

  let results: BenchResults;
  try {
    const [image] = await Promise.all([ensureBusyboxImage(hA), ensureBusyboxImage(hB)]);
    const paths: PathUnderTest[] = [];
    if (selected('berth')) {
      etcd = await startEtcdOn(hA, { ...BERTH, agentArgs: options.agentArgs });
      log(`etcd listens on ${etcd.endpoint} in ${hA.name}'s namespace; starting Berth agents`);
      berthStarted = true;
      await startBerthOverlay([hA, hB], etcd, { ...BERTH, agentArgs: options.agentArgs });
      paths.push(await overlayPath('berth', hA, hB, BERTH.network, image));
    }
    if (selected('swarm')) {
      log(`swarm init on ${hA.name}, join from ${hB.name}, overlay network ${SWARM.network}`);
      swarmStarted = true;
      await startSwarmOverlay(hA, hB, { ...SWARM, dataPathPort: options.swarmDataPathPort });
      try {
        paths.push(await overlayPath('swarm', hA, hB, SWARM.network, image));
      } catch (err) {
        if (!selected('berth')) throw err;
        const hint = `both overlays program VXLAN devices in the same hosts; if Berth's also use UDP ${options.swarmDataPathPort}, rerun with --swarm-data-path-port ${options.swarmDataPathPort + 1}`;
        throw new Error(`${err instanceof Error ? err.message : String(err)}\n(${hint})`, { cause: err });
      }
    }
    if (selected('underlay')) paths.push(await underlayPath(hA, hB));
    for (const path of paths) log(`${path.id}: ${path.client.where} (${path.client.address}) → ${path.server.where} (${path.server.address}), MTU ${path.mtu}`);

    const machine = await describeMachine(hA);
    const source = await describeSource();
    for (const path of paths) await pingSeries(path.client, path.server.address, WARMUP_PINGS, options.pingIntervalMs);

    const throughput = await measureThroughput(paths, options);
    const latency = await measureLatency(paths, options);
    const overlays = paths.filter((path): path is PathUnderTest & { id: OverlayId } => path.id !== 'underlay');
    const { convergence, localBridgeDockerRun } = await measureConvergence(hB, overlays, image, options);

    const figures: Partial<Record<PathId, PathFigures>> = {};
    for (const path of paths) figures[path.id] = pathFigures(path, throughput.get(path.id) ?? [], latency.get(path.id) ?? []);
    const tput = (id: PathId): number | undefined => figures[id]?.throughput.medianGbitPerSecond;
    const rtt = (id: PathId, key: 'meanMs' | 'p50Ms' | 'p99Ms'): number | undefined => figures[id]?.latency.rtt[key];
    const ratios: BenchResults['ratios'] = {
      throughputBerthToSwarm: ratioOf(tput('berth'), tput('swarm')),
      throughputBerthToUnderlay: ratioOf(tput('berth'), tput('underlay')),
      throughputSwarmToUnderlay: ratioOf(tput('swarm'), tput('underlay')),
      rttAvgBerthToSwarm: ratioOf(rtt('berth', 'meanMs'), rtt('swarm', 'meanMs')),
      rttP50BerthToSwarm: ratioOf(rtt('berth', 'p50Ms'), rtt('swarm', 'p50Ms')),
      rttP99BerthToSwarm: ratioOf(rtt('berth', 'p99Ms'), rtt('swarm', 'p99Ms')),
    };
    const targets = buildTargets(ratios, convergence.berth, options);
    results = {
      benchmark: 'network',
      date: started.toISOString(),
      durationSeconds: Math.round((Date.now() - started.getTime()) / 1000),
      source,
      machine: { ...machine, loadAverageAtStart: loadAtStart, loadAverageAtEnd: loadavg().map((v) => round(v, 2)) },
      parameters: {
        paths: paths.map((path) => path.id),
        throughputRounds: options.rounds,
        secondsPerRound: options.seconds,
        streams: 1,
        order: 'rounds and ping blocks alternate the path order: berth, swarm, underlay, then underlay, swarm, berth, ...',
        pings: options.pings,
        pingBlocks: options.pingBlocks,
        pingIntervalMs: options.pingIntervalMs,
        convergenceContainers: options.containers,
        convergenceTimeoutSeconds: options.convergenceTimeout,
        convergencePingIntervalMs: options.convergenceIntervalMs,
        berthSubnet: BERTH.subnet,
        swarmSubnet: SWARM.subnet,
        swarmDataPathPort: options.swarmDataPathPort,
        etcd: etcd === undefined ? 'none' : `${etcd.endpoint}, in ${hA.name}'s network namespace`,
        image,
        agentArgs: options.agentArgs,
        agentEntry: options.agentEntry ?? 'dist/bin/berth.js',
      },
      paths: figures,
      convergence,
      localBridgeDockerRun,
      ratios,
      targets,
      allTargetsMet: targets.every((t) => t.met === true),
    };
    // Written before the cleanup, so a failing disposal does not lose the figures.
    writeResultFiles(options.out, results, renderMarkdown(results), renderTable(results));
  } finally {
    await teardown();
  }

  console.log(`\n${renderTable(results)}`);
  log(`results written to ${options.out} and ${mdPathFor(options.out)}`);
  return 0;
}

/** `items` in their order for even `turn`s and reversed for odd ones (ABC CBA: cancels a linear drift). */
function alternate<T>(items: readonly T[], turn: number): T[] {
  return turn % 2 === 0 ? [...items] : [...items].reverse();
}

// ---- throughput and latency ------------------------------------------------------------------------

async function measureThroughput(paths: readonly PathUnderTest[], options: Options): Promise<Map<PathId, ThroughputRound[]>> {
  const rounds = new Map<PathId, ThroughputRound[]>(paths.map((path) => [path.id, []]));
  for (let turn = 0; turn < options.rounds; turn++) {
    for (const path of alternate(paths, turn)) {
      const result = await iperfRound(path.client, path.server, options.seconds, IPERF_PORT);
      rounds.get(path.id)?.push(result);
      log(`iperf3 round ${turn + 1}/${options.rounds} ${path.id.padEnd(8)} ${result.gbitPerSecond.toFixed(2)} Gbit/s, ${result.retransmits} retransmits`);
    }
  }
  return rounds;
}

async function measureLatency(paths: readonly PathUnderTest[], options: Options): Promise<Map<PathId, PingSeries[]>> {
  const series = new Map<PathId, PingSeries[]>(paths.map((path) => [path.id, []]));
  for (let block = 0; block < options.pingBlocks; block++) {
    // Spread the pings over the blocks: the first blocks take the remainder.
    const count = Math.floor(options.pings / options.pingBlocks) + (block < options.pings % options.pingBlocks ? 1 : 0);
    if (count === 0) continue;
    for (const path of alternate(paths, block)) {
      const result = await pingSeries(path.client, path.server.address, count, options.pingIntervalMs);
      series.get(path.id)?.push(result);
    }
    log(`ping block ${block + 1}/${options.pingBlocks}: ${count} pings per path`);
  }
  return series;
}

function pathFigures(path: PathUnderTest, rounds: readonly ThroughputRound[], pings: readonly PingSeries[]): PathFigures {
  const gbit = rounds.map((r) => r.gbitPerSecond);
  return {
    client: path.client.where,
    server: path.server.where,
    serverAddress: path.server.address,
    mtu: path.mtu,
    throughput: {
      rounds,
      medianGbitPerSecond: round(median(gbit)),
      minGbitPerSecond: Math.min(...gbit),
      maxGbitPerSecond: Math.max(...gbit),
      retransmits: rounds.reduce((sum, r) => sum + r.retransmits, 0),
      medianSenderCpuPercent: round(median(rounds.map((r) => r.senderCpuPercent)), 1),
      medianReceiverCpuPercent: round(median(rounds.map((r) => r.receiverCpuPercent)), 1),
    },
    latency: {
      sent: pings.reduce((sum, s) => sum + s.sent, 0),
      received: pings.reduce((sum, s) => sum + s.received, 0),
      rtt: summarize(pings.flatMap((s) => s.rttMs)),
    },
  };
}

// ---- convergence -------------------------------------------------------------------------------------

interface ConvergenceSample {
  readonly dockerRunMs: number;
  /** Undefined when no reply came within the deadline. */
  readonly totalMs: number | undefined;
  readonly afterRunMs: number | undefined;
}

/**
 * For each overlay, `options.containers` times: `docker run -d` of a new container on hB, then pings
 * from the overlay's client container on hA at its address until the first reply. The containers
 * stay until the end, so later ones join a network with more endpoints; overlays alternate which goes first.
 * Each round also times `docker run -d` into a local network of the engine's bridge driver: the floor
 * any network plugin starts from on this machine.
 */
async function measureConvergence(
  serverHost: Host,
  overlays: readonly (PathUnderTest & { id: OverlayId })[],
  image: string,
  options: Options,
): Promise<{ convergence: Partial<Record<OverlayId, ConvergenceFigures>>; localBridgeDockerRun: Summary | null }> {
  if (options.containers === 0 || overlays.length === 0) return { convergence: {}, localBridgeDockerRun: null };
  await serverHost.dockerOk(['network', 'create', '--driver', 'bridge', '--subnet', LOCAL_BRIDGE.subnet, LOCAL_BRIDGE.network]);
  const samples = new Map<OverlayId, ConvergenceSample[]>(overlays.map((overlay) => [overlay.id, []]));
  const localRuns: number[] = [];
  for (let i = 0; i < options.containers; i++) {
    for (const overlay of alternate(overlays, i)) {
      const network = overlay.id === 'berth' ? BERTH.network : SWARM.network;
      samples.get(overlay.id)?.push(await convergenceSample(serverHost, overlay.client, network, `bench-conv-${overlay.id}-${i}`, image, options));
    }
    const local = await startContainer(serverHost, LOCAL_BRIDGE.network, `bench-conv-local-${i}`, image);
    localRuns.push(local.runReturnedAt - local.runStartedAt);
    if ((i + 1) % 10 === 0 || i + 1 === options.containers) {
      const last = (id: OverlayId): string => {
        const sample = samples.get(id)?.at(-1);
        return sample?.totalMs === undefined ? 'no reply' : `${round(sample.totalMs, 1)} ms`;
      };
      log(`convergence ${i + 1}/${options.containers} containers; last: ${overlays.map((o) => `${o.id} ${last(o.id)}`).join(', ')}`);
    }
  }
  const figures: Partial<Record<OverlayId, ConvergenceFigures>> = {};
  for (const [id, list] of samples) {
    const total = list.flatMap((s) => (s.totalMs === undefined ? [] : [s.totalMs]));
    const afterRun = list.flatMap((s) => (s.afterRunMs === undefined ? [] : [s.afterRunMs]));
    figures[id] = {
      containers: list.length,
      converged: total.length,
      timedOut: list.length - total.length,
      total: total.length > 0 ? summarize(total) : null,
      dockerRun: summarize(list.map((s) => s.dockerRunMs)),
      afterRun: afterRun.length > 0 ? summarize(afterRun) : null,
    };
  }
  return { convergence: figures, localBridgeDockerRun: summarize(localRuns) };
}

async function convergenceSample(host: Host, client: Endpoint, network: string, name: string, image: string, options: Options): Promise<ConvergenceSample> {
  const container = await startContainer(host, network, name, image);
  const replyAt = await firstReplyAt(client, container.address, options.convergenceTimeout, options.convergenceIntervalMs);
  return {
    dockerRunMs: container.runReturnedAt - container.runStartedAt,
    totalMs: replyAt === undefined ? undefined : replyAt - container.runStartedAt,
    afterRunMs: replyAt === undefined ? undefined : replyAt - container.runReturnedAt,
  };
}

// ---- targets and plumbing ----------------------------------------------------------------------------

function ratioOf(a: number | undefined, b: number | undefined): number | null {
  return a === undefined || b === undefined ? null : ratio(a, b);
}

function buildTargets(ratios: BenchResults['ratios'], berthConvergence: ConvergenceFigures | undefined, options: Options): Target[] {
  const atLeast = (name: string, value: number | null, goal: number): Target => ({
    name,
    target: `≥ ${goal}`,
    value,
    unit: '×',
    met: value === null ? null : value >= goal,
  });
  const p99 = berthConvergence?.total?.p99Ms ?? null;
  return [
    atLeast('TCP throughput, Berth / swarm overlay', ratios.throughputBerthToSwarm, TARGET_THROUGHPUT_VS_SWARM),
    atLeast('TCP throughput, Berth / underlay', ratios.throughputBerthToUnderlay, TARGET_THROUGHPUT_VS_UNDERLAY),
    {
      name: 'ping RTT p50, Berth / swarm overlay (no worse)',
      target: `≤ ${TARGET_RTT_VS_SWARM.toFixed(2)}`,
      value: ratios.rttP50BerthToSwarm,
      unit: '×',
      met: ratios.rttP50BerthToSwarm === null ? null : ratios.rttP50BerthToSwarm <= TARGET_RTT_VS_SWARM,
    },
    {
      name: `Berth convergence p99 over ${options.containers} containers, every one reached`,
      target: `≤ ${TARGET_CONVERGENCE_P99_MS} ms`,
      value: p99,
      unit: ' ms',
      met: berthConvergence === undefined ? null : p99 !== null && p99 <= TARGET_CONVERGENCE_P99_MS && berthConvergence.timedOut === 0,
    },
  ];
}

async function describeMachine(host: Host): Promise<Omit<BenchResults['machine'], 'loadAverageAtStart' | 'loadAverageAtEnd'>> {
  return {
    ...describeMachineBasics(),
    docker: await dockerVersions(host),
    iperf3: await firstLineOf(['iperf3', '--version']),
    ping: await firstLineOf(['ping', '-V']),
  };
}

function parseOptions(argv: string[]): Options {
  const { values, lists } = parseBenchArgs(
    argv,
    USAGE,
    [
      'only', 'rounds', 'seconds', 'pings', 'ping-blocks', 'ping-interval-ms', 'containers', 'convergence-timeout',
      'convergence-interval-ms', 'swarm-data-path-port', 'out', 'agent-entry',
    ],
    ['agent-arg'],
  );
  const only = (values.only ?? PATH_IDS.join(',')).split(',').map((part) => part.trim()).filter((part) => part !== '');
  const unknown = only.filter((part) => !(PATH_IDS as readonly string[]).includes(part));
  if (unknown.length > 0 || only.length === 0) throw new Error(`--only takes paths from ${PATH_IDS.join(',')}, got ${values.only ?? ''}`);
  return {
    // Always in the fixed order, whatever the order given.
    paths: PATH_IDS.filter((id) => only.includes(id)),
    rounds: integerOption('rounds', values.rounds, 3, 1, 100),
    seconds: integerOption('seconds', values.seconds, 5, 1, 120),
    pings: integerOption('pings', values.pings, 200, 1, 100_000),
    pingBlocks: integerOption('ping-blocks', values['ping-blocks'], 4, 1, 1000),
    pingIntervalMs: integerOption('ping-interval-ms', values['ping-interval-ms'], 10, 2, 1000),
    containers: integerOption('containers', values.containers, 50, 0, 500),
    convergenceTimeout: integerOption('convergence-timeout', values['convergence-timeout'], 10, 1, 120),
    convergenceIntervalMs: integerOption('convergence-interval-ms', values['convergence-interval-ms'], 5, 2, 1000),
    swarmDataPathPort: integerOption('swarm-data-path-port', values['swarm-data-path-port'], 4789, 1024, 49151),
    out: values.out === undefined ? join(repoRoot, 'bench', 'network', 'results.json') : resolve(values.out),
    agentArgs: lists['agent-arg'] ?? [],
    agentEntry: values['agent-entry'] === undefined ? undefined : resolve(values['agent-entry']),
  };
}

runBenchmark(main);
