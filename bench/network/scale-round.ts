// One round of the scale benchmark on a cluster of its own: build it, create the network, start every
// host's endpoints at once, wait until every host's tables are complete, check them, measure the IPAM,
// and take it all down again (also when the round fails).
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentProcess } from '../../test/helpers/agent-process.js';
import type { EtcdServer } from '../../test/helpers/etcd-server.js';
import { NetnsSet } from '../../test/helpers/netns-set.js';
import { sleep, waitUntil } from '../../test/helpers/wait-until.js';
import { median, round, summarize, type Summary } from '../common/stats.js';
import { buildUnderlay, startAgents, startSwitchEtcd, type ScaleHost, type UnderlaySettings } from './scale-cluster.js';
import { EngineStandIn, runBounded, type CreatedEndpoint } from './scale-engine.js';
import { cpuCount, cpuSeconds, machineCpuSeconds, ThreadStateSampler } from './scale-probes.js';
import type { CpuUse, HostConvergence, IpamFigures, RoundResults } from './scale-results.js';
import { StoreWatch } from './scale-store-watch.js';
import { diffTables, dumpTables, emptyTables, TableWatch, type Tables } from './scale-tables.js';

export interface RoundSettings {
  readonly name: RoundResults['name'];
  /** Whether each endpoint is joined too (a veth pair, as for a container). */
  readonly join: boolean;
  readonly hosts: number;
  readonly endpoints: number;
  readonly concurrency: number;
  /** RequestAddress calls per host after convergence (0: none). */
  readonly ipamAllocations: number;
  readonly timeoutSeconds: number;
  readonly agentBatch: number;
  readonly pollIntervalMs: number;
  readonly agentEntry: string;
  readonly agentArgs: readonly string[];
  readonly cpuProfileHost: string | undefined;
  readonly subnet: string;
  readonly underlay: UnderlaySettings;
  /** Where the agents' logs (and a CPU profile) are kept after the round. */
  readonly keepDir: string;
  readonly log: (message: string) => void;
  /** Registers the round's cleanup, so an interrupted benchmark can run it; called again with undefined once done. */
  readonly onCleanup: (cleanup: (() => Promise<void>) | undefined) => void;
}

/** Per plugin call: the agent answers within seconds even when starved; past this the run is broken. */
const CALL_TIMEOUT_MS = 60_000;
/** How often the agents' thread states are sampled during the timed phase. */
const THREAD_SAMPLE_MS = 100;

/** Monotonic milliseconds, comparable across the benchmark's own timers. */
export const clock = (): number => Number(process.hrtime.bigint()) / 1e6;
const errorText = (err: unknown): string => (err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err));

