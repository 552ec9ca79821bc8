// Benchmark: Berth's backups against restic and borg (Debian's versions) in one run, on the same
// data: full backup, incremental after database-style page writes, unchanged re-run, restore of
// the latest backup, plus btrfs snapshot times for a 1 GiB and a 10 GiB volume.
//
//   node dist/bench/backup/run.js [--seed 1] [--cache cold|warm] [--out bench/backup/results.json]
//
// See README.md next to this file for what is measured and how to read the figures.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { generateBackupKey } from '../../volume-driver/backups/codec/encryption.js';
import { BtrfsBackend } from '../../volume-driver/storage/btrfs-backend.js';
import { repoRoot } from '../../test/helpers/repo-root.js';
import { runCommand } from '../../test/helpers/run-command.js';
import { describeSource, mdPathFor, writeResultFiles } from '../common/report.js';
import { ratio, round, summarize, timed } from '../common/stats.js';
import { applyPageWrites, DB_FILE, GiB, MiB, sha256File, SQL_FILE, writeRandomFile, writeSqlFile } from './dataset.js';
import { compareRestored, dropCaches, flush, GNU_TIME, loadAverage1, readTree, treeSize } from './measure.js';
import { copyBuild } from './build-copy.js';
import { inOwnMountNamespace, needsOwnMountNamespace } from './mount-namespace.js';
import { createPool, releaseMountsAndLoops } from './pool.js';
import { renderMarkdown, renderTable, type BackupFigures, type BenchResults, type BerthDetail, type RestoreFigures, type RoundFigures, type SnapshotFigures, type StepFigures, type Target, type ToolFigures } from './results.js';
import { BerthTool, BorgTool, firstLine, ResticTool, type BackupStep, type Tool, type ToolContext, type ToolId, type ToolRun } from './tools.js';
import type { WorkerResult } from './worker-protocol.js';

interface Options {
  seed: number;
  cache: 'cold' | 'warm';
  dbMiB: number;
  sqlMiB: number;
  pages: number;
  appendMiB: number;
  poolGiB: number;
  snapshotRuns: number;
  snapshotGiB: number[];
  rounds: number;
  workParent: string;
  out: string;
  cpuProfileDir: string | undefined;
}

const USAGE = `usage: node dist/bench/backup/run.js [options]   (as root)
  --seed N            seed of all generated data and of the page writes (default 1)
  --cache MODE        cold: sync + drop the page cache before every timed step (default);
                      warm: read the step's input once before it instead (also used when dropping is refused)
  --rounds N          rounds of the whole sequence (fresh repositories, volume reset); figures are the
                      median round per tool and step (default 3)
  --db-mib N          size of the random "database file" (default 1024)
  --sql-mib N         size of the generated SQL INSERT text (default 400)
  --pages N           random 4 KiB page writes between the full and the incremental backup (default 256)
  --append-mib N      bytes appended to the database file with them (default 10)
  --pool-gib N        size of the sparse btrfs pool file (default 24)
  --snapshot-runs N   snapshots timed per volume size (default 10)
  --snapshot-gib LIST volume sizes for the snapshot timings, comma-separated (default 1,10; empty: skip)
  --work-dir DIR      where the temporary directory goes (default the OS temp dir; must not be tmpfs)
  --out FILE          results JSON (default bench/backup/results.json); results.md is written next to it
  --cpu-prof DIR      Berth workers write V8 CPU profiles into DIR (profiling slows them: not for the figures);
                      summarise with node dist/bench/backup/profile-summary.js DIR/*.cpuprofile`;

const VOLUME = 'db';
const SOURCE_SNAPSHOT = 'tools-src';
const PRISTINE_SNAPSHOT = 'pristine';
const PAGE_BYTES = 4096;
const TARGET_INCREMENTAL_MIB = 22;
const TARGET_SNAPSHOT_MS = 100;

