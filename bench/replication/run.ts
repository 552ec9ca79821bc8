// Benchmark: cross-host volume replication between two simulated Docker hosts sharing one etcd, with
// PostgreSQL as the workload: replica lag under pgbench, bytes shipped for scattered page writes,
// planned handoff time against a plain restart, and the owner's pgbench TPS with and without a replica.
//
//   node dist/bench/replication/run.js [--quick] [--only lag,pages,handoff,throughput] [--out FILE]
//
// See README.md next to this file for what is measured and how to read the figures.
import { DEFAULT_REPLICATE_EVERY_MS } from '../../agent/replication-stack.js';
import { mkdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Host } from '../../test/helpers/cluster.js';
import { startPostgres, type PostgresContainer } from '../../test/helpers/postgres.js';
import { repoRoot } from '../../test/helpers/repo-root.js';
import { describeMachineBasics, dockerVersions, firstLineOf } from '../common/machine.js';
import { cleanUpOnSignals, log, runBenchmark } from '../common/main.js';
import { integerOption, optionsOrUsage, parseBenchArgs } from '../common/options.js';
import { describeSource, mdPathFor, writeResultFiles } from '../common/report.js';
import { round } from '../common/stats.js';
import { startReplicationCluster, type ReplicationCluster } from './cluster.js';
import { initialise } from './database.js';
import { measureHandoffs, type HandoffFigures, type HandoffSettings } from './handoff.js';
import { measureLag, measureLagOn, type LagFigures, type LagSettings } from './lag.js';
import { measurePageWrites, type PageFigures, type PageSettings } from './page-writes.js';
import { buildTargets, MEASUREMENTS, renderMarkdown, renderTable, type BenchResults, type MeasurementId } from './results.js';
import { measureThroughput, type ThroughputFigures, type ThroughputSettings } from './throughput.js';
import { ReplicatedHosts } from './volumes.js';

interface Options {
  measurements: MeasurementId[];
  quick: boolean;
  lag: LagSettings;
  /** pgbench -R of the steady-load lag measurement. */
  steadyTps: number;
  pages: PageSettings;
  handoff: HandoffSettings;
  throughput: ThroughputSettings;
  poolSize: string;
  poolDirs: Map<string, string>;
  out: string;
  agentArgs: string[];
  agentEntry: string | undefined;
}

const USAGE = `usage: node dist/bench/replication/run.js [options]   (as root)
  --quick                 a short smoke run: scale 2, 15 s of lag sampling, 1 handoff round with 2 s of
                          writes, 1 throughput round of 10 s (each flag below still overrides)
  --only LIST             measurements, comma-separated from ${MEASUREMENTS.join(',')} (default all)
  --scale N               pgbench scale of every database (default 10: 1,000,000 accounts, ~160 MB)
  --clients N             pgbench clients (-c, default 4)
  --threads N             pgbench threads (-j, default 2)
  --lag-seconds N         length of the pgbench run the lag is sampled during (default 60)
  --sample-ms N           interval of the lag samples (default 250)
  --steady-tps N          rate of the steady-load lag measurement (pgbench -R, default 200: about a third of
                          what this 2-CPU machine does unreplicated), sampled as long as --lag-seconds
  --file-mib N            size of the random file the pages are written into (default 64)
  --pages N               4 KiB pages overwritten (default 256)
  --pages-every DURATION  replicate-every of the page-write volume (default 30s: only the unmount ships)
  --page-attempts N       attempts when a timed snapshot splits the writes (default 3)
  --seed N                seed of the page offsets (default 1)
  --handoff-rounds N      rounds of one restart on hA and one handoff hA ⇄ hB (default 3)
  --write-seconds N       seconds of pgbench writes before each restart or handoff (default 5)
  --tps-rounds N          rounds of the throughput comparison, order alternating (default 3)
  --tps-seconds N         length of each throughput run (default 30)
  --pool-size SIZE        each agent's btrfs pool (sparse file; default 8G)
  --pool-dir HOST=DIR     the folder of that host's pool file (repeatable; default the host's own folder
                          on the machine's disk), e.g. --pool-dir hB=/dev/shm to give the replica a
                          device of its own when the machine has one disk
  --out FILE              results JSON (default bench/replication/results.json); results.md is written next to it
  --agent-arg ARG         extra argument for the agents (repeatable), e.g. --agent-arg=--host-ttl=4s
  --agent-entry JS        the agent's entry script (default dist/bin/berth.js), to compare another build`;

/** The agent's default `replicate-every`, which the lag target is stated for. */
const DEFAULT_REPLICATE_EVERY = `${DEFAULT_REPLICATE_EVERY_MS / 1000}s`;

