// Shape of results.json, and its rendering as the Markdown tables of results.md and the README.
import type { MachineBasics } from '../common/machine.js';
import { renderTargets, type SourceDescription, type Target } from '../common/report.js';
import type { Distribution } from '../common/stats.js';
import type { HandoffFigures, MoveSummary } from './handoff.js';
import type { LagFigures } from './lag.js';
import type { PageFigures } from './page-writes.js';
import type { ThroughputFigures } from './throughput.js';

export const MEASUREMENTS = ['lag', 'steady', 'pages', 'handoff', 'throughput'] as const;
export type MeasurementId = (typeof MEASUREMENTS)[number];


export interface BenchResults {
  readonly benchmark: 'replication';
  readonly date: string;
  readonly durationSeconds: number;
  /** A short smoke run (--quick): its figures are not comparable with a full run's. */
  readonly quick: boolean;
  readonly source: SourceDescription;
  readonly machine: MachineBasics & {
    readonly docker: { readonly client: string; readonly server: string };
    readonly btrfsProgs: string;
    readonly etcd: string;
    readonly postgres: string;
    readonly loadAverageAtStart: readonly number[];
    readonly loadAverageAtEnd: readonly number[];
  };
  readonly parameters: {
    readonly hosts: readonly string[];
    readonly measurements: readonly MeasurementId[];
    readonly poolSize: string;
    /** Hosts whose pool file was not in the host's folder on the machine's disk, with its folder. */
    readonly poolDirs?: Readonly<Record<string, string>>;
    readonly defaultReplicateEvery: string;
    readonly etcd: string;
    readonly agentArgs: readonly string[];
    readonly agentEntry: string;
  };
  readonly lag: LagFigures | null;
  /** The same sampling under pgbench at a fixed rate (-R), on the same database after the first run. */
  readonly steadyLag?: LagFigures | null;
  readonly pages: PageFigures | null;
  readonly handoff: HandoffFigures | null;
  readonly throughput: ThroughputFigures | null;
  /** Measurements that failed, with the first line of their error. */
  readonly failures: Readonly<Partial<Record<MeasurementId, string>>>;
  readonly targets: readonly Target[];
  /** True when every target was measured and met. */
  readonly allTargetsMet: boolean;
}

export const TARGET_LAG_P99_SECONDS = 2;
export const TARGET_SHIPPED_PER_CHANGED = 2;
export const TARGET_HANDOFF_EXTRA_MS = 3000;

export function buildTargets(r: Pick<BenchResults, 'lag' | 'steadyLag' | 'pages' | 'handoff'>): Target[] {
  const atMost = (name: string, value: number | null, goal: number, unit: string, shown = `≤ ${goal}${unit}`): Target => ({
    name,
    target: shown,
    value,
    unit,
    met: value === null ? null : value <= goal,
  });
  return [
    atMost(`replication lag p99, pgbench as fast as it goes (${loadOf(r.lag)}), default replicate-every`, r.lag?.lagSeconds?.p99 ?? null, TARGET_LAG_P99_SECONDS, ' s'),
    atMost(`replication lag p99, steady pgbench load (${loadOf(r.steadyLag ?? null)}), default replicate-every`, r.steadyLag?.lagSeconds?.p99 ?? null, TARGET_LAG_P99_SECONDS, ' s'),
    atMost('bytes shipped / bytes changed, 256 × 4 KiB page writes', r.pages?.ratio ?? null, TARGET_SHIPPED_PER_CHANGED, '×'),
    atMost('planned handoff − plain restart, medians', r.handoff === null ? null : Math.round(r.handoff.differenceMs) / 1000, TARGET_HANDOFF_EXTRA_MS / 1000, ' s'),
  ];
}

const loadOf = (lag: LagFigures | null): string =>
  lag === null ? 'not run' : `-c ${lag.settings.clients} -j ${lag.settings.threads}${lag.settings.rateTps === undefined ? '' : ` -R ${lag.settings.rateTps}`}`;
const int = (value: number): string => Math.round(value).toLocaleString('en-US');
const bytes = (value: number | null): string => (value === null ? '–' : `${int(value)} (${(value / 1024 / 1024).toFixed(2)} MiB)`);
const secs = (ms: number): string => (ms / 1000).toFixed(2);
const dist = (d: Distribution | null, format: (value: number) => string): string =>
  d === null ? '–' : `${format(d.p50)} / ${format(d.p95)} / ${format(d.p99)} / ${format(d.max)}`;

