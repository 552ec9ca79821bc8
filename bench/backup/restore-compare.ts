// A focused restore comparison for iterating on restore speed: the main benchmark's data at a
// smaller size (default 320 MiB random + 96 MiB SQL), backed up once per tool (full, page writes,
// incremental, unchanged re-run), then only the restore of the latest backup, repeated for
// --rounds with the tools taking turns going first and the page cache dropped before each. Prints
// every round and the median per tool, Berth's ratios to the others and Berth's in-process phases.
// Takes a few minutes; writes nothing to the repository.
//
//   node dist/bench/backup/restore-compare.js [--rounds 5] [--tools berth,restic] [--db-mib 320]
//
// --berth-worker LABEL=PATH adds another build of Berth (its dist/bench/backup/berth-worker.js),
// backing up into a repository of its own, e.g. the parent commit's build to compare with.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { generateBackupKey } from '../../volume-driver/backups/codec/encryption.js';
import { BtrfsBackend } from '../../volume-driver/storage/btrfs-backend.js';
import { log, runBenchmark } from '../common/main.js';
import { integerOption, optionsOrUsage, parseBenchArgs } from '../common/options.js';
import { median, round } from '../common/stats.js';
import { applyPageWrites, DB_FILE, GiB, MiB, sha256File, SQL_FILE, writeRandomFile, writeSqlFile } from './dataset.js';
import { compareRestored, dropCaches, flush } from './measure.js';
import { inOwnMountNamespace, needsOwnMountNamespace } from './mount-namespace.js';
import { createPool, releaseMountsAndLoops } from './pool.js';
import { BerthTool, BorgTool, ResticTool, WORKER_SCRIPT, type Tool, type ToolContext } from './tools.js';

const USAGE = `usage: node dist/bench/backup/restore-compare.js [options]   (as root)
  --rounds N                 restores per tool (default 5)
  --tools LIST               of berth, berth-enc, restic, borg-lz4 (default berth,restic)
  --berth-worker LABEL=PATH  another Berth build's berth-worker.js, compared too (repeatable)
  --db-mib N --sql-mib N     data sizes (default 320 and 96)
  --pages N --append-mib N   workload before the incremental (default 256 and 4)
  --seed N                   (default 1)
  --work-dir DIR             where the temporary directory goes (default the OS temp dir)`;

const VOLUME = 'db';

interface Sample {
  seconds: number;
  cpu: number | null;
  phases: string;
}