const log = (message: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${message}`);

async function main(): Promise<number> {
  if (needsOwnMountNamespace()) return inOwnMountNamespace();
  let options: Options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    return 2;
  }
  if (process.getuid?.() !== 0) {
    console.error('run as root: the benchmark mounts a btrfs pool and drops the page cache');
    return 2;
  }
  const missing = [];
  for (const tool of ['restic', 'borg', 'zstd', 'btrfs', 'mkfs.btrfs', 'losetup', 'mount', 'umount', 'filefrag', 'sync']) {
    if ((await runCommand(['sh', '-c', 'command -v "$1"', 'probe', tool]))?.code !== 0) missing.push(tool);
  }
  if (missing.length > 0) {
    console.error(`missing: ${missing.join(', ')} (scripts/install-prereqs installs them)`);
    return 2;
  }
  if (!existsSync(GNU_TIME)) log(`warning: ${GNU_TIME} is missing (Debian package time): no CPU and peak RSS figures`);

  const started = new Date();
  const loadAtStart = loadavg().map((v) => round(v, 2));
  const work = await mkdtemp(join(options.workParent, 'berth-bench-backup-'));
  let cleaned = false;
  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    log(`cleanup: unmounting and deleting ${work}`);
    const left = await releaseMountsAndLoops(work);
    if (left.some((what) => what.startsWith('mount '))) {
      log(`cleanup: could not release ${left.join(', ')}; leaving ${work} in place`);
      return;
    }
    // A loop device still attached holds the pool file open; deleting the file is safe regardless.
    if (left.length > 0) log(`cleanup: ${left.join(', ')} still attached (detached when its last user ends)`);
    await rm(work, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: stopping`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  let results: BenchResults;
  try {
    results = await measure(options, work, started, loadAtStart);
    writeResultFiles(options.out, results, renderMarkdown(results), renderTable(results));
  } finally {
    await cleanup();
  }
  console.log(`\n${renderTable(results)}`);
  log(`results written to ${options.out} and ${mdPathFor(options.out)}`);
  return 0;
}

