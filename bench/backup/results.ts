// Shape of results.json, and its rendering as the Markdown of results.md and the README.
import type { Summary } from '../common/stats.js';
import type { SourceDescription } from '../common/report.js';
import type { BackupStep, ToolId } from './tools.js';

export interface BerthDetail {
  /** The BackupService / restore call alone, in the worker (what the agent spends). */
  readonly inProcessMs: number;
  /** Opening the state store and preparing the backend in the worker (the agent does it once). */
  readonly openMs: number;
  readonly phases: ReadonlyArray<{ readonly name: string; readonly ms: number }>;
  readonly nodeMaxRssMiB: number;
  readonly nodeCpuSeconds: number;
  /** Backups: from the manifest. */
  readonly kind?: string;
  readonly storedBytes?: number;
  readonly changedBytes?: number;
  readonly objects?: Readonly<Record<string, number>>;
  /** Restores: the backups applied, full first. */
  readonly chain?: readonly string[];
}

export interface StepFigures {
  /** Wall time of the whole command (process start to exit). */
  readonly seconds: number;
  /** Logical bytes of the volume / seconds, in MB/s (10^6). */
  readonly throughputMBs: number;
  /** CPU seconds (user + system) of the command and its children. */
  readonly cpuSeconds: number | null;
  readonly maxRssMiB: number | null;
  /** `sync` right after the command exited (dirty pages it left). */
  readonly flushSeconds: number;
  readonly loadAverage1: number;
  readonly berth?: BerthDetail;
  /** In the results: the wall time of every round (the figures are those of the median round). */
  readonly secondsByRound?: readonly number[];
}

export interface BackupFigures extends StepFigures {
  /** Repository bytes added by this step (sum of file sizes, like `du -sb`). */
  readonly addedBytes: number;
  /** The same in allocated blocks (like `du -s`). */
  readonly addedAllocatedBytes: number;
  readonly repoBytesAfter: number;
}

export interface RestoreFigures extends StepFigures {
  readonly restoredBytes: number;
  /** Both files' sha256 equal the source's, and no other file was restored. */
  readonly identical: boolean;
  readonly mismatches: readonly string[];
}

export interface ToolFigures {
  readonly id: ToolId;
  readonly label: string;
  readonly settings: string;
  readonly backups: Readonly<Record<BackupStep, BackupFigures>>;
  readonly restore: RestoreFigures;
}

export interface RoundFigures {
  /** The order the tools ran in, in every step of this round. */
  readonly order: readonly ToolId[];
  readonly tools: readonly ToolFigures[];
}

export interface SnapshotFigures {
  readonly volumeBytes: number;
  /** Extents of the volume's data file (filefrag), after it was written and synced. */
  readonly extents: number | null;
  readonly writeSeconds: number;
  readonly create: Summary;
  readonly delete: Summary;
}

export interface Target {
  readonly name: string;
  readonly target: string;
  readonly value: number;
  readonly unit: string;
  readonly met: boolean;
}

export interface BenchResults {
  readonly benchmark: 'backup';
  readonly date: string;
  readonly durationSeconds: number;
  /** The commit and uncommitted files at the start; workers ran from a copy of dist/ taken then, in which these sources were older than their compiled files. */
  readonly source: SourceDescription & { readonly staleBuildFiles: readonly string[] };
  readonly machine: {
    readonly cpus: number;
    readonly cpuModel: string;
    readonly memoryGiB: number;
    readonly kernel: string;
    readonly node: string;
    readonly restic: string;
    readonly borg: string;
    readonly zstd: string;
    readonly btrfsProgs: string;
    /** Filesystem of the repositories and of the pool file. */
    readonly disk: string;
    readonly loadAverageAtStart: readonly number[];
    readonly loadAverageAtEnd: readonly number[];
  };
  readonly parameters: {
    readonly seed: number;
    readonly dbFileBytes: number;
    readonly sqlFileBytes: number;
    readonly pageWrites: number;
    readonly pageBytes: number;
    readonly appendBytes: number;
    readonly poolBytes: number;
    /** 'cold': sync + drop_caches before every timed step; 'warm': the step's input read once before it. */
    readonly cache: 'cold' | 'warm';
    readonly dropCachesWorked: boolean;
    readonly rounds: number;
    readonly snapshotRuns: number;
  };
  readonly dataset: {
    readonly logicalBytesFull: number;
    readonly logicalBytesAfterWrites: number;
    readonly distinctPagesWritten: number;
    readonly distinct1MiBRegions: number;
    readonly distinct2MiBRegions: number;
    readonly sha256: Readonly<Record<string, string>>;
  };
  /** Per tool and step: the round with the median wall time. */
  readonly tools: readonly ToolFigures[];
  readonly rounds: readonly RoundFigures[];
  readonly snapshots: readonly SnapshotFigures[];
  readonly ratios: Readonly<Record<string, number>>;
  readonly targets: readonly Target[];
  readonly allTargetsMet: boolean;
}