export async function runRound(settings: RoundSettings): Promise<RoundResults> {
  const { log } = settings;
  const runDir = mkdtempSync('/tmp/berth-scale-');
  const netns = new NetnsSet('bscale');
  const agents: AgentProcess[] = [];
  const watches: TableWatch[] = [];
  let storeWatch: StoreWatch | undefined;
  let etcd: EtcdServer | undefined;
  let hosts: ScaleHost[] = [];

  let tornDown: Promise<void> | undefined;
  const teardown = (): Promise<void> => (tornDown ??= (async () => {
    for (const watch of watches) watch.stop();
    storeWatch?.stop();
    // SIGTERM lets an agent under --cpu-prof write its profile; every agent gets the same.
    await Promise.all(agents.map((agent) => agent.stop(15_000).catch((err: unknown) => log(`cleanup: ${agent.name}: ${errorText(err)}`))));
    try {
      mkdirSync(settings.keepDir, { recursive: true });
      for (const host of hosts) cpSync(host.dir, join(settings.keepDir, host.name), { recursive: true, filter: (path) => !path.includes('/root') && !path.endsWith('.sock') });
      if (etcd) cpSync(etcd.logPath, join(settings.keepDir, 'etcd.log'));
    } catch (err) {
      log(`cleanup: keeping the logs: ${errorText(err)}`);
    }
    await etcd?.stop().catch((err: unknown) => log(`cleanup: etcd: ${errorText(err)}`));
    await netns.dispose().catch((err: unknown) => log(`cleanup: ${errorText(err)}`));
    rmSync(runDir, { recursive: true, force: true });
  })());
  settings.onCleanup(teardown);

  try {
    log(`[${settings.name}] building the underlay: ${settings.hosts} hosts on ${settings.underlay.prefix}.0/24`);
    hosts = await buildUnderlay(netns, settings.hosts, settings.underlay, runDir);
    for (const host of hosts) {
      const watch = new TableWatch(host.name, host.netns, clock);
      watches.push(watch);
      await watch.start();
    }
    etcd = await startSwitchEtcd(netns, settings.underlay);
    storeWatch = new StoreWatch(netns.enter('sw', []), etcd.endpoint, clock);
    await storeWatch.start();

    log(`[${settings.name}] starting ${settings.hosts} agents, ${settings.agentBatch} at a time`);
    const agentsStart = clock();
    await startAgents(
      hosts,
      {
        entry: settings.agentEntry,
        etcdEndpoint: etcd.endpoint,
        agentArgs: settings.agentArgs,
        nodeArgs: (host) => (host.name === settings.cpuProfileHost ? ['--cpu-prof', `--cpu-prof-dir=${host.dir}`] : []),
        readyTimeoutMs: 60_000,
      },
      settings.agentBatch,
      (agent) => agents.push(agent),
    );
    const agentsStartSeconds = round((clock() - agentsStart) / 1000, 1);

    log(`[${settings.name}] creating the network on the first host and attaching it on the others`);
    const networkStart = clock();
    const engines = hosts.map((host) => new EngineStandIn(host, clock, CALL_TIMEOUT_MS));
    const [first, ...others] = engines as [EngineStandIn, ...EngineStandIn[]];
    const poolId = await first.createNetwork(settings.subnet);
    await runBounded(others.length, 4, (i) => others[i]!.attachNetwork(poolId, settings.subnet));
    await waitUntil(() => watches.every((watch) => watch.devices.size === 1 && watch.tables.flood.size === hosts.length - 1), {
      description: `every host to have its VXLAN device with ${hosts.length - 1} flood entries`,
      timeoutMs: 60_000,
      intervalMs: 50,
    });
    const device = [...watches[0]!.devices][0]!;
    if (watches.some((watch) => !watch.devices.has(device))) throw new Error(`hosts disagree on the VXLAN device: ${watches.map((watch) => [...watch.devices].join(',')).join(' ')}`);
    const networkReadySeconds = round((clock() - networkStart) / 1000, 1);
    log(`[${settings.name}] network ready on every host (${device}); timed phase: ${settings.endpoints} endpoints on each of ${settings.hosts} hosts${settings.join ? ', each joined' : ', not joined'}`);

    const cpuBefore = sampleCpu(agents, etcd, watches);
    const threads = new ThreadStateSampler(agents.map((agent) => agent.pid), THREAD_SAMPLE_MS);
    threads.start();
    const t0 = clock();
    const perHost = await Promise.all(engines.map((engine) => runBounded(settings.endpoints, settings.concurrency, () => engine.startEndpoint(settings.join))));
    const endpoints = perHost.flat();
    const allRecordedMs = Math.max(...endpoints.map((endpoint) => endpoint.recordedAt)) - t0;
    const allDoneMs = Math.max(...endpoints.map((endpoint) => endpoint.joinedAt)) - t0;
    log(`[${settings.name}] driver calls done: all ${endpoints.length} endpoints recorded after ${Math.round(allRecordedMs)} ms, the last call answered after ${Math.round(allDoneMs)} ms`);

    const vteps = new Map(hosts.map((host) => [host.name, host.address]));
    const expected = new Map(hosts.map((host) => [host.name, expectedTables(host.name, endpoints, vteps)]));
    for (const watch of watches) watch.expect(expected.get(watch.host)!);
    const deadline = clock() + settings.timeoutSeconds * 1000;
    await waitForTables(watches, device, deadline, settings.pollIntervalMs);
    const tEnd = Math.min(clock(), deadline);
    const threadStates = threads.stop();
    const cpuAfter = sampleCpu(agents, etcd, watches);
    const complete = watches.filter((watch) => watch.completeAt !== undefined);
    const allHostsMs = complete.length === watches.length ? Math.max(...complete.map((watch) => watch.completeAt!)) - t0 : null;
    log(
      allHostsMs === null
        ? `[${settings.name}] tables incomplete on ${watches.length - complete.length} hosts ${settings.timeoutSeconds} s after the last call`
        : `[${settings.name}] every host's tables complete after ${Math.round(allHostsMs)} ms`,
    );

    log(`[${settings.name}] checking every host's tables with a dump`);
    const finals = await runBounded(hosts.length, 4, async (i) => ({ host: hosts[i]!, tables: await dumpTables(hosts[i]!.netns, device) }));
    const hostResults: HostConvergence[] = finals.map(({ host, tables }, i) => {
      const watch = watches[i]!;
      const diff = diffTables(tables, expected.get(host.name)!);
      return {
        host: host.name,
        completeMs: watch.completeAt === undefined ? null : round(watch.completeAt - t0, 1),
        seenBy: watch.completeBy ?? null,
        fdb: tables.fdb.size,
        neighbours: tables.neighbours.size,
        flood: tables.flood.size,
        missing: diff.missing,
        wrong: diff.wrong,
        extra: diff.extra,
        removals: watch.removals,
        agentCpuSeconds: round((cpuAfter.perAgent[i] ?? 0) - (cpuBefore.perAgent[i] ?? 0), 2),
        problems: [...watch.problems.slice(0, 5), ...diff.examples],
      };
    });

    const ipam = settings.ipamAllocations > 0 ? await measureIpam(engines, settings, endpoints) : null;
    const seconds = (tEnd - t0) / 1000;
    const cpu: CpuUse = {
      agents: round(sum(cpuAfter.perAgent) - sum(cpuBefore.perAgent), 1),
      agentsSystem: round(cpuAfter.agentsSystem - cpuBefore.agentsSystem, 1),
      etcd: round(cpuAfter.etcd - cpuBefore.etcd, 1),
      monitors: round(cpuAfter.monitors - cpuBefore.monitors, 1),
      benchmark: round(cpuAfter.self - cpuBefore.self, 1),
      machine: round(cpuAfter.machine - cpuBefore.machine, 1),
      intervalSeconds: round(seconds, 2),
      available: round(seconds * cpuCount(), 1),
    };
    return {
      name: settings.name,
      join: settings.join,
      setup: { agentsStartSeconds, networkReadySeconds, vxlanDevice: device },
      endpoints: {
        total: endpoints.length,
        allRecordedMs: round(allRecordedMs, 1),
        allDoneMs: round(allDoneMs, 1),
        perSecond: round(endpoints.length / (allDoneMs / 1000), 1),
        latency: {
          requestAddress: summarize(endpoints.map((endpoint) => endpoint.requestAddressMs)),
          createEndpoint: summarize(endpoints.map((endpoint) => endpoint.createEndpointMs)),
          join: settings.join ? summarize(endpoints.map((endpoint) => endpoint.joinMs)) : null,
        },
        duplicateAddresses: endpoints.length - new Set(endpoints.map((endpoint) => endpoint.ip)).size,
        duplicateMacs: endpoints.length - new Set(endpoints.map((endpoint) => endpoint.mac)).size,
      },
      convergence: {
        hostsComplete: complete.length,
        allHostsMs: allHostsMs === null ? null : round(allHostsMs, 1),
        lagAfterLastRecordMs: allHostsMs === null ? null : round(allHostsMs - allRecordedMs, 1),
        perHost: complete.length === 0 ? null : summarize(complete.map((watch) => watch.completeAt! - t0)),
        propagation: propagationOf(endpoints, watches, storeWatch),
        hosts: hostResults,
      },
      cpu,
      agentThreads: threadStates,
      ipam,
    };
  } finally {
    await teardown();
    settings.onCleanup(undefined);
  }
}