async function main(): Promise<number> {
  const options = optionsOrUsage(parseOptions, USAGE);
  if (options === undefined) return 2;
  mkdirSync(dirname(options.out), { recursive: true });
  const started = new Date();
  const loadAtStart = loadavg().map((v) => round(v, 2));
  log(`starting a two-host cluster with etcd and agents; measurements: ${options.measurements.join(', ')}${options.quick ? ' (quick)' : ''}`);
  const stack = await startReplicationCluster({ hosts: 2, poolSize: options.poolSize, poolDirs: options.poolDirs, agentArgs: options.agentArgs, agentEntry: options.agentEntry, log });
  let tornDown: Promise<void> | undefined;
  const teardown = (): Promise<void> => (tornDown ??= (async () => {
    log('disposing the cluster and etcd');
    for (const problem of await stack.dispose()) log(`cleanup: ${problem}`);
  })());
  cleanUpOnSignals(teardown);

  let results: BenchResults;
  try {
    results = await measureAll(stack, options, started, loadAtStart);
    // Written before the cleanup, so a failing disposal does not lose the figures.
    writeResultFiles(options.out, results, renderMarkdown(results), renderTable(results));
  } finally {
    await teardown();
  }
  console.log(`\n${renderTable(results)}`);
  log(`results written to ${options.out} and ${mdPathFor(options.out)}`);
  return Object.keys(results.failures).length > 0 ? 1 : 0;
}

async function measureAll(stack: ReplicationCluster, options: Options, started: Date, loadAtStart: number[]): Promise<BenchResults> {
  const [hA, hB] = stack.hosts;
  if (hA === undefined || hB === undefined) throw new Error('the cluster needs two hosts');
  const hosts = new ReplicatedHosts(hA, hB, stack.postgresImage, stack.busyboxImage);
  const machine = await describeMachine(hA, stack.postgresImage);
  const source = await describeSource();
  const selected = (id: MeasurementId): boolean => options.measurements.includes(id);
  const failures: Partial<Record<MeasurementId, string>> = {};
  const attempt = async <T>(id: MeasurementId, task: () => Promise<T>): Promise<T | null> => {
    if (!selected(id)) return null;
    try {
      return await task();
    } catch (err) {
      const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
      log(`${id} failed: ${message}`);
      failures[id] = message.split('\n')[0] ?? message;
      return null;
    }
  };

  // The handoffs go on with the lag measurement's database (loaded, and written to for a minute).
  let database: PostgresContainer | undefined;
  const lag: LagFigures | null = await attempt('lag', async () => {
    const measured = await measureLag(hosts, options.lag, log);
    database = measured.pg;
    return measured.figures;
  });
  const steadyLag: LagFigures | null = await attempt('steady', async () => {
    database ??= await loadedDatabase(hosts, options);
    return measureLagOn(hosts, database, { ...options.lag, rateTps: options.steadyTps }, log);
  });
  const handoff: HandoffFigures | null = await attempt('handoff', async () => {
    database ??= await loadedDatabase(hosts, options);
    return measureHandoffs(hosts, database, options.handoff, log);
  });
  const pages: PageFigures | null = await attempt('pages', () => measurePageWrites(hosts, options.pages, log));
  const throughput: ThroughputFigures | null = await attempt('throughput', () => measureThroughput(hosts, options.throughput, log));

  const targets = buildTargets({ lag, steadyLag, pages, handoff });
  return {
    benchmark: 'replication',
    date: started.toISOString(),
    durationSeconds: Math.round((Date.now() - started.getTime()) / 1000),
    quick: options.quick,
    source,
    machine: { ...machine, loadAverageAtStart: loadAtStart, loadAverageAtEnd: loadavg().map((v) => round(v, 2)) },
    parameters: {
      hosts: stack.hosts.map((host) => host.name),
      measurements: options.measurements,
      poolSize: options.poolSize,
      poolDirs: Object.fromEntries(options.poolDirs),
      defaultReplicateEvery: DEFAULT_REPLICATE_EVERY,
      etcd: `${stack.etcdEndpoint}, in the switch namespace`,
      agentArgs: options.agentArgs,
      agentEntry: options.agentEntry ?? 'dist/bin/berth.js',
    },
    lag,
    steadyLag,
    pages,
    handoff,
    throughput,
    failures,
    targets,
    allTargetsMet: Object.keys(failures).length === 0 && targets.every((t) => t.met === true),
  };
}

/** Without the lag measurement: a replicated volume with PostgreSQL on hA and a pgbench database. */
async function loadedDatabase(hosts: ReplicatedHosts, options: Options): Promise<PostgresContainer> {
  await hosts.createVolume(options.lag.volume, []);
  const pg = await startPostgres(hosts.owner, { name: 'bench-lag-hA', volume: options.lag.volume, image: hosts.postgresImage });
  log(`handoff: pgbench -i -s ${options.lag.scale} on ${options.lag.volume}`);
  await initialise(pg, options.lag.scale);
  return pg;
}

