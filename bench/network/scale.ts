// Benchmark: the network control plane at scale. N hosts (network namespaces on one underlay bridge, an
// agent in each, one etcd, no engines) and M endpoints per host created through each agent's plugin
// socket, all hosts at once: how long until every host's VXLAN FDB and neighbour tables hold every remote
// endpoint, and how many addresses per second the cluster's IPAM hands out.
//
//   node dist/bench/network/scale.js [--hosts 20] [--endpoints 250] [--out bench/network/scale-results.json]
//
// See README.md next to this file for what is measured and how to read the figures.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { requirePrerequisites } from '../../test/helpers/prerequisites.js';
import { repoRoot } from '../../test/helpers/repo-root.js';
import { runCommand } from '../../test/helpers/run-command.js';
import { describeMachineBasics } from '../common/machine.js';
import { cleanUpOnSignals, log, runBenchmark } from '../common/main.js';
import { integerOption, optionsOrUsage, parseBenchArgs } from '../common/options.js';
import { describeSource, mdPathFor, writeResultFiles } from '../common/report.js';
import { round } from '../common/stats.js';
import type { Target } from './results.js';
import type { UnderlaySettings } from './scale-cluster.js';
import { measureKernelFloor, type KernelFloor } from './scale-floor.js';
import { ROUND_TITLES, renderMarkdown, renderTable, type RoundResults, type ScaleResults } from './scale-results.js';
import { runRound } from './scale-round.js';

interface Options {
  rounds: RoundResults['name'][];
  kernelFloor: boolean;
  hosts: number;
  endpoints: number;
  concurrency: number;
  ipamAllocations: number;
  timeoutSeconds: number;
  agentBatch: number;
  pollIntervalMs: number;
  out: string;
  agentArgs: string[];
  agentEntry: string;
  cpuProfileHost: string | undefined;
}

const ROUND_NAMES: readonly RoundResults['name'][] = ['containers', 'records'];

const USAGE = `usage: node dist/bench/network/scale.js [options]   (as root)
  --rounds LIST            rounds to run, each on a fresh cluster, from containers,records (default both):
                           containers = RequestAddress, CreateEndpoint and Join per endpoint (a veth pair, as for a
                           container); records = RequestAddress and CreateEndpoint only
  --hosts N                hosts (namespaces with an agent each; default 20)
  --endpoints N            endpoints started per host in the timed phase (default 250)
  --concurrency N          endpoints being started at once per host (default 8)
  --ipam-allocations N     RequestAddress calls per host after the first round converged (default 250; 0 skips)
  --kernel-floor yes|no    time the same links and entries written by iproute2 alone (default yes)
  --timeout N              seconds the tables may take to complete after the last driver call (default 60)
  --agent-batch N          agents started at once (default 4)
  --poll-interval-ms N     how often a host whose table monitor lost events is dumped instead (default 250)
  --out FILE               results JSON (default bench/network/scale-results.json); the .md is written next to it
  --agent-arg ARG          extra argument for every agent (repeatable), e.g. --agent-arg=--log-level=debug
  --agent-entry JS         the agent's entry script (default dist/bin/berth.js), to compare another build
  --cpu-profile HOST       run that host's agent (e.g. h10) under node --cpu-prof; the profile is kept with the logs`;

const UNDERLAY: UnderlaySettings = { prefix: '198.19.80', switchOctet: 254 };
const SUBNET = '10.96.0.0/18';
const TARGET_CONVERGENCE_MS = 5000;
/** Where agent logs, the etcd log and CPU profiles of the last runs are kept. */
const KEEP_DIR = join(repoRoot, '.cache', 'berth-bench', 'network-scale');

