// Benchmark: the volume lifecycle through a real Docker engine, Berth against the engine's own
// `local` driver in the same run, plus lookup latency on the plugin socket with many volumes.
//
//   node dist/bench/volume-lifecycle/run.js [--cycles 200] [--volumes 1000] [--out bench/volume-lifecycle/results.json]
//
// See README.md next to this file for what is measured and how to read the figures.
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startCluster, type Host } from '../../test/helpers/cluster.js';
import { callPlugin, goJson, type RawResponse } from '../../test/helpers/plugin-client.js';
import { repoRoot } from '../../test/helpers/repo-root.js';
import { runCommand } from '../../test/helpers/run-command.js';
import { BUSYBOX_IMAGE, ensureBusyboxImage } from '../../test/helpers/test-images.js';
import { renderMarkdown, renderTable, type BenchResults, type DriverLifecycle, type DriverName, type Target } from './results.js';
import { describeMachineBasics } from '../common/machine.js';
import { runBenchmark } from '../common/main.js';
import { integerOption } from '../common/options.js';
import { describeSource, mdPathFor, writeResultFiles } from '../common/report.js';
import { median, ratio, round, seededRandom, summarize, timed } from '../common/stats.js';

interface Options {
  cycles: number;
  warmup: number;
  block: number;
  volumes: number;
  calls: number;
  lists: number;
  lsRuns: number;
  concurrency: number;
  seed: number;
  out: string;
  agentArgs: string[];
  agentEntry: string | undefined;
}

const USAGE = `usage: node dist/bench/volume-lifecycle/run.js [options]
  --cycles N        lifecycle cycles per driver (default 200)
  --warmup N        uncounted warm-up cycles per driver (default 5)
  --block N         cycles per block; blocks alternate berth, local, local, berth, ... (default 10)
  --volumes N       Berth (and local) volumes present for the lookup and ls figures (default 1000)
  --calls N         VolumeDriver.Get and .Path calls each (default 2000)
  --lists N         VolumeDriver.List calls (default 200)
  --ls-runs N       docker volume ls runs per case (default 10)
  --concurrency N   parallel requests when creating the bulk volumes (default 4)
  --seed N          seed of the random volume picks (default 1)
  --out FILE        results JSON (default bench/volume-lifecycle/results.json); results.md is written next to it
  --agent-arg ARG   extra argument for the agent (repeatable), e.g. --agent-arg=--log-level=debug
  --agent-entry JS  the agent's entry script (default dist/bin/berth.js), to compare another build`;

const TARGET_LIFECYCLE_RATIO = 1.25;
const TARGET_LOOKUP_P99_MS = 5;
const NAME_PREFIX = 'bench';
const WARMUP_LOOKUPS = 100;
const REMOVE_BATCH = 100;