async function measure(options: Options, work: string, started: Date, loadAtStart: number[]): Promise<BenchResults> {
  const disk = await describeDisk(work);
  if (/^tmpfs/.test(disk)) throw new Error(`${work} is on tmpfs; pass --work-dir on a disk`);
  const machine = await describeMachine(disk);
  const source = await describeSource();
  const build = await copyBuild(join(work, 'code'));
  if (build.staleFiles.length > 0) log(`warning: the build is older than these sources (run npx tsc first?): ${build.staleFiles.join(', ')}`);

  // Cache policy: cold when the kernel lets us drop the page cache, else warm (stated in the results).
  const dropWorks = await dropCaches();
  const cache: 'cold' | 'warm' = options.cache === 'cold' && dropWorks ? 'cold' : 'warm';
  if (options.cache === 'cold' && !dropWorks) log('cannot drop the page cache: every step runs warm (its input read once before it)');
  log(`work directory ${work} (${disk}); cache ${cache}`);

  const poolBytes = options.poolGiB * GiB;
  const pool = await createPool(work, poolBytes);
  const berthRoot = join(pool.mountpoint, 'berth');
  const restoreDir = join(pool.mountpoint, 'restores');
  await mkdir(berthRoot);
  await mkdir(restoreDir);
  await mkdir(join(work, 'state'));
  await mkdir(join(work, 'repos'));
  await mkdir(join(work, 'keys'));
  const backend = new BtrfsBackend({ root: berthRoot });
  const sourcePath = backend.layout.snapshotPath(VOLUME, SOURCE_SNAPSHOT);
  if (options.cpuProfileDir !== undefined) await mkdir(options.cpuProfileDir, { recursive: true });
  const context: ToolContext = {
    work,
    berthRoot,
    berthState: join(work, 'state', 'berth.db'),
    volume: VOLUME,
    sourcePath,
    restoreDir,
    workerScript: build.workerScript,
    ...(options.cpuProfileDir === undefined ? {} : { cpuProfileDir: options.cpuProfileDir }),
  };
  const keyPath = join(work, 'keys', 'backup.key');
  await generateBackupKey(keyPath);
  const repo = (name: string): string => join(work, 'repos', name);
  const berth = new BerthTool('berth', 'Berth zstd', repo('berth'), context);
  const tools: Tool[] = [
    berth,
    new BerthTool('berth-enc', 'Berth zstd+AES', repo('berth-enc'), context, keyPath),
    new ResticTool(repo('restic'), context),
    new BorgTool('borg-lz4', repo('borg-lz4'), 'lz4', context),
    new BorgTool('borg-zstd1', repo('borg-zstd1'), 'zstd,1', context),
  ];

  log(`creating Berth volume ${VOLUME} on btrfs (${pool.mountpoint})`);
  const created = await berth.worker({ op: 'create-volume', volume: VOLUME });
  const volumePath = created.berth.path ?? backend.path(VOLUME);
  const dbBytes = options.dbMiB * MiB;
  const sqlBytes = options.sqlMiB * MiB;
  log(`writing ${options.dbMiB} MiB random database file and ${options.sqlMiB} MiB SQL text (seed ${options.seed})`);
  await writeRandomFile(join(volumePath, DB_FILE), dbBytes, `db-${options.seed}`);
  await writeSqlFile(join(volumePath, SQL_FILE), sqlBytes, options.seed);
  await flush();
  // Every round starts from this content (restored in one switch): same bytes, inodes and times.
  await backend.createSnapshot(VOLUME, PRISTINE_SNAPSHOT);

  const prepareCache = async (warm: () => Promise<void>): Promise<void> => {
    if (cache === 'cold') {
      if (!(await dropCaches())) throw new Error('dropping the page cache stopped working during the run');
    } else {
      await warm();
    }
  };
  const takeSourceSnapshot = async (): Promise<void> => {
    await backend.deleteSnapshot(VOLUME, SOURCE_SNAPSHOT);
    await backend.createSnapshot(VOLUME, SOURCE_SNAPSHOT);
  };

  const logicalFull = dbBytes + sqlBytes;
  const rounds: RoundFigures[] = [];
  let workload: Awaited<ReturnType<typeof applyPageWrites>> | undefined;
  let sourceHashes: Record<string, string> | undefined;
  for (let round = 0; round < options.rounds; round++) {
    // Tools take turns going first, so a drift in the machine's load does not always hit the same one.
    const order = tools.map((_, i) => tools[(i + round) % tools.length]!);
    log(`round ${round + 1} of ${options.rounds}: ${order.map((tool) => tool.label).join(', ')}`);
    if (round > 0) {
      await backend.restoreSnapshot(VOLUME, PRISTINE_SNAPSHOT);
      for (const dir of [join(work, 'restic-cache'), join(work, 'borg-base')]) await rm(dir, { recursive: true, force: true });
    }
    for (const tool of tools) {
      await rm(tool.repo, { recursive: true, force: true });
      await tool.init();
    }
    const backups = new Map<ToolId, Partial<Record<BackupStep, BackupFigures>>>(tools.map((tool) => [tool.id, {}]));
    const runBackups = async (step: BackupStep, logicalBytes: number): Promise<void> => {
      await takeSourceSnapshot();
      for (const tool of order) {
        const before = await treeSize(tool.repo);
        await prepareCache(() => readTree(tool.id.startsWith('berth') ? volumePath : sourcePath));
        const load = loadAverage1();
        const run = await tool.backup(step);
        const flushMs = await flush();
        const after = await treeSize(tool.repo);
        const figures: BackupFigures = {
          ...stepFigures(run, logicalBytes, flushMs, load),
          addedBytes: after.apparentBytes - before.apparentBytes,
          addedAllocatedBytes: after.allocatedBytes - before.allocatedBytes,
          repoBytesAfter: after.apparentBytes,
        };
        backups.get(tool.id)![step] = figures;
        log(`${step.padEnd(11)} ${tool.label.padEnd(16)} ${figures.seconds.toFixed(2).padStart(7)} s  ${String(figures.throughputMBs).padStart(6)} MB/s  +${(figures.addedBytes / MiB).toFixed(2)} MiB${run.berth ? `  (in-process ${(run.berth.opMs / 1000).toFixed(2)} s)` : ''}`);
      }
    };

    await runBackups('full', logicalFull);
    const applied = await applyPageWrites(join(volumePath, DB_FILE), { pages: options.pages, pageBytes: PAGE_BYTES, appendBytes: options.appendMiB * MiB, seed: options.seed });
    await flush();
    const hashes: Record<string, string> = { [DB_FILE]: await sha256File(join(volumePath, DB_FILE)), [SQL_FILE]: await sha256File(join(volumePath, SQL_FILE)) };
    if (sourceHashes !== undefined && JSON.stringify(hashes) !== JSON.stringify(sourceHashes)) throw new Error(`round ${round + 1} produced other data than round 1`);
    workload = applied;
    sourceHashes = hashes;
    log(`workload applied: ${options.pages} random ${PAGE_BYTES} B page writes (${applied.distinctPages} distinct, in ${applied.distinct2MiB} distinct 2 MiB regions) + ${options.appendMiB} MiB append`);
    await runBackups('incremental', applied.sizeAfter + sqlBytes);
    await runBackups('unchanged', applied.sizeAfter + sqlBytes);
    await backend.deleteSnapshot(VOLUME, SOURCE_SNAPSHOT);

    const restores = new Map<ToolId, RestoreFigures>();
    for (const tool of order) {
      await prepareCache(() => readTree(tool.repo));
      const load = loadAverage1();
      const run = await tool.restore(tool.id);
      const flushMs = await flush();
      const check = await compareRestored(run.restoredRoot, hashes);
      const figures: RestoreFigures = { ...stepFigures(run, applied.sizeAfter + sqlBytes, flushMs, load), restoredBytes: check.bytes, identical: check.mismatches.length === 0, mismatches: check.mismatches };
      restores.set(tool.id, figures);
      log(`restore     ${tool.label.padEnd(16)} ${figures.seconds.toFixed(2).padStart(7)} s  ${String(figures.throughputMBs).padStart(6)} MB/s  ${figures.identical ? 'identical' : `DIFFERENT: ${check.mismatches.join('; ')}`}`);
      await run.cleanup();
    }
    rounds.push({
      order: order.map((tool) => tool.id),
      tools: tools.map((tool) => {
        const steps = backups.get(tool.id)!;
        return { id: tool.id, label: tool.label, settings: tool.settings, backups: { full: steps.full!, incremental: steps.incremental!, unchanged: steps.unchanged! }, restore: restores.get(tool.id)! };
      }),
    });
  }
  const logicalAfter = workload!.sizeAfter + sqlBytes;

  const snapshots: SnapshotFigures[] = [];
  for (const gib of options.snapshotGiB) snapshots.push(await measureSnapshots(backend, gib, options));

  const figures: ToolFigures[] = tools.map((tool) => medianFigures(rounds.map((round) => round.tools.find((candidate) => candidate.id === tool.id)!)));
  const byId = (id: ToolId): ToolFigures => figures.find((tool) => tool.id === id)!;
  const b = byId('berth');
  const be = byId('berth-enc');
  const restic = byId('restic');
  const borg = byId('borg-lz4');
  const ratios: Record<string, number> = {
    fullThroughputBerthToRestic: ratio(b.backups.full.throughputMBs, restic.backups.full.throughputMBs),
    fullThroughputBerthToBorgLz4: ratio(b.backups.full.throughputMBs, borg.backups.full.throughputMBs),
    fullThroughputBerthEncryptedToRestic: ratio(be.backups.full.throughputMBs, restic.backups.full.throughputMBs),
    fullStoredBerthToRestic: ratio(b.backups.full.addedBytes, restic.backups.full.addedBytes),
    fullStoredBerthToBorgLz4: ratio(b.backups.full.addedBytes, borg.backups.full.addedBytes),
    incrementalAddedBerthToRestic: ratio(b.backups.incremental.addedBytes, restic.backups.incremental.addedBytes),
    incrementalAddedBerthToBorgLz4: ratio(b.backups.incremental.addedBytes, borg.backups.incremental.addedBytes),
    incrementalTimeBerthToRestic: ratio(b.backups.incremental.seconds, restic.backups.incremental.seconds),
    incrementalTimeBerthToBorgLz4: ratio(b.backups.incremental.seconds, borg.backups.incremental.seconds),
    unchangedTimeBerthToRestic: ratio(b.backups.unchanged.seconds, restic.backups.unchanged.seconds),
    unchangedTimeBerthToBorgLz4: ratio(b.backups.unchanged.seconds, borg.backups.unchanged.seconds),
    restoreThroughputBerthToRestic: ratio(b.restore.throughputMBs, restic.restore.throughputMBs),
    restoreThroughputBerthToBorgLz4: ratio(b.restore.throughputMBs, borg.restore.throughputMBs),
    restoreThroughputBerthEncryptedToRestic: ratio(be.restore.throughputMBs, restic.restore.throughputMBs),
  };
  const targets: Target[] = [
    { name: 'full backup throughput, Berth (zstd) / restic', target: '≥ 1', value: ratios.fullThroughputBerthToRestic!, unit: '×', met: ratios.fullThroughputBerthToRestic! >= 1 },
    {
      name: 'incremental after the page writes: bytes Berth adds',
      target: `≤ ${TARGET_INCREMENTAL_MIB} MiB`,
      value: round(b.backups.incremental.addedBytes / MiB, 2),
      unit: ' MiB',
      met: b.backups.incremental.addedBytes <= TARGET_INCREMENTAL_MIB * MiB,
    },
    { name: 'restore throughput, Berth (zstd) / restic', target: '≥ 1', value: ratios.restoreThroughputBerthToRestic!, unit: '×', met: ratios.restoreThroughputBerthToRestic! >= 1 },
    { name: 'every restore byte-identical to the source', target: 'all', value: figures.filter((tool) => tool.restore.identical).length, unit: ` of ${figures.length}`, met: figures.every((tool) => tool.restore.identical) },
    ...snapshots.map((snap) => ({
      name: `btrfs snapshot of a ${(snap.volumeBytes / GiB).toFixed(0)} GiB volume, median`,
      target: `< ${TARGET_SNAPSHOT_MS} ms`,
      value: snap.create.p50Ms,
      unit: ' ms',
      met: snap.create.p50Ms < TARGET_SNAPSHOT_MS,
    })),
  ];
  if (snapshots.length >= 2) {
    const small = snapshots[0]!;
    const large = snapshots[snapshots.length - 1]!;
    const growth = large.create.p50Ms - small.create.p50Ms;
    targets.push({
      name: `snapshot time flat in size: median at ${(large.volumeBytes / GiB).toFixed(0)} GiB minus median at ${(small.volumeBytes / GiB).toFixed(0)} GiB`,
      target: `≤ max(50% of the smaller, 10 ms)`,
      value: round(growth, 1),
      unit: ' ms',
      met: growth <= Math.max(0.5 * small.create.p50Ms, 10),
    });
  }
  return {
    benchmark: 'backup',
    date: started.toISOString(),
    durationSeconds: Math.round((Date.now() - started.getTime()) / 1000),
    source: { ...source, staleBuildFiles: build.staleFiles },
    machine: { ...machine, loadAverageAtStart: loadAtStart, loadAverageAtEnd: loadavg().map((v) => round(v, 2)) },
    parameters: {
      seed: options.seed,
      dbFileBytes: dbBytes,
      sqlFileBytes: sqlBytes,
      pageWrites: options.pages,
      pageBytes: PAGE_BYTES,
      appendBytes: options.appendMiB * MiB,
      poolBytes,
      cache,
      dropCachesWorked: dropWorks,
      rounds: options.rounds,
      snapshotRuns: options.snapshotRuns,
    },
    dataset: {
      logicalBytesFull: logicalFull,
      logicalBytesAfterWrites: logicalAfter,
      distinctPagesWritten: workload!.distinctPages,
      distinct1MiBRegions: workload!.distinct1MiB,
      distinct2MiBRegions: workload!.distinct2MiB,
      sha256: sourceHashes!,
    },
    tools: figures,
    rounds,
    snapshots,
    ratios,
    targets,
    allTargetsMet: targets.every((t) => t.met),
  };
}