async function main(): Promise<number> {
  if (needsOwnMountNamespace()) return inOwnMountNamespace();
  const options = optionsOrUsage(parseOptions, USAGE);
  if (options === undefined) return 2;
  if (process.getuid?.() !== 0) {
    console.error('run as root: the benchmark mounts a btrfs pool and drops the page cache');
    return 2;
  }
  const { rounds, dbMiB, sqlMiB, pages, appendMiB, seed, wanted } = options;
  const work = await mkdtemp(join(options.workParent, 'berth-restore-compare-'));
  try {
    if (!(await dropCaches())) log('warning: cannot drop the page cache; restores read warm');
    const pool = await createPool(work, Math.max(4, Math.ceil(((dbMiB + sqlMiB + appendMiB) * MiB * (rounds + 4)) / GiB)) * GiB);
    const berthRoot = join(pool.mountpoint, 'berth');
    const restoreDir = join(pool.mountpoint, 'restores');
    for (const dir of [berthRoot, restoreDir, join(work, 'repos'), join(work, 'keys')]) await mkdir(dir);
    const backend = new BtrfsBackend({ root: berthRoot });
    const sourcePath = backend.layout.snapshotPath(VOLUME, 'tools-src');
    const context: ToolContext = { work, berthRoot, berthState: join(work, 'berth.db'), volume: VOLUME, sourcePath, restoreDir, workerScript: WORKER_SCRIPT };
    const keyPath = join(work, 'keys', 'backup.key');
    await generateBackupKey(keyPath);
    const repo = (name: string): string => join(work, 'repos', name);
    const tools: Tool[] = [];
    if (wanted.includes('berth')) tools.push(new BerthTool('berth', 'Berth zstd', repo('berth'), context));
    for (const spec of options.berthWorkers) {
      const [label = '', path = ''] = spec.split('=');
      tools.push(new BerthTool('berth', `Berth ${label}`, repo(`berth-${label}`), { ...context, workerScript: resolve(path) }));
    }
    if (wanted.includes('berth-enc')) tools.push(new BerthTool('berth-enc', 'Berth zstd+AES', repo('berth-enc'), context, keyPath));
    if (wanted.includes('restic')) tools.push(new ResticTool(repo('restic'), context));
    if (wanted.includes('borg-lz4')) tools.push(new BorgTool('borg-lz4', repo('borg-lz4'), 'lz4', context));
    for (const tool of tools) await tool.init();

    const setup = new BerthTool('berth', 'setup', repo('unused'), context);
    const volumePath = (await setup.worker({ op: 'create-volume', volume: VOLUME })).berth.path ?? backend.path(VOLUME);
    log(`writing ${dbMiB} MiB random + ${sqlMiB} MiB SQL`);
    await writeRandomFile(join(volumePath, DB_FILE), dbMiB * MiB, `db-${seed}`);
    await writeSqlFile(join(volumePath, SQL_FILE), sqlMiB * MiB, seed);
    const backups = async (step: 'full' | 'incremental' | 'unchanged'): Promise<void> => {
      await flush();
      await backend.deleteSnapshot(VOLUME, 'tools-src');
      await backend.createSnapshot(VOLUME, 'tools-src');
      for (const tool of tools) {
        const run = await tool.backup(step);
        const stored = run.berth?.manifest ? `, stored ${(run.berth.manifest.stats.storedBytes / MiB).toFixed(2)} MiB` : '';
        log(`${step.padEnd(11)} ${tool.label.padEnd(16)} ${(run.measured.wallMs / 1000).toFixed(2)} s${stored}`);
      }
    };
    await backups('full');
    const applied = await applyPageWrites(join(volumePath, DB_FILE), { pages, pageBytes: 4096, appendBytes: appendMiB * MiB, seed });
    await backups('incremental');
    await backups('unchanged');
    await backend.deleteSnapshot(VOLUME, 'tools-src');
    const expected = { [DB_FILE]: await sha256File(join(volumePath, DB_FILE)), [SQL_FILE]: await sha256File(join(volumePath, SQL_FILE)) };
    const logical = applied.sizeAfter + sqlMiB * MiB;

    const samples = new Map<string, Sample[]>(tools.map((tool) => [tool.label, []]));
    for (let round_ = 0; round_ < rounds; round_++) {
      const order = tools.map((_, i) => tools[(i + round_) % tools.length]!);
      for (const tool of order) {
        await dropCaches();
        const run = await tool.restore(`${tool.label.replace(/[^a-z0-9]+/gi, '-')}-${round_}`);
        await flush();
        const check = await compareRestored(run.restoredRoot, expected);
        if (check.mismatches.length > 0) throw new Error(`${tool.label} restored something else: ${check.mismatches.join('; ')}`);
        await run.cleanup();
        const m = run.measured;
        const sample: Sample = {
          seconds: m.wallMs / 1000,
          cpu: m.userSeconds === null || m.systemSeconds === null ? null : round(m.userSeconds + m.systemSeconds, 2),
          phases: run.berth ? `in-process ${(run.berth.opMs / 1000).toFixed(2)} s: ${run.berth.phases.map((phase) => `${phase.name} ${(phase.ms / 1000).toFixed(2)}`).join(', ')}; node CPU ${run.berth.nodeCpuSeconds.toFixed(2)} s` : '',
        };
        samples.get(tool.label)!.push(sample);
        log(`restore ${round_ + 1} ${tool.label.padEnd(16)} ${sample.seconds.toFixed(2)} s  ${(logical / 1e6 / sample.seconds).toFixed(0)} MB/s  CPU ${sample.cpu ?? '?'} s  ${sample.phases}`);
      }
    }
    console.log(`\nrestore of ${(logical / MiB).toFixed(0)} MiB, median of ${rounds} (cold cache each):`);
    const medians = new Map<string, number>();
    for (const [label, list] of samples) {
      const seconds = median(list.map((sample) => sample.seconds));
      medians.set(label, seconds);
      const cpu = list.every((sample) => sample.cpu !== null) ? median(list.map((sample) => sample.cpu!)) : null;
      console.log(`  ${label.padEnd(16)} ${seconds.toFixed(2)} s  ${(logical / 1e6 / seconds).toFixed(0)} MB/s  CPU ${cpu ?? '?'} s  (${list.map((sample) => sample.seconds.toFixed(2)).join(' / ')})`);
    }
    for (const [label, seconds] of medians) {
      if (!label.startsWith('Berth')) continue;
      const others = [...medians].filter(([other]) => !other.startsWith('Berth')).map(([other, theirs]) => `${other} ${round(theirs / seconds, 2)}x`);
      if (others.length > 0) console.log(`  ${label} throughput relative to: ${others.join(', ')}`);
    }
    return 0;
  } finally {
    await releaseMountsAndLoops(work);
    await rm(work, { recursive: true, force: true });
  }
}

function parseOptions(argv: string[]) {
  const { values, lists } = parseBenchArgs(argv, USAGE, ['rounds', 'tools', 'db-mib', 'sql-mib', 'pages', 'append-mib', 'seed', 'work-dir'], ['berth-worker']);
  return {
    rounds: integerOption('rounds', values.rounds, 5, 1, 50),
    dbMiB: integerOption('db-mib', values['db-mib'], 320, 1, 64 * 1024),
    sqlMiB: integerOption('sql-mib', values['sql-mib'], 96, 1, 64 * 1024),
    pages: integerOption('pages', values.pages, 256, 0, 1_000_000),
    appendMiB: integerOption('append-mib', values['append-mib'], 4, 0, 64 * 1024),
    seed: integerOption('seed', values.seed, 1, 0, 2 ** 32 - 1),
    wanted: (values.tools ?? 'berth,restic').split(',').map((name) => name.trim()),
    berthWorkers: lists['berth-worker'] ?? [],
    workParent: resolve(values['work-dir'] ?? tmpdir()),
  };
}

runBenchmark(main);
