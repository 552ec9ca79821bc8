// Shape of results.json, and its rendering as the Markdown table of results.md and the README.
import type { Summary } from '../common/stats.js';

export type DriverName = 'berth' | 'local';

export interface StepSummaries {
  readonly create: Summary;
  readonly run: Summary;
  readonly rm: Summary;
}

export interface DriverLifecycle {
  readonly cycles: number;
  /** create + run + rm of one cycle. */
  readonly perCycle: Summary;
  readonly steps: StepSummaries;
}

export interface Target {
  readonly name: string;
  readonly target: string;
  readonly value: number;
  readonly unit: string;
  readonly met: boolean;
}

export interface BenchResults {
  readonly benchmark: 'volume-lifecycle';
  readonly date: string;
  readonly durationSeconds: number;
  /** What was measured: the commit, and tracked files outside bench/ changed from it when the agent was built. */
  readonly source: { readonly commit: string; readonly uncommittedFiles: readonly string[] };
  readonly machine: {
    readonly cpus: number;
    readonly cpuModel: string;
    readonly memoryGiB: number;
    readonly kernel: string;
    readonly node: string;
    readonly docker: { readonly client: string; readonly server: string };
    /** Filesystem holding the agent's data root and state file (fsync cost depends on it). */
    readonly storage: string;
    readonly loadAverageAtStart: readonly number[];
    readonly loadAverageAtEnd: readonly number[];
  };
  readonly parameters: {
    readonly cycles: number;
    readonly warmupCycles: number;
    readonly blockSize: number;
    readonly blockOrder: string;
    readonly volumes: number;
    readonly bulkCreate: string;
    readonly getAndPathCalls: number;
    readonly listCalls: number;
    readonly lsRuns: number;
    readonly seed: number;
    readonly image: string;
    readonly agentArgs: readonly string[];
    readonly agentEntry: string;
    /** `Status.backend` of a Berth volume (dir or btrfs, chosen by the agent for the data root). */
    readonly berthBackend: string;
  };
  readonly lifecycle: {
    readonly berth: DriverLifecycle;
    readonly local: DriverLifecycle;
    /** berth / local of the mean (and percentiles) per cycle and of each step's mean. */
    readonly ratio: {
      readonly meanPerCycle: number;
      readonly p50PerCycle: number;
      readonly p99PerCycle: number;
      readonly create: number;
      readonly run: number;
      readonly rm: number;
    };
  };
  readonly plugin: {
    readonly volumes: number;
    readonly bulkCreateMs: number;
    readonly get: Summary;
    readonly path: Summary;
    readonly list: Summary;
  };
  readonly volumeLs: {
    /** `docker volume ls` with only the 1,000 Berth volumes present. */
    readonly berthOnly: Summary;
    /** `docker volume ls` with only the 1,000 local volumes present. */
    readonly localOnly: Summary;
    readonly ratioOfMedians: number;
    /** Both sets present, `--filter driver=X`, runs alternating between the drivers. */
    readonly filteredInterleaved: { readonly berth: Summary; readonly local: Summary; readonly ratioOfMedians: number };
  };
  readonly memory: {
    readonly agentRssMiBIdle: number;
    readonly agentRssMiBWithVolumes: number;
    readonly agentRssMiBAfterLookups: number;
    readonly agentPeakRssMiB: number;
  };
  readonly targets: readonly Target[];
  readonly allTargetsMet: boolean;
}

const ms = (value: number): string => (value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2));
const x = (value: number): string => `${value.toFixed(2)}×`;