const log = (message: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${message}`);

async function main(): Promise<number> {
  let options: Options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    return 2;
  }
  const started = new Date();
  const loadAtStart = loadavg().map((v) => round(v, 2));
  log(`starting a one-host cluster (${options.cycles} cycles per driver, ${options.volumes} volumes)`);
  const cluster = await startCluster({ hosts: 1, prefix: 'berthbench' });
  const host = cluster.host(0);
  const live: Record<DriverName, Set<string>> = { berth: new Set(), local: new Set() };
  let results: BenchResults;
  try {
    await ensureBusyboxImage(host);
    const agent = await host.startAgent({ args: options.agentArgs, ...(options.agentEntry === undefined ? {} : { entry: options.agentEntry }) });
    const pid = agent.pid;
    const machine = await describeMachine(host);
    const source = await describeSource();
    const rssIdle = rssMiB(pid, 'VmRSS');
    log(`agent pid ${pid} serving ${agent.socketPath}; RSS ${rssIdle} MiB`);

    const lifecycle = await measureLifecycle(host, options, live);
    const lookups = await measureLookups(host, agent.socketPath, pid, options, live);

    const targets: Target[] = [
      {
        name: 'lifecycle mean per cycle, berth/local',
        target: `≤ ${TARGET_LIFECYCLE_RATIO}`,
        value: lifecycle.ratio.meanPerCycle,
        unit: '×',
        met: lifecycle.ratio.meanPerCycle <= TARGET_LIFECYCLE_RATIO,
      },
      ...(['get', 'path', 'list'] as const).map((method) => ({
        name: `VolumeDriver.${method[0]?.toUpperCase()}${method.slice(1)} p99 with ${options.volumes} volumes`,
        target: `< ${TARGET_LOOKUP_P99_MS} ms`,
        value: lookups.plugin[method].p99Ms,
        unit: ' ms',
        met: lookups.plugin[method].p99Ms < TARGET_LOOKUP_P99_MS,
      })),
    ];
    results = {
      benchmark: 'volume-lifecycle',
      date: started.toISOString(),
      durationSeconds: Math.round((Date.now() - started.getTime()) / 1000),
      source,
      machine: { ...machine, loadAverageAtStart: loadAtStart, loadAverageAtEnd: loadavg().map((v) => round(v, 2)) },
      parameters: {
        cycles: options.cycles,
        warmupCycles: options.warmup,
        blockSize: options.block,
        blockOrder: 'berth, local, local, berth (repeated)',
        volumes: options.volumes,
        bulkCreate: `Berth: VolumeDriver.Create on the plugin socket (${options.concurrency} in parallel); local: engine API POST /volumes/create (${options.concurrency} in parallel)`,
        getAndPathCalls: options.calls,
        listCalls: options.lists,
        lsRuns: options.lsRuns,
        seed: options.seed,
        image: BUSYBOX_IMAGE,
        agentArgs: options.agentArgs,
        agentEntry: options.agentEntry ?? 'dist/bin/berth.js',
        berthBackend: lookups.backend,
      },
      lifecycle,
      plugin: lookups.plugin,
      volumeLs: lookups.volumeLs,
      memory: { agentRssMiBIdle: rssIdle, ...lookups.memory },
      targets,
      allTargetsMet: targets.every((t) => t.met),
    };
    // Written before the cleanup, so a failing disposal does not lose the figures of a long run.
    writeResultFiles(options.out, results, renderMarkdown(results), renderTable(results));
  } finally {
    await removeLeftovers(host, live);
    log('disposing the cluster');
    await cluster.dispose();
  }

  console.log(`\n${renderTable(results)}`);
  log(`results written to ${options.out} and ${mdPathFor(options.out)}`);
  return 0;
}

// ---- phase 1: create / run / rm through the docker CLI ----------------------------------------

type StepTimes = { create: number[]; run: number[]; rm: number[]; total: number[] };

async function measureLifecycle(host: Host, options: Options, live: Record<DriverName, Set<string>>): Promise<BenchResults['lifecycle']> {
  let serial = 0;
  const cycle = async (driver: DriverName, into: StepTimes | undefined): Promise<void> => {
    const name = `${NAME_PREFIX}-${driver}-${String(serial++).padStart(5, '0')}`;
    const create = await timed(() => host.dockerOk(['volume', 'create', '--driver', driver, name]));
    live[driver].add(name);
    const run = await timed(() => host.dockerOk(['run', '--rm', '--volume', `${name}:/data`, BUSYBOX_IMAGE, 'true']));
    const rm = await timed(() => host.dockerOk(['volume', 'rm', name]));
    live[driver].delete(name);
    if (into) {
      into.create.push(create.ms);
      into.run.push(run.ms);
      into.rm.push(rm.ms);
      into.total.push(create.ms + run.ms + rm.ms);
    }
  };

  log(`warm-up: ${options.warmup} uncounted cycles per driver`);
  for (let i = 0; i < options.warmup; i++) {
    await cycle('berth', undefined);
    await cycle('local', undefined);
  }

  const times: Record<DriverName, StepTimes> = {
    berth: { create: [], run: [], rm: [], total: [] },
    local: { create: [], run: [], rm: [], total: [] },
  };
  // ABBA order cancels a linear drift in machine load between the two drivers.
  const order: DriverName[] = ['berth', 'local', 'local', 'berth'];
  const blocks = 2 * Math.ceil(options.cycles / options.block);
  for (let b = 0; b < blocks + order.length; b++) {
    const driver = order[b % order.length] as DriverName;
    const size = Math.min(options.block, options.cycles - times[driver].total.length);
    for (let i = 0; i < size; i++) await cycle(driver, times[driver]);
    if (size > 0) {
      const done = times[driver].total;
      log(`${driver.padEnd(5)} block ${String(b + 1).padStart(3)}: ${done.length}/${options.cycles} cycles, mean of block ${round(mean(done.slice(-size)), 1)} ms`);
    }
    if (times.berth.total.length >= options.cycles && times.local.total.length >= options.cycles) break;
  }

  const summarizeDriver = (driver: DriverName): DriverLifecycle => ({
    cycles: times[driver].total.length,
    perCycle: summarize(times[driver].total),
    steps: { create: summarize(times[driver].create), run: summarize(times[driver].run), rm: summarize(times[driver].rm) },
  });
  const berth = summarizeDriver('berth');
  const local = summarizeDriver('local');
  return {
    berth,
    local,
    ratio: {
      meanPerCycle: ratio(berth.perCycle.meanMs, local.perCycle.meanMs),
      p50PerCycle: ratio(berth.perCycle.p50Ms, local.perCycle.p50Ms),
      p99PerCycle: ratio(berth.perCycle.p99Ms, local.perCycle.p99Ms),
      create: ratio(berth.steps.create.meanMs, local.steps.create.meanMs),
      run: ratio(berth.steps.run.meanMs, local.steps.run.meanMs),
      rm: ratio(berth.steps.rm.meanMs, local.steps.rm.meanMs),
    },
  };
}

// ---- phase 2: lookups on the plugin socket and docker volume ls with many volumes -------------

async function measureLookups(
  host: Host,
  socket: string,
  pid: number,
  options: Options,
  live: Record<DriverName, Set<string>>,
): Promise<Pick<BenchResults, 'plugin' | 'volumeLs'> & { memory: Omit<BenchResults['memory'], 'agentRssMiBIdle'>; backend: string }> {
  const berthNames = Array.from({ length: options.volumes }, (_, i) => `${NAME_PREFIX}-bulk-berth-${String(i).padStart(5, '0')}`);
  const localNames = Array.from({ length: options.volumes }, (_, i) => `${NAME_PREFIX}-bulk-local-${String(i).padStart(5, '0')}`);

  log(`creating ${options.volumes} Berth volumes with VolumeDriver.Create on the plugin socket`);
  const bulk = await timed(() =>
    forEachLimited(berthNames, options.concurrency, async (name) => {
      live.berth.add(name);
      expectOk(await callPlugin(socket, 'VolumeDriver.Create', goJson({ Name: name, Opts: {} })), 'Create', name);
    }),
  );
  const probe = expectOk(await callPlugin(socket, 'VolumeDriver.Get', goJson({ Name: berthNames[0] })), 'Get', berthNames[0] ?? '');
  const backend = String((probe.body.Volume as { Status?: { backend?: unknown } } | undefined)?.Status?.backend ?? 'unknown');
  log(`created in ${round(bulk.ms / 1000, 1)} s (backend ${backend})`);
  const rssWithVolumes = rssMiB(pid, 'VmRSS');

  const random = seededRandom(options.seed);
  const pick = (): string => berthNames[Math.floor(random() * berthNames.length)] as string;
  const get = async (name: string): Promise<void> => {
    const response = expectOk(await callPlugin(socket, 'VolumeDriver.Get', goJson({ Name: name })), 'Get', name);
    if ((response.body.Volume as { Name?: unknown } | undefined)?.Name !== name) throw new Error(`Get ${name} answered ${response.text}`);
  };
  const path = async (name: string): Promise<void> => {
    const response = expectOk(await callPlugin(socket, 'VolumeDriver.Path', goJson({ Name: name })), 'Path', name);
    if (typeof response.body.Mountpoint !== 'string' || !response.body.Mountpoint.endsWith(`/${name}`)) throw new Error(`Path ${name} answered ${response.text}`);
  };
  const list = async (): Promise<void> => {
    const response = expectOk(await callPlugin(socket, 'VolumeDriver.List', goJson({})), 'List', '');
    const count = Array.isArray(response.body.Volumes) ? response.body.Volumes.length : -1;
    if (count !== options.volumes) throw new Error(`List returned ${count} volumes, expected ${options.volumes}`);
  };

  log(`warm-up: ${WARMUP_LOOKUPS} uncounted Get and Path calls, ${WARMUP_LOOKUPS / 10} List calls`);
  for (let i = 0; i < WARMUP_LOOKUPS; i++) {
    await get(pick());
    await path(pick());
    if (i % 10 === 0) await list();
  }

  log(`measuring ${options.calls} Get, ${options.calls} Path and ${options.lists} List calls, one at a time`);
  const samples = { get: [] as number[], path: [] as number[], list: [] as number[] };
  const listEvery = Math.max(1, Math.floor(options.calls / Math.max(1, options.lists)));
  for (let i = 0; i < options.calls; i++) {
    const a = pick();
    samples.get.push((await timed(() => get(a))).ms);
    const b = pick();
    samples.path.push((await timed(() => path(b))).ms);
    if (i % listEvery === 0 && samples.list.length < options.lists) samples.list.push((await timed(list)).ms);
  }
  for (let i = samples.list.length; i < options.lists; i++) samples.list.push((await timed(list)).ms);
  const rssAfterLookups = rssMiB(pid, 'VmRSS');
  const plugin = { volumes: options.volumes, bulkCreateMs: round(bulk.ms), get: summarize(samples.get), path: summarize(samples.path), list: summarize(samples.list) };
  log(`p99 Get ${plugin.get.p99Ms} ms, Path ${plugin.path.p99Ms} ms, List ${plugin.list.p99Ms} ms`);

  const volumeLs = async (filter: DriverName | undefined, expected: number): Promise<number> => {
    const args = ['volume', 'ls', ...(filter === undefined ? [] : ['--filter', `driver=${filter}`])];
    const { ms, value } = await timed(() => host.dockerOk(args));
    const rows = value.stdout.split('\n').filter((line) => line.trim() !== '').length - 1;
    if (rows !== expected) throw new Error(`docker ${args.join(' ')} listed ${rows} volumes, expected ${expected}`);
    return ms;
  };

  log(`docker volume ls with ${options.volumes} Berth volumes: 1 warm-up + ${options.lsRuns} runs`);
  await volumeLs(undefined, options.volumes);
  const berthOnly: number[] = [];
  for (let i = 0; i < options.lsRuns; i++) berthOnly.push(await volumeLs(undefined, options.volumes));

  log(`creating ${options.volumes} local volumes through the engine API`);
  await forEachLimited(localNames, options.concurrency, async (name) => {
    live.local.add(name);
    await host.dockerode.createVolume({ Name: name, Driver: 'local' });
  });

  log(`docker volume ls --filter driver=X with both sets present, interleaved: ${options.lsRuns} runs each`);
  await volumeLs('berth', options.volumes);
  await volumeLs('local', options.volumes);
  const filtered: Record<DriverName, number[]> = { berth: [], local: [] };
  for (let i = 0; i < options.lsRuns; i++) {
    const first: DriverName = i % 2 === 0 ? 'berth' : 'local';
    const second: DriverName = first === 'berth' ? 'local' : 'berth';
    filtered[first].push(await volumeLs(first, options.volumes));
    filtered[second].push(await volumeLs(second, options.volumes));
  }

  log(`removing the ${options.volumes} Berth volumes (docker volume rm, ${REMOVE_BATCH} per call)`);
  await removeThroughEngine(host, live.berth);
  if (live.berth.size > 0) throw new Error(`${live.berth.size} Berth volumes could not be removed`);

  log(`docker volume ls with ${options.volumes} local volumes: 1 warm-up + ${options.lsRuns} runs`);
  await volumeLs(undefined, options.volumes);
  const localOnly: number[] = [];
  for (let i = 0; i < options.lsRuns; i++) localOnly.push(await volumeLs(undefined, options.volumes));
  await removeThroughEngine(host, live.local);

  return {
    backend,
    plugin,
    volumeLs: {
      berthOnly: summarize(berthOnly),
      localOnly: summarize(localOnly),
      ratioOfMedians: ratio(median(berthOnly), median(localOnly)),
      filteredInterleaved: {
        berth: summarize(filtered.berth),
        local: summarize(filtered.local),
        ratioOfMedians: ratio(median(filtered.berth), median(filtered.local)),
      },
    },
    memory: {
      agentRssMiBWithVolumes: rssWithVolumes,
      agentRssMiBAfterLookups: rssAfterLookups,
      agentPeakRssMiB: rssMiB(pid, 'VmHWM'),
    },
  };
}

// ---- cleanup ----------------------------------------------------------------------------------

/** `docker volume rm` in batches; names that are gone afterwards leave `names`. Never throws. */
async function removeThroughEngine(host: Host, names: Set<string>): Promise<void> {
  const all = [...names];
  for (let i = 0; i < all.length; i += REMOVE_BATCH) {
    const batch = all.slice(i, i + REMOVE_BATCH);
    await host.docker(['volume', 'rm', ...batch]).catch(() => undefined);
  }
  const listed = await host.docker(['volume', 'ls', '--quiet']).catch(() => undefined);
  if (listed?.code !== 0) return;
  const present = new Set(listed.stdout.split('\n').map((line) => line.trim()));
  for (const name of all) if (!present.has(name)) names.delete(name);
}

/** Removes every volume this run still has, through the engine and then (Berth) on the plugin socket. */
async function removeLeftovers(host: Host, live: Record<DriverName, Set<string>>): Promise<void> {
  const left = live.berth.size + live.local.size;
  if (left === 0) return;
  log(`cleanup: removing ${left} volumes left by the run`);
  try {
    await host.removeAllContainers();
  } catch (err) {
    log(`cleanup: cannot remove containers: ${err instanceof Error ? err.message : String(err)}`);
  }
  await removeThroughEngine(host, live.berth);
  await removeThroughEngine(host, live.local);
  const socket = host.agent?.running === true ? host.agent.socketPath : undefined;
  if (socket !== undefined) {
    for (const name of [...live.berth]) {
      const response = await callPlugin(socket, 'VolumeDriver.Remove', goJson({ Name: name })).catch(() => undefined);
      if (response?.status === 200) live.berth.delete(name);
    }
  }
  if (live.berth.size + live.local.size > 0) log(`cleanup: ${live.berth.size + live.local.size} volumes remain; the cluster's disposal deletes them`);
}