/** What `host` should hold once every endpoint is programmed: every other host's endpoints and a flood entry per other host. */
function expectedTables(host: string, endpoints: readonly CreatedEndpoint[], vteps: ReadonlyMap<string, string>): Tables {
  const tables = emptyTables();
  for (const endpoint of endpoints) {
    if (endpoint.host === host) continue;
    tables.fdb.set(endpoint.mac, vteps.get(endpoint.host)!);
    tables.neighbours.set(endpoint.ip, endpoint.mac);
  }
  for (const [name, vtep] of vteps) if (name !== host) tables.flood.add(vtep);
  return tables;
}

/**
 * Waits until every host's tables are complete or `deadline` passes. The monitors keep the copies current;
 * a host whose monitor lost events is dumped every `pollIntervalMs` instead.
 */
async function waitForTables(watches: readonly TableWatch[], device: string, deadline: number, pollIntervalMs: number): Promise<void> {
  let lastPoll = 0;
  while (clock() < deadline && watches.some((watch) => watch.completeAt === undefined)) {
    const lossy = watches.filter((watch) => watch.lossy && watch.completeAt === undefined);
    if (lossy.length > 0 && clock() - lastPoll >= pollIntervalMs) {
      lastPoll = clock();
      await runBounded(lossy.length, 2, async (i) => {
        const at = clock();
        lossy[i]!.reload(await dumpTables(lossy[i]!.netns, device), at);
      });
    }
    await sleep(20);
  }
}