async function main(): Promise<number> {
  const options = optionsOrUsage(parseOptions, USAGE);
  if (options === undefined) return 2;
  requirePrerequisites(['ip', 'bridge', 'nsenter', 'etcd', 'etcdctl']);
  mkdirSync(dirname(options.out), { recursive: true });
  const started = new Date();
  const loadAtStart = loadavg().map((v) => round(v, 2));
  const keepDir = join(KEEP_DIR, started.toISOString().replace(/[:.]/g, '-'));

  let cleanup: (() => Promise<void>) | undefined;
  cleanUpOnSignals(() => cleanup?.());

  const rounds: RoundResults[] = [];
  for (const [i, name] of options.rounds.entries()) {
    rounds.push(
      await runRound({
        name,
        join: name === 'containers',
        hosts: options.hosts,
        endpoints: options.endpoints,
        concurrency: options.concurrency,
        ipamAllocations: i === 0 ? options.ipamAllocations : 0,
        timeoutSeconds: options.timeoutSeconds,
        agentBatch: options.agentBatch,
        pollIntervalMs: options.pollIntervalMs,
        agentEntry: options.agentEntry,
        agentArgs: options.agentArgs,
        cpuProfileHost: options.cpuProfileHost,
        subnet: SUBNET,
        underlay: UNDERLAY,
        keepDir: join(keepDir, name),
        log,
        onCleanup: (next) => (cleanup = next),
      }),
    );
  }
  log(`agent logs kept in ${keepDir}`);

  let kernelFloor: KernelFloor | null = null;
  if (options.kernelFloor) {
    log(`kernel floor: ${options.endpoints} veth pairs and the entries of ${options.hosts - 1} × ${options.endpoints} endpoints in ${options.hosts} namespaces, by iproute2`);
    const work = mkdtempSync('/tmp/berth-floor-');
    try {
      kernelFloor = await measureKernelFloor(options.hosts, options.endpoints, work);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }

  const partial: ScaleResults = {
    benchmark: 'network-scale',
    date: started.toISOString(),
    durationSeconds: round((Date.now() - started.getTime()) / 1000, 1),
    source: await describeSource(),
    machine: { ...(await describeMachine()), loadAverageAtStart: loadAtStart, loadAverageAtEnd: loadavg().map((v) => round(v, 2)) },
    parameters: {
      hosts: options.hosts,
      endpointsPerHost: options.endpoints,
      concurrencyPerHost: options.concurrency,
      rounds: options.rounds,
      subnet: SUBNET,
      underlay: `${UNDERLAY.prefix}.0/24`,
      ipamAllocationsPerHost: options.ipamAllocations,
      timeoutSeconds: options.timeoutSeconds,
      agentStartBatch: options.agentBatch,
      agentArgs: options.agentArgs,
    },
    rounds,
    kernelFloor,
    targets: [],
    findings: [],
  };
  const results: ScaleResults = { ...partial, targets: buildTargets(partial), findings: findingsOf(partial) };
  writeResultFiles(options.out, results, renderMarkdown(results), renderTable(results), 'scale-results');
  console.log(`\n${renderTable(results)}`);
  log(`wrote ${options.out} and ${mdPathFor(options.out)}`);
  // The run fails when something is wrong, not when it is slow: a missed time target is a figure.
  return results.rounds.every(correct) ? 0 : 1;
}

function correct(round: RoundResults): boolean {
  return (
    round.convergence.hosts.every((host) => host.missing === 0 && host.wrong === 0 && host.extra === 0) &&
    round.endpoints.duplicateAddresses === 0 &&
    round.endpoints.duplicateMacs === 0 &&
    (round.ipam?.duplicates ?? 0) === 0
  );
}

function buildTargets(results: ScaleResults): Target[] {
  const { hosts, endpointsPerHost } = results.parameters;
  return results.rounds.flatMap((round): Target[] => [
    {
      name: `every host's FDB and neighbour tables complete, ${hosts} hosts × ${endpointsPerHost} endpoints, from the first call: ${ROUND_TITLES[round.name]}`,
      target: `≤ ${TARGET_CONVERGENCE_MS} ms`,
      value: round.convergence.allHostsMs,
      unit: ' ms',
      met: round.convergence.allHostsMs !== null && round.convergence.allHostsMs <= TARGET_CONVERGENCE_MS,
    },
    {
      name: `every host holds exactly the remote endpoints (MAC → its host, IP → MAC), no address or MAC handed out twice: ${ROUND_TITLES[round.name]}`,
      target: 'all hosts',
      value: round.convergence.hosts.filter((host) => host.missing === 0 && host.wrong === 0 && host.extra === 0).length,
      unit: ` of ${hosts} hosts`,
      met: correct(round),
    },
  ]);
}

/** Plain statements read off the figures: where the timed phase spent its time. */
function findingsOf(results: ScaleResults): string[] {
  const findings: string[] = [];
  for (const round of results.rounds) {
    const { endpoints: e, convergence: c, cpu, agentThreads: threads } = round;
    const title = ROUND_TITLES[round.name];
    findings.push(
      `${title}: the driver calls took ${Math.round(e.allDoneMs)} ms for ${e.total} endpoints (${e.perSecond} per second); the last record was in the store after ${Math.round(e.allRecordedMs)} ms, and the last host's tables were complete ${c.lagAfterLastRecordMs === null ? 'only after the deadline' : `${Math.round(c.lagAfterLastRecordMs)} ms after that`}.`,
      `${title}: the machine was busy for ${cpu.machine} of the ${cpu.available} CPU seconds its cores could give (agents ${cpu.agents}, of which ${cpu.agentsSystem} in the kernel; etcd ${cpu.etcd}; table monitors ${cpu.monitors}; this benchmark ${cpu.benchmark}). The agents' main threads were running or runnable in ${Math.round(threads.running * 100)} % of the samples and waiting for the kernel's rtnl lock in ${Math.round(threads.rtnlWait * 100)} %.`,
    );
    if (c.propagation.store && c.propagation.agent && c.propagation.total) {
      findings.push(
        `${title}: from CreateEndpoint answering to an entry in a remote kernel took p50 ${Math.round(c.propagation.total.p50Ms)} ms (p99 ${Math.round(c.propagation.total.p99Ms)}); an outside etcd watch saw the record p50 ${Math.round(c.propagation.store.p50Ms)} ms after the answer (negative: before the answer reached the benchmark), and the agents took p50 ${Math.round(c.propagation.agent.p50Ms)} ms (p99 ${Math.round(c.propagation.agent.p99Ms)}) from there to the kernel.`,
      );
    }
  }
  const floor = results.kernelFloor;
  if (floor !== null) {
    findings.push(
      `The kernel alone, with no control plane, needs ${floor.vethsSeconds} s for the veth pairs and ${floor.entriesSeconds} s for the FDB and neighbour entries of all ${floor.hosts} namespaces: every simulated host shares this one kernel and its rtnl lock, which serializes link, FDB and neighbour changes across namespaces. On real hosts each kernel does one ${floor.hosts}th of that work, in parallel.`,
    );
  }
  return findings;
}

async function describeMachine(): Promise<Omit<ScaleResults['machine'], 'loadAverageAtStart' | 'loadAverageAtEnd'>> {
  const firstLine = async (command: string[]): Promise<string> => {
    const result = await runCommand(command, { timeoutMs: 10_000 }).catch(() => undefined);
    return (result?.stdout ?? '').split('\n')[0]?.trim() || 'unknown';
  };
  return { ...describeMachineBasics(), etcd: await firstLine(['etcd', '--version']), iproute2: await firstLine(['ip', '-V']) };
}

function parseOptions(argv: string[]): Options {
  const { values, lists } = parseBenchArgs(
    argv,
    USAGE,
    ['rounds', 'kernel-floor', 'hosts', 'endpoints', 'concurrency', 'ipam-allocations', 'timeout', 'agent-batch', 'poll-interval-ms', 'out', 'agent-entry', 'cpu-profile'],
    ['agent-arg'],
  );
  const rounds = (values.rounds ?? ROUND_NAMES.join(',')).split(',').map((part) => part.trim()).filter((part) => part !== '');
  if (rounds.length === 0 || rounds.some((part) => !(ROUND_NAMES as readonly string[]).includes(part))) {
    throw new Error(`--rounds takes rounds from ${ROUND_NAMES.join(',')}, got ${values.rounds ?? ''}`);
  }
  const floor = values['kernel-floor'] ?? 'yes';
  if (floor !== 'yes' && floor !== 'no') throw new Error(`--kernel-floor takes yes or no, got ${floor}`);
  return {
    rounds: ROUND_NAMES.filter((name) => rounds.includes(name)),
    kernelFloor: floor === 'yes',
    hosts: integerOption('hosts', values.hosts, 20, 2, 200),
    endpoints: integerOption('endpoints', values.endpoints, 250, 1, 4000),
    concurrency: integerOption('concurrency', values.concurrency, 8, 1, 256),
    ipamAllocations: integerOption('ipam-allocations', values['ipam-allocations'], 250, 0, 4000),
    timeoutSeconds: integerOption('timeout', values.timeout, 60, 5, 1800),
    agentBatch: integerOption('agent-batch', values['agent-batch'], 4, 1, 200),
    pollIntervalMs: integerOption('poll-interval-ms', values['poll-interval-ms'], 250, 20, 10_000),
    out: values.out === undefined ? join(repoRoot, 'bench', 'network', 'scale-results.json') : resolve(values.out),
    agentArgs: lists['agent-arg'] ?? [],
    agentEntry: values['agent-entry'] === undefined ? join(repoRoot, 'dist', 'bin', 'berth.js') : resolve(values['agent-entry']),
    cpuProfileHost: values['cpu-profile'],
  };
}

runBenchmark(main);