/**
 * Per tool and step, the figures of the round with the median wall time (one coherent run, phases
 * included), with every round's wall time beside them.
 */
function medianFigures(perRound: readonly ToolFigures[]): ToolFigures {
  const first = perRound[0]!;
  const pick = <T extends StepFigures>(steps: readonly T[]): T & { secondsByRound: number[] } => {
    const sorted = [...steps].sort((a, b) => a.seconds - b.seconds);
    return { ...sorted[Math.floor((sorted.length - 1) / 2)]!, secondsByRound: steps.map((step) => step.seconds) };
  };
  return {
    id: first.id,
    label: first.label,
    settings: first.settings,
    backups: {
      full: pick(perRound.map((tool) => tool.backups.full)),
      incremental: pick(perRound.map((tool) => tool.backups.incremental)),
      unchanged: pick(perRound.map((tool) => tool.backups.unchanged)),
    },
    restore: { ...pick(perRound.map((tool) => tool.restore)), identical: perRound.every((tool) => tool.restore.identical), mismatches: perRound.flatMap((tool) => tool.restore.mismatches) },
  };
}

function stepFigures(run: ToolRun, logicalBytes: number, flushMs: number, load: number): Omit<BackupFigures, 'addedBytes' | 'addedAllocatedBytes' | 'repoBytesAfter'> {
  const { measured } = run;
  const seconds = measured.wallMs / 1000;
  const cpu = measured.userSeconds === null || measured.systemSeconds === null ? null : round(measured.userSeconds + measured.systemSeconds, 2);
  return {
    seconds: round(seconds, 3),
    throughputMBs: round(logicalBytes / 1e6 / seconds, 1),
    cpuSeconds: cpu,
    maxRssMiB: measured.maxRssKiB === null ? null : round(measured.maxRssKiB / 1024, 1),
    flushSeconds: round(flushMs / 1000, 3),
    loadAverage1: load,
    ...(run.berth ? { berth: berthDetail(run.berth) } : {}),
  };
}