function describePoolPlaces(poolDirs: Readonly<Record<string, string>>): string {
  const elsewhere = Object.entries(poolDirs);
  if (elsewhere.length === 0) return 'both pools are loop files on the machine\'s one disk';
  return `pool files: ${elsewhere.map(([host, dir]) => `${host}'s in ${dir}`).join(', ')}, the others on the machine's disk`;
}

/** The figures tables (Markdown), as written to results.md and into the README. */
export function renderTable(r: BenchResults): string {
  const lines: string[] = [];
  const m = r.machine;
  lines.push(
    `Run of ${r.date.slice(0, 10)}${r.quick ? ' (**--quick smoke run**: short durations, not comparable)' : ''} on ${m.cpus} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB, kernel ${m.kernel}, ` +
      `Node ${m.node}, Docker ${m.docker.server}, ${m.postgres}, ${m.btrfsProgs}, ${m.etcd}; load average ${m.loadAverageAtStart.join(' ')} at start, ` +
      `${m.loadAverageAtEnd.join(' ')} at end; commit ${r.source.commit.slice(0, 7)}${r.source.uncommittedFiles.length > 0 ? ` + ${r.source.uncommittedFiles.length} uncommitted files` : ''}. ` +
      `Hosts ${r.parameters.hosts.join(', ')} (namespaced, one machine), hA owns, hB keeps the replica; default replicate-every ${r.parameters.defaultReplicateEvery}; ` +
      `${describePoolPlaces(r.parameters.poolDirs ?? {})}.`,
  );
  lines.push('');
  if (r.lag !== null) renderLag(lines, r.lag, '1.');
  if (r.steadyLag) renderLag(lines, r.steadyLag, '1b. Steady load:');
  if (r.pages !== null) renderPages(lines, r.pages);
  if (r.handoff !== null) renderHandoff(lines, r.handoff);
  if (r.throughput !== null) renderThroughput(lines, r.throughput);
  for (const [id, message] of Object.entries(r.failures)) lines.push(`**${id} failed:** ${message}`, '');
  lines.push(...renderTargets(r.targets));
  return `${lines.join('\n')}\n`;
}

function renderLag(lines: string[], lag: LagFigures, title: string): void {
  const s = lag.settings;
  const c = lag.cycles;
  lines.push(`| ${title} Lag of hB behind hA, pgbench ${loadOf(lag)} -T ${s.seconds} (scale ${s.scale}), sampled every ${s.sampleIntervalMs} ms | p50 / p95 / p99 / max | mean |`);
  lines.push('|---|---:|---:|');
  const of = (d: Distribution | null): string => `${d?.count ?? 0} of ${lag.samples.count} samples`;
  lines.push(`| **lag, seconds** (\`lagSeconds\`; ${of(lag.lagSeconds)}) | **${dist(lag.lagSeconds, (v) => v.toFixed(3))}** | ${lag.lagSeconds?.mean.toFixed(3) ?? '–'} |`);
  lines.push(`| lag, bytes (\`lagBytes\`; ${of(lag.lagBytes)}, null in the others) | ${dist(lag.lagBytes, int)} | ${lag.lagBytes === null ? '–' : int(lag.lagBytes.mean)} |`);
  lines.push(`| bytes per transfer (replica log) | ${dist(c.transferBytes, int)} | ${c.transferBytes === null ? '–' : int(c.transferBytes.mean)} |`);
  lines.push(`| snapshot taken → held by hB, ms | ${dist(c.takenToReceivedMs, int)} | ${c.takenToReceivedMs === null ? '–' : int(c.takenToReceivedMs.mean)} |`);
  lines.push(`| inspect request, ms | ${dist(lag.samples.inspectMs, (v) => v.toFixed(1))} | ${lag.samples.inspectMs.mean.toFixed(1)} |`);
  lines.push('');
  const states = Object.entries(lag.samples.states).map(([state, count]) => `${state} ${count}`).join(', ');
  lines.push(
    `${lag.samples.count} samples (mean interval ${lag.samples.meanIntervalMs} ms; ${states}; ${lag.samples.withoutLagSeconds} without lagSeconds, ${lag.samples.withoutLagBytes} without lagBytes, ${lag.samples.failed} failed). ` +
      `pgbench meanwhile: ${lag.pgbench.tps.toFixed(1)} TPS, ${int(lag.pgbench.transactions)} transactions. ` +
      `Snapshots taken by hA: ${c.snapshotsTaken}, received by hB: ${c.received} (${c.perMinute} per minute), ${c.wholeCopies} of them whole copies of the volume; ` +
      `failed replication steps on hA: ${c.ownerStepFailures}. ` +
      `Load average ${lag.loadAverage.start.join(' ')} before, ${lag.loadAverage.end.join(' ')} after.`,
  );
  lines.push('');
}