const MiB = 1024 * 1024;
const s = (value: number): string => (value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2));
const mib = (bytes: number): string => {
  const value = bytes / MiB;
  if (Math.abs(value) < 0.01) return `${bytes} B`;
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
};
const opt = (value: number | null, render: (v: number) => string): string => (value === null ? '–' : render(value));
const x = (value: number): string => (Number.isFinite(value) ? `${value.toFixed(2)}×` : '–');

/** The figures (Markdown), as written to results.md and into the README. */
export function renderTable(r: BenchResults): string {
  const lines: string[] = [];
  const cache = r.parameters.cache === 'cold' ? 'page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every timed step' : 'warm page cache (input read once before every timed step)';
  lines.push(
    `Run of ${r.date.slice(0, 10)} on ${r.machine.cpus} CPUs (${r.machine.cpuModel}), ${r.machine.memoryGiB} GiB, kernel ${r.machine.kernel}, Node ${r.machine.node}; ` +
      `${r.machine.restic.replace(/ compiled.*/, '')}, ${r.machine.borg}, zstd ${r.machine.zstd}, ${r.machine.btrfsProgs}; repositories on ${r.machine.disk}, volumes on btrfs in a loop-mounted file there; ` +
      `${cache}; load average ${r.machine.loadAverageAtStart[0]} at start, ${r.machine.loadAverageAtEnd[0]} at end; ` +
      `commit ${r.source.commit.slice(0, 7)}${r.source.uncommittedFiles.length > 0 ? ` + uncommitted ${r.source.uncommittedFiles.join(', ')}` : ''}` +
      `${r.source.staleBuildFiles.length > 0 ? ` (**build older than ${r.source.staleBuildFiles.join(', ')}**)` : ''}.`,
  );
  lines.push('');
  lines.push(
    `Data: ${mib(r.parameters.dbFileBytes)} MiB random "database file" + ${mib(r.parameters.sqlFileBytes)} MiB generated SQL INSERT text (seed ${r.parameters.seed}) = ` +
      `${mib(r.dataset.logicalBytesFull)} MiB; then ${r.parameters.pageWrites} random ${r.parameters.pageBytes / 1024} KiB page writes ` +
      `(${r.dataset.distinctPagesWritten} distinct pages in ${r.dataset.distinct2MiBRegions} distinct 2 MiB regions) + ${mib(r.parameters.appendBytes)} MiB append = ${mib(r.dataset.logicalBytesAfterWrites)} MiB.`,
  );
  lines.push('');
  const tools = r.tools;
  const restic = tools.find((t) => t.id === 'restic');
  const borg = tools.find((t) => t.id === 'borg-lz4');
  const berth = tools.find((t) => t.id === 'berth');
  lines.push(`| step | ${tools.map((t) => t.label).join(' | ')} | Berth/restic | Berth/borg lz4 |`);
  lines.push(`|---|${tools.map(() => '---:').join('|')}|---:|---:|`);
  const row = (label: string, value: (t: ToolFigures) => number | null, render: (v: number) => string): void => {
    const cells = tools.map((t) => opt(value(t), render));
    const ratioTo = (other: ToolFigures | undefined): string => {
      if (!berth || !other) return '–';
      const a = value(berth);
      const b = value(other);
      return a === null || b === null || b === 0 ? '–' : x(a / b);
    };
    lines.push(`| ${label} | ${cells.join(' | ')} | ${ratioTo(restic)} | ${ratioTo(borg)} |`);
  };
  const rounds = (label: string, value: (t: ToolFigures) => readonly number[] | undefined): void => {
    lines.push(`| ${label} | ${tools.map((t) => (value(t) ?? []).map((v) => v.toFixed(1)).join(' / ')).join(' | ')} | | |`);
  };
  row('full backup: time (s)', (t) => t.backups.full.seconds, s);
  if (r.parameters.rounds > 1) rounds('full backup: time in each round (s)', (t) => t.backups.full.secondsByRound);
  row('full backup: time incl. `sync` after it (s)', (t) => t.backups.full.seconds + t.backups.full.flushSeconds, s);
  row('full backup: throughput (MB/s)', (t) => t.backups.full.throughputMBs, (v) => v.toFixed(0));
  row('full backup: repository size (MiB)', (t) => t.backups.full.addedBytes, mib);
  row('full backup: CPU (s)', (t) => t.backups.full.cpuSeconds, s);
  row('full backup: peak RSS (MiB)', (t) => t.backups.full.maxRssMiB, (v) => v.toFixed(0));
  row('incremental: added (MiB)', (t) => t.backups.incremental.addedBytes, mib);
  row('incremental: time (s)', (t) => t.backups.incremental.seconds, s);
  row('incremental: CPU (s)', (t) => t.backups.incremental.cpuSeconds, s);
  row('unchanged re-run: added (MiB)', (t) => t.backups.unchanged.addedBytes, mib);
  row('unchanged re-run: time (s)', (t) => t.backups.unchanged.seconds, s);
  row('restore of the latest: time (s)', (t) => t.restore.seconds, s);
  if (r.parameters.rounds > 1) rounds('restore: time in each round (s)', (t) => t.restore.secondsByRound);
  row('restore: time incl. `sync` after it (s)', (t) => t.restore.seconds + t.restore.flushSeconds, s);
  row('restore: throughput (MB/s)', (t) => t.restore.throughputMBs, (v) => v.toFixed(0));
  row('restore: CPU (s)', (t) => t.restore.cpuSeconds, s);
  row('restore: peak RSS (MiB)', (t) => t.restore.maxRssMiB, (v) => v.toFixed(0));
  lines.push(`| restore byte-identical (sha256) | ${tools.map((t) => (t.restore.identical ? 'yes' : '**no**')).join(' | ')} | | |`);
  lines.push('');
  lines.push(
    `Each figure is from the round with the median wall time of ${r.parameters.rounds} (fresh repositories, volume reset to the same content, tools taking turns going first). ` +
    'Times are wall times of the whole command (process start to exit; Berth: a node process running the ' +
      'BackupService, as `berth-worker.js`), without the `sync` after it. CPU and peak RSS from GNU time (the command and its children, e.g. zstd). ' +
      'Added = repository bytes after minus before (file sizes, like `du -sb`).',
  );
  lines.push('');
  lines.push('| Berth, in-process | step | in-process (s) | phases (s) | stored by the manifest (MiB) | node peak RSS (MiB) |');
  lines.push('|---|---|---:|---|---:|---:|');
  for (const tool of tools) {
    const steps: Array<[string, StepFigures & { berth?: BerthDetail }]> = [
      ['full', tool.backups.full],
      ['incremental', tool.backups.incremental],
      ['unchanged', tool.backups.unchanged],
      ['restore', tool.restore],
    ];
    for (const [step, figures] of steps) {
      const detail = figures.berth;
      if (!detail) continue;
      const phases = detail.phases.map((phase) => `${phase.name} ${(phase.ms / 1000).toFixed(2)}`).join(', ');
      const stored = detail.storedBytes === undefined ? `chain of ${detail.chain?.length ?? '?'}` : mib(detail.storedBytes);
      lines.push(`| ${tool.label} | ${step} | ${(detail.inProcessMs / 1000).toFixed(2)} | ${phases} | ${stored} | ${detail.nodeMaxRssMiB.toFixed(0)} |`);
    }
  }
  lines.push('');
  lines.push(`| btrfs snapshot (BtrfsBackend.createSnapshot, ${r.parameters.snapshotRuns} runs) | filefrag extents | create p50 (ms) | create min / max (ms) | delete p50 (ms) |`);
  lines.push('|---|---:|---:|---:|---:|');
  for (const snap of r.snapshots) {
    lines.push(
      `| ${(snap.volumeBytes / 1024 ** 3).toFixed(0)} GiB volume of random data | ${snap.extents ?? '–'} | ${snap.create.p50Ms.toFixed(1)} | ${snap.create.minMs.toFixed(1)} / ${snap.create.maxMs.toFixed(1)} | ${snap.delete.p50Ms.toFixed(1)} |`,
    );
  }
  lines.push('');
  lines.push('| Target | goal | measured | met |');
  lines.push('|---|---|---:|:---:|');
  for (const t of r.targets) lines.push(`| ${t.name} | ${t.target} | ${t.value}${t.unit} | ${t.met ? 'yes' : '**no**'} |`);
  return `${lines.join('\n')}\n`;
}

export function renderMarkdown(r: BenchResults): string {
  return `# backup results\n\nWritten by \`npm run bench:backup\`; raw figures in results.json, method in README.md.\n\n${renderTable(r)}`;
}