function berthDetail(result: WorkerResult): BerthDetail {
  const manifest = result.manifest;
  return {
    inProcessMs: result.opMs,
    openMs: result.openMs,
    phases: result.phases,
    nodeMaxRssMiB: round(result.nodeMaxRssKiB / 1024, 1),
    nodeCpuSeconds: round(result.nodeCpuSeconds, 2),
    ...(manifest
      ? {
          kind: manifest.kind,
          storedBytes: manifest.stats.storedBytes,
          changedBytes: manifest.stats.changedBytes,
          objects: Object.fromEntries(Object.entries(manifest.objects).map(([name, object]) => [name, object?.bytes ?? 0])),
        }
      : {}),
    ...(result.chain ? { chain: result.chain } : {}),
  };
}

/** Median of `runs` BtrfsBackend.createSnapshot calls on a volume of `gib` GiB of random data, each snapshot deleted after. */
async function measureSnapshots(backend: BtrfsBackend, gib: number, options: Options): Promise<SnapshotFigures> {
  const volume = `snap-${gib}g`;
  const path = await backend.create(volume, {});
  try {
    log(`snapshot timings: writing ${gib} GiB of random data into volume ${volume}`);
    const write = await timed(() => writeRandomFile(join(path, 'data.bin'), gib * GiB, `snap-${options.seed}-${gib}`));
    await flush();
    const frag = await runCommand(['filefrag', join(path, 'data.bin')]);
    const extents = /(\d+) extents? found/.exec(frag.stdout)?.[1];
    // One uncounted snapshot first: the first commit after the writes may still have work to do.
    await backend.createSnapshot(volume, 'warmup');
    await backend.deleteSnapshot(volume, 'warmup');
    const create: number[] = [];
    const remove: number[] = [];
    for (let i = 0; i < options.snapshotRuns; i++) {
      create.push((await timed(() => backend.createSnapshot(volume, `s-${i}`))).ms);
      remove.push((await timed(() => backend.deleteSnapshot(volume, `s-${i}`))).ms);
    }
    const figures: SnapshotFigures = { volumeBytes: gib * GiB, extents: extents === undefined ? null : Number(extents), writeSeconds: round(write.ms / 1000, 1), create: summarize(create), delete: summarize(remove) };
    log(`snapshot of ${gib} GiB: median ${figures.create.p50Ms.toFixed(1)} ms (min ${figures.create.minMs.toFixed(1)}, max ${figures.create.maxMs.toFixed(1)}), delete median ${figures.delete.p50Ms.toFixed(1)} ms, ${figures.extents ?? '?'} extents`);
    return figures;
  } finally {
    await backend.remove(volume);
  }
}