/** The figures table (Markdown), as written to results.md and into the README. */
export function renderTable(r: BenchResults): string {
  const b = r.lifecycle.berth;
  const l = r.lifecycle.local;
  const lines: string[] = [];
  lines.push(
    `Run of ${r.date.slice(0, 10)} on ${r.machine.cpus} CPUs (${r.machine.cpuModel}), ${r.machine.memoryGiB} GiB, ` +
      `kernel ${r.machine.kernel}, Node ${r.machine.node}, Docker ${r.machine.docker.server}, storage ${r.machine.storage}; ` +
      `${r.parameters.cycles} cycles per driver, ${r.parameters.volumes} volumes, Berth backend ${r.parameters.berthBackend}, ` +
      `commit ${r.source.commit.slice(0, 7)}${r.source.uncommittedFiles.length > 0 ? ` + ${r.source.uncommittedFiles.length} uncommitted files` : ''}. Times in ms.`,
  );
  lines.push('');
  lines.push('| Volume lifecycle (docker CLI) | berth | local | berth/local |');
  lines.push('|---|---:|---:|---:|');
  lines.push(`| total for ${b.cycles} cycles | ${ms(b.perCycle.totalMs)} | ${ms(l.perCycle.totalMs)} | ${x(r.lifecycle.ratio.meanPerCycle)} |`);
  lines.push(`| mean per cycle | ${ms(b.perCycle.meanMs)} | ${ms(l.perCycle.meanMs)} | ${x(r.lifecycle.ratio.meanPerCycle)} |`);
  lines.push(`| p50 per cycle | ${ms(b.perCycle.p50Ms)} | ${ms(l.perCycle.p50Ms)} | ${x(r.lifecycle.ratio.p50PerCycle)} |`);
  lines.push(`| p99 per cycle | ${ms(b.perCycle.p99Ms)} | ${ms(l.perCycle.p99Ms)} | ${x(r.lifecycle.ratio.p99PerCycle)} |`);
  for (const step of ['create', 'run', 'rm'] as const) {
    const label = step === 'create' ? '`volume create`' : step === 'run' ? '`run --rm -v … true`' : '`volume rm`';
    lines.push(
      `| ${label} mean (p50 / p99) | ${ms(b.steps[step].meanMs)} (${ms(b.steps[step].p50Ms)} / ${ms(b.steps[step].p99Ms)}) | ` +
        `${ms(l.steps[step].meanMs)} (${ms(l.steps[step].p50Ms)} / ${ms(l.steps[step].p99Ms)}) | ${x(r.lifecycle.ratio[step])} |`,
    );
  }
  lines.push('');
  lines.push(`| Plugin socket, ${r.plugin.volumes} Berth volumes, sequential | calls | p50 | p99 | max | mean |`);
  lines.push('|---|---:|---:|---:|---:|---:|');
  for (const method of ['get', 'path', 'list'] as const) {
    const s = r.plugin[method];
    const name = `VolumeDriver.${method[0]?.toUpperCase()}${method.slice(1)}`;
    lines.push(`| ${name} | ${s.count} | ${s.p50Ms.toFixed(3)} | ${s.p99Ms.toFixed(3)} | ${s.maxMs.toFixed(3)} | ${s.meanMs.toFixed(3)} |`);
  }
  lines.push('');
  lines.push(`| \`docker volume ls\`, ${r.plugin.volumes} volumes | berth | local | berth/local |`);
  lines.push('|---|---:|---:|---:|');
  lines.push(
    `| only that driver's volumes present, median of ${r.volumeLs.berthOnly.count} | ${ms(r.volumeLs.berthOnly.p50Ms)} | ` +
      `${ms(r.volumeLs.localOnly.p50Ms)} | ${x(r.volumeLs.ratioOfMedians)} |`,
  );
  const f = r.volumeLs.filteredInterleaved;
  lines.push(`| both present, \`--filter driver=…\`, interleaved, median | ${ms(f.berth.p50Ms)} | ${ms(f.local.p50Ms)} | ${x(f.ratioOfMedians)} |`);
  lines.push('');
  lines.push(
    `Agent RSS: ${r.memory.agentRssMiBIdle} MiB idle, ${r.memory.agentRssMiBWithVolumes} MiB with ${r.plugin.volumes} volumes, ` +
      `${r.memory.agentRssMiBAfterLookups} MiB after the lookups (peak ${r.memory.agentPeakRssMiB} MiB). ` +
      `Bulk creation of ${r.plugin.volumes} volumes on the plugin socket: ${(r.plugin.bulkCreateMs / 1000).toFixed(1)} s.`,
  );
  lines.push('');
  lines.push('| Target | goal | measured | met |');
  lines.push('|---|---|---:|:---:|');
  for (const t of r.targets) lines.push(`| ${t.name} | ${t.target} | ${t.value}${t.unit} | ${t.met ? 'yes' : '**no**'} |`);
  return `${lines.join('\n')}\n`;
}

export function renderMarkdown(r: BenchResults): string {
  return `# volume-lifecycle results\n\nWritten by \`npm run bench:volume-lifecycle\`; raw figures in results.json.\n\n${renderTable(r)}`;
}