// ---- plumbing ---------------------------------------------------------------------------------

function expectOk(response: RawResponse, method: string, name: string): RawResponse {
  if (response.status !== 200 || 'Err' in response.body) {
    throw new Error(`VolumeDriver.${method} ${name} answered ${response.status}: ${response.text.trim()}`);
  }
  return response;
}

async function forEachLimited<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await task(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

function mean(values: readonly number[]): number {
  return values.reduce((sum, value) => sum + value, 0) / Math.max(1, values.length);
}

/** A memory figure of /proc/<pid>/status (VmRSS, VmHWM) in MiB. */
function rssMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  if (match === null) throw new Error(`no ${field} in /proc/${pid}/status`);
  return round(Number(match[1]) / 1024, 1);
}

async function describeMachine(host: Host): Promise<Omit<BenchResults['machine'], 'loadAverageAtStart' | 'loadAverageAtEnd'>> {
  const versions = await host.dockerOk(['version', '--format', '{{.Client.Version}} {{.Server.Version}}']);
  const [client = '?', server = '?'] = versions.stdout.trim().split(' ');
  const df = await runCommand(['df', '--output=fstype,source', host.berthRoot]).catch(() => undefined);
  const storage = df?.code === 0 ? (df.stdout.trim().split('\n')[1] ?? '').trim().replace(/\s+/, ' on ') : 'unknown';
  return {
    ...describeMachineBasics(),
    docker: { client, server },
    storage,
  };
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      cycles: { type: 'string' },
      warmup: { type: 'string' },
      block: { type: 'string' },
      volumes: { type: 'string' },
      calls: { type: 'string' },
      lists: { type: 'string' },
      'ls-runs': { type: 'string' },
      concurrency: { type: 'string' },
      seed: { type: 'string' },
      out: { type: 'string' },
      'agent-arg': { type: 'string', multiple: true },
      'agent-entry': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    console.log(USAGE);
    process.exit(0);
  }
  return {
    cycles: integerOption('cycles', values.cycles, 200, 1, 100_000),
    warmup: integerOption('warmup', values.warmup, 5, 0, 1000),
    block: integerOption('block', values.block, 10, 1, 10_000),
    volumes: integerOption('volumes', values.volumes, 1000, 1, 100_000),
    calls: integerOption('calls', values.calls, 2000, 1, 1_000_000),
    lists: integerOption('lists', values.lists, 200, 1, 100_000),
    lsRuns: integerOption('ls-runs', values['ls-runs'], 10, 1, 1000),
    concurrency: integerOption('concurrency', values.concurrency, 4, 1, 64),
    seed: integerOption('seed', values.seed, 1, 0, 2 ** 32 - 1),
    out: values.out === undefined ? join(repoRoot, 'bench', 'volume-lifecycle', 'results.json') : resolve(values.out),
    agentArgs: values['agent-arg'] ?? [],
    agentEntry: values['agent-entry'] === undefined ? undefined : resolve(values['agent-entry']),
  };
}

runBenchmark(main);