async function describeMachine(host: Host, postgresImage: string): Promise<Omit<BenchResults['machine'], 'loadAverageAtStart' | 'loadAverageAtEnd'>> {
  return {
    ...describeMachineBasics(),
    docker: await dockerVersions(host),
    btrfsProgs: await firstLineOf(['btrfs', '--version']),
    etcd: (await firstLineOf(['etcd', '--version'])).replace(/^etcd Version: /, 'etcd '),
    postgres: await firstLineOf(['docker', '--host', host.dockerHost, 'run', '--rm', '--entrypoint', 'postgres', postgresImage, '--version'], 60_000),
  };
}

function parseOptions(argv: string[]): Options {
  const { values, lists, switches } = parseBenchArgs(
    argv,
    USAGE,
    [
      'only', 'scale', 'clients', 'threads', 'lag-seconds', 'sample-ms', 'steady-tps', 'file-mib', 'pages', 'pages-every', 'page-attempts', 'seed',
      'handoff-rounds', 'write-seconds', 'tps-rounds', 'tps-seconds', 'pool-size', 'out', 'agent-entry',
    ],
    ['agent-arg', 'pool-dir'],
    ['quick'],
  );
  const quick = switches.quick;
  const only = (values.only ?? MEASUREMENTS.join(',')).split(',').map((part) => part.trim()).filter((part) => part !== '');
  const unknown = only.filter((part) => !(MEASUREMENTS as readonly string[]).includes(part));
  if (unknown.length > 0 || only.length === 0) throw new Error(`--only takes measurements from ${MEASUREMENTS.join(',')}, got ${values.only ?? ''}`);
  const pagesEvery = values['pages-every'] ?? '30s';
  if (!/^\d+(ms|s|m|h)$/.test(pagesEvery)) throw new Error(`--pages-every takes a duration such as 30s, got ${pagesEvery}`);
  const poolSize = values['pool-size'] ?? '8G';
  if (!/^\d+[KMGT]$/.test(poolSize)) throw new Error(`--pool-size takes a size such as 8G, got ${poolSize}`);
  const scale = integerOption('scale', values.scale, quick ? 2 : 10, 1, 1000);
  const clients = integerOption('clients', values.clients, 4, 1, 40);
  const threads = integerOption('threads', values.threads, 2, 1, 40);
  if (clients % threads !== 0) throw new Error(`--clients (${clients}) must be a multiple of --threads (${threads}), as pgbench requires`);
  const fileMiB = integerOption('file-mib', values['file-mib'], 64, 1, 4096);
  return {
    // Always in the fixed order, whatever the order given.
    measurements: MEASUREMENTS.filter((id) => only.includes(id)),
    quick,
    lag: {
      volume: 'bench-lag',
      scale,
      clients,
      threads,
      seconds: integerOption('lag-seconds', values['lag-seconds'], quick ? 15 : 60, 5, 3600),
      sampleIntervalMs: integerOption('sample-ms', values['sample-ms'], 250, 50, 10_000),
    },
    steadyTps: integerOption('steady-tps', values['steady-tps'], quick ? 100 : 200, 1, 100_000),
    pages: {
      volume: 'bench-pages',
      fileMiB,
      pages: integerOption('pages', values.pages, 256, 1, (fileMiB * 1024 * 1024) / 4096),
      replicateEvery: pagesEvery,
      attempts: integerOption('page-attempts', values['page-attempts'], 3, 1, 20),
      seed: integerOption('seed', values.seed, 1, 0, 2 ** 31 - 1),
    },
    handoff: {
      rounds: integerOption('handoff-rounds', values['handoff-rounds'], quick ? 1 : 3, 1, 50),
      writeSeconds: integerOption('write-seconds', values['write-seconds'], quick ? 2 : 5, 1, 600),
      clients,
      threads,
    },
    throughput: {
      scale,
      clients,
      threads,
      seconds: integerOption('tps-seconds', values['tps-seconds'], quick ? 10 : 30, 5, 3600),
      rounds: integerOption('tps-rounds', values['tps-rounds'], quick ? 1 : 3, 1, 50),
    },
    poolSize,
    poolDirs: parsePoolDirs(lists['pool-dir'] ?? []),
    out: values.out === undefined ? join(repoRoot, 'bench', 'replication', 'results.json') : resolve(values.out),
    agentArgs: lists['agent-arg'] ?? [],
    agentEntry: values['agent-entry'] === undefined ? undefined : resolve(values['agent-entry']),
  };
}

function parsePoolDirs(given: readonly string[]): Map<string, string> {
  const dirs = new Map<string, string>();
  for (const entry of given) {
    const match = /^(h[AB])=(.+)$/.exec(entry);
    if (match === null) throw new Error(`--pool-dir takes HOST=DIR with HOST hA or hB, got ${entry}`);
    dirs.set(match[1] as string, resolve(match[2] as string));
  }
  return dirs;
}

runBenchmark(main);