async function describeDisk(path: string): Promise<string> {
  const df = await runCommand(['df', '--output=fstype,source', path]).catch(() => undefined);
  return df?.code === 0 ? (df.stdout.trim().split('\n')[1] ?? '').trim().replace(/\s+/, ' on ') : 'unknown';
}

async function describeMachine(disk: string): Promise<Omit<BenchResults['machine'], 'loadAverageAtStart' | 'loadAverageAtEnd'>> {
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: round(totalmem() / 1024 ** 3, 1),
    kernel: release(),
    node: process.version,
    restic: await firstLine(['restic', 'version']),
    borg: await firstLine(['borg', '--version']),
    zstd: (/v[\d.]+/.exec(await firstLine(['zstd', '--version'])) ?? ['?'])[0],
    btrfsProgs: await firstLine(['btrfs', '--version']),
    disk,
  };
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      seed: { type: 'string' },
      rounds: { type: 'string' },
      cache: { type: 'string' },
      'db-mib': { type: 'string' },
      'sql-mib': { type: 'string' },
      pages: { type: 'string' },
      'append-mib': { type: 'string' },
      'pool-gib': { type: 'string' },
      'snapshot-runs': { type: 'string' },
      'snapshot-gib': { type: 'string' },
      'work-dir': { type: 'string' },
      out: { type: 'string' },
      'cpu-prof': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    console.log(USAGE);
    process.exit(0);
  }
  const int = (name: string, raw: string | undefined, fallback: number, min: number, max: number): number => {
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) throw new Error(`--${name} must be an integer from ${min} to ${max}, got ${raw}`);
    return value;
  };
  const cache = values.cache ?? 'cold';
  if (cache !== 'cold' && cache !== 'warm') throw new Error(`--cache must be cold or warm, got ${cache}`);
  const snapshotGiB = (values['snapshot-gib'] ?? '1,10')
    .split(',')
    .filter((part) => part.trim() !== '')
    .map((part) => int('snapshot-gib', part.trim(), 1, 1, 64));
  const options: Options = {
    seed: int('seed', values.seed, 1, 0, 2 ** 32 - 1),
    rounds: int('rounds', values.rounds, 3, 1, 20),
    cache,
    dbMiB: int('db-mib', values['db-mib'], 1024, 1, 64 * 1024),
    sqlMiB: int('sql-mib', values['sql-mib'], 400, 1, 64 * 1024),
    pages: int('pages', values.pages, 256, 0, 1_000_000),
    appendMiB: int('append-mib', values['append-mib'], 10, 0, 64 * 1024),
    poolGiB: int('pool-gib', values['pool-gib'], 24, 4, 1024),
    snapshotRuns: int('snapshot-runs', values['snapshot-runs'], 10, 1, 1000),
    snapshotGiB,
    workParent: resolve(values['work-dir'] ?? tmpdir()),
    out: values.out === undefined ? join(repoRoot, 'bench', 'backup', 'results.json') : resolve(values.out),
    cpuProfileDir: values['cpu-prof'] === undefined ? undefined : resolve(values['cpu-prof']),
  };
  const needed = (options.dbMiB + options.appendMiB + options.sqlMiB) * MiB * 2 + Math.max(0, ...snapshotGiB) * GiB;
  if (needed > options.poolGiB * GiB * 0.9) throw new Error(`--pool-gib ${options.poolGiB} is too small for this data (needs about ${Math.ceil(needed / GiB / 0.9)} GiB)`);
  return options;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(1);
  },
);