/** The IPAM alone, after convergence: `ipamAllocations` RequestAddress calls on every host at once. */
async function measureIpam(engines: readonly EngineStandIn[], settings: RoundSettings, endpoints: readonly CreatedEndpoint[]): Promise<IpamFigures> {
  settings.log(`[${settings.name}] IPAM phase: ${settings.ipamAllocations} RequestAddress calls on each host`);
  const start = clock();
  const perHost = await Promise.all(
    engines.map(async (engine) => {
      const hostStart = clock();
      const samples = await runBounded(settings.ipamAllocations, settings.concurrency, async () => {
        const callStart = clock();
        const address = await engine.requestAddress();
        return { address: address.split('/')[0]!, ms: clock() - callStart };
      });
      return { samples, seconds: (clock() - hostStart) / 1000 };
    }),
  );
  const seconds = (clock() - start) / 1000;
  const samples = perHost.flatMap((host) => host.samples);
  const addresses = [...samples.map((sample) => sample.address), ...endpoints.map((endpoint) => endpoint.ip)];
  const rates = perHost.map((host) => settings.ipamAllocations / host.seconds).sort((a, b) => a - b);
  return {
    allocationsPerHost: settings.ipamAllocations,
    allocations: samples.length,
    endpointsAlready: endpoints.length,
    seconds: round(seconds, 2),
    perSecond: round(samples.length / seconds, 1),
    perHostPerSecond: { min: round(rates[0]!, 1), median: round(median(rates), 1), max: round(rates[rates.length - 1]!, 1) },
    latency: summarize(samples.map((sample) => sample.ms)),
    duplicates: addresses.length - new Set(addresses).size,
  };
}

/** Per endpoint and remote host: record → kernel, record → outside watch, outside watch → kernel. */
function propagationOf(endpoints: readonly CreatedEndpoint[], watches: readonly TableWatch[], store: StoreWatch): RoundResults['convergence']['propagation'] {
  const total: number[] = [];
  const agent: number[] = [];
  const storeDelays: number[] = [];
  for (const endpoint of endpoints) {
    const seenByStore = store.activeAt.get(endpoint.ip);
    if (seenByStore !== undefined) storeDelays.push(seenByStore - endpoint.recordedAt);
    for (const watch of watches) {
      if (watch.host === endpoint.host) continue;
      const fdbAt = watch.fdbSeenAt.get(endpoint.mac);
      const neighbourAt = watch.neighbourSeenAt.get(endpoint.ip);
      if (fdbAt === undefined || neighbourAt === undefined) continue;
      const inKernel = Math.max(fdbAt, neighbourAt);
      total.push(inKernel - endpoint.recordedAt);
      if (seenByStore !== undefined) agent.push(inKernel - seenByStore);
    }
  }
  const summary = (values: number[]): Summary | null => (values.length === 0 ? null : summarize(values));
  return { total: summary(total), store: summary(storeDelays), agent: summary(agent), samples: total.length };
}

interface CpuSample {
  readonly perAgent: number[];
  /** The agents' kernel time alone (netlink, sockets), summed. */
  readonly agentsSystem: number;
  readonly etcd: number;
  readonly monitors: number;
  readonly self: number;
  /** Every process on the machine (from /proc/stat), seconds. */
  readonly machine: number;
}

function sampleCpu(agents: readonly AgentProcess[], etcd: EtcdServer, watches: readonly TableWatch[]): CpuSample {
  const usage = process.cpuUsage();
  return {
    perAgent: agents.map((agent) => cpuSeconds(agent.pid)),
    agentsSystem: sum(agents.map((agent) => cpuSeconds(agent.pid, 'system'))),
    etcd: etcd.pid === undefined ? 0 : cpuSeconds(etcd.pid),
    monitors: sum(watches.flatMap((watch) => watch.pids()).map((pid) => cpuSeconds(pid))),
    self: (usage.user + usage.system) / 1e6,
    machine: machineCpuSeconds(),
  };
}

function sum(values: readonly number[]): number {
  return values.reduce((total, value) => total + value, 0);
}