function renderPages(lines: string[], p: PageFigures): void {
  lines.push(`| 2. ${p.settings.pages} × 4 KiB pages overwritten in a ${p.settings.fileMiB} MiB file (replicate-every ${p.settings.replicateEvery}; shipped by the unmount) | bytes |`);
  lines.push('|---|---:|');
  lines.push(`| changed | ${bytes(p.changedBytes)} |`);
  lines.push(`| **shipped** (hB's \`lastTransferBytes\`) | **${bytes(p.shippedBytes)}** |`);
  lines.push(`| shipped, as hB's log reports it | ${bytes(p.loggedBytes)} |`);
  lines.push(`| changed, as hA counted it before the unmount (\`lagBytes\`) | ${bytes(p.countedBytes)} |`);
  lines.push(`| first transfer (the whole file), for scale | ${bytes(p.initialTransferBytes)} |`);
  lines.push(`| **shipped / changed** | **${p.ratio === null ? '–' : `${p.ratio.toFixed(3)}×`}** |`);
  lines.push('');
  const unclean = p.attempts.filter((a) => !a.clean);
  if (unclean.length > 0) lines.push(`Attempts repeated: ${unclean.map((a) => a.note ?? '').join('; ')}.`, '');
}

function renderHandoff(lines: string[], h: HandoffFigures): void {
  const s = h.settings;
  const row = (label: string, m: MoveSummary): string =>
    `| ${label} | ${m.count} | **${secs(m.medianMs)}** | ${secs(m.minMs)} – ${secs(m.maxMs)} | ${secs(m.medianStopMs)} | ${secs(m.medianStartMs)} | ${secs(m.medianReadyMs)} |`;
  lines.push(`| 3. \`docker stop\` → PostgreSQL accepting connections, s (${s.writeSeconds} s of pgbench before each) | runs | median | min – max | stop | start | ready after start |`);
  lines.push('|---|---:|---:|---:|---:|---:|---:|');
  lines.push(row('plain restart on hA (stop, start)', h.restart));
  lines.push(row('planned handoff hA ⇄ hB (stop, start on the other host)', h.handoff));
  lines.push(`| **handoff − restart** | | **${secs(h.differenceMs)}** (${h.ratio.toFixed(2)}×) | | | | |`);
  lines.push('');
  lines.push(`In order: ${h.samples.map((x) => `${x.kind} ${x.hosts} ${secs(x.totalMs)}`).join(', ')}.`);
  lines.push('');
}

function renderThroughput(lines: string[], t: ThroughputFigures): void {
  const s = t.settings;
  const runs = (variant: 'replicated' | 'local'): string => t.rounds.filter((r) => r.variant === variant).map((r) => r.tps.toFixed(1)).join(' / ');
  lines.push(`| 4. pgbench -c ${s.clients} -j ${s.threads} -T ${s.seconds} on hA (scale ${s.scale}), ${s.rounds} rounds, alternating | median TPS | rounds, TPS | median latency, ms |`);
  lines.push('|---|---:|---:|---:|');
  lines.push(`| replicas=2 (replica on hB) | **${t.medianTps.replicated.toFixed(1)}** | ${runs('replicated')} | ${t.medianLatencyMs.replicated} |`);
  lines.push(`| replicas=1 (no replication) | **${t.medianTps.local.toFixed(1)}** | ${runs('local')} | ${t.medianLatencyMs.local} |`);
  lines.push(`| **replicated / not replicated** | **${Number.isNaN(t.ratio) ? '–' : `${t.ratio.toFixed(3)}×`}** | | |`);
  lines.push('');
  const replicated = t.rounds.flatMap((r) => (r.replication === undefined ? [] : [r.replication]));
  if (replicated.length > 0) {
    const sum = (pick: (x: (typeof replicated)[number]) => number): number => replicated.reduce((total, x) => total + pick(x), 0);
    lines.push(
      `During the replicated runs hB received ${sum((x) => x.received)} snapshots (${t.cyclesPerMinute?.p50 ?? '–'} per minute, median of the rounds; ` +
        `${(sum((x) => x.receivedBytes) / 1024 / 1024).toFixed(1)} MiB in all), ${sum((x) => x.wholeCopies)} of them whole copies of the volume; ` +
        `failed replication steps on hA: ${sum((x) => x.ownerStepFailures)}.`,
      '',
    );
  }
}

export function renderMarkdown(r: BenchResults): string {
  return `# replication results\n\nWritten by \`npm run bench:replication\`; raw figures (every sample) in results.json.\n\n${renderTable(r)}`;
}
