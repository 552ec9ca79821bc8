// Shape of results.json, and its rendering as the Markdown table of results.md and the README.
import type { MachineBasics } from '../common/machine.js';
import { renderTargets, type Target } from '../common/report.js';
import type { Summary } from '../common/stats.js';
import type { ThroughputRound } from './measure.js';
import { PATH_IDS, type OverlayId, type PathId } from './paths.js';

export const PATH_TITLES: Readonly<Record<PathId, string>> = {
  berth: 'Berth overlay',
  swarm: 'swarm overlay',
  underlay: 'underlay',
};

export type { Target } from '../common/report.js';

export interface PathFigures {
  /** Where iperf3's client and ping ran (hA side) and the server they reached (hB side). */
  readonly client: string;
  readonly server: string;
  readonly serverAddress: string;
  readonly mtu: number;
  readonly throughput: {
    /** In the order measured. */
    readonly rounds: readonly ThroughputRound[];
    readonly medianGbitPerSecond: number;
    readonly minGbitPerSecond: number;
    readonly maxGbitPerSecond: number;
    readonly retransmits: number;
    readonly medianSenderCpuPercent: number;
    readonly medianReceiverCpuPercent: number;
  };
  readonly latency: {
    readonly sent: number;
    readonly received: number;
    /** Per-packet round-trip times, ms (meanMs is the average). */
    readonly rtt: Summary;
  };
}

export interface ConvergenceFigures {
  readonly containers: number;
  readonly converged: number;
  /** Containers that no ping reached within the deadline (left out of the summaries). */
  readonly timedOut: number;
  /** From the start of `docker run -d` on hB to the first echo reply received on hA. */
  readonly total: Summary | null;
  /** The `docker run -d` command alone. */
  readonly dockerRun: Summary | null;
  /** From `docker run -d` returning to the first echo reply (includes the `docker inspect` for the address). */
  readonly afterRun: Summary | null;
}

export interface BenchResults {
  readonly benchmark: 'network';
  readonly date: string;
  readonly durationSeconds: number;
  readonly source: { readonly commit: string; readonly uncommittedFiles: readonly string[] };
  readonly machine: MachineBasics & {
    readonly docker: { readonly client: string; readonly server: string };
    readonly iperf3: string;
    readonly ping: string;
    readonly loadAverageAtStart: readonly number[];
    readonly loadAverageAtEnd: readonly number[];
  };
  readonly parameters: {
    readonly paths: readonly PathId[];
    readonly throughputRounds: number;
    readonly secondsPerRound: number;
    readonly streams: 1;
    readonly order: string;
    readonly pings: number;
    readonly pingBlocks: number;
    readonly pingIntervalMs: number;
    readonly convergenceContainers: number;
    readonly convergenceTimeoutSeconds: number;
    readonly convergencePingIntervalMs: number;
    readonly berthSubnet: string;
    readonly swarmSubnet: string;
    readonly swarmDataPathPort: number;
    readonly etcd: string;
    readonly image: string;
    readonly agentArgs: readonly string[];
    readonly agentEntry: string;
  };
  readonly paths: Readonly<Partial<Record<PathId, PathFigures>>>;
  readonly convergence: Readonly<Partial<Record<OverlayId, ConvergenceFigures>>>;
  /**
   * The engine's own floor, measured between the convergence samples: `docker run -d` on hB into a
   * user-defined network of Docker's built-in bridge driver (no overlay, no plugin). Null when not measured.
   */
  readonly localBridgeDockerRun?: Summary | null;
  /** Each null when one of its two paths was not measured. */
  readonly ratios: {
    readonly throughputBerthToSwarm: number | null;
    readonly throughputBerthToUnderlay: number | null;
    readonly throughputSwarmToUnderlay: number | null;
    readonly rttAvgBerthToSwarm: number | null;
    readonly rttP50BerthToSwarm: number | null;
    readonly rttP99BerthToSwarm: number | null;
  };
  readonly targets: readonly Target[];
  /** True when every target was measured and met. */
  readonly allTargetsMet: boolean;
}

const ms = (value: number): string => (value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(3));
const x = (value: number | null): string => (value === null || Number.isNaN(value) ? '–' : `${value.toFixed(2)}×`);

/** The figures tables (Markdown), as written to results.md and into the README. */
export function renderTable(r: BenchResults): string {
  const p = r.parameters;
  const measured = PATH_IDS.filter((id) => r.paths[id] !== undefined);
  const cell = (id: PathId, value: (f: PathFigures) => string): string => {
    const figures = r.paths[id];
    return figures === undefined ? 'not measured' : value(figures);
  };
  const row = (label: string, value: (f: PathFigures) => string): string => `| ${label} | ${PATH_IDS.map((id) => cell(id, value)).join(' | ')} |`;
  const head = `| ${PATH_IDS.map((id) => PATH_TITLES[id]).join(' | ')} |`;
  const lines: string[] = [];
  lines.push(
    `Run of ${r.date.slice(0, 10)} on ${r.machine.cpus} CPUs (${r.machine.cpuModel}), ${r.machine.memoryGiB} GiB, kernel ${r.machine.kernel}, ` +
      `Node ${r.machine.node}, Docker ${r.machine.docker.server}, ${r.machine.iperf3}, ${r.machine.ping}; load average ` +
      `${r.machine.loadAverageAtStart.join(' ')} at start, ${r.machine.loadAverageAtEnd.join(' ')} at end; paths measured: ${measured.join(', ')}; ` +
      `commit ${r.source.commit.slice(0, 7)}${r.source.uncommittedFiles.length > 0 ? ` + ${r.source.uncommittedFiles.length} uncommitted files` : ''}. ` +
      `Two simulated hosts hA → hB on one machine.`,
  );
  lines.push('');
  lines.push(`| TCP, iperf3, 1 stream, ${p.throughputRounds} × ${p.secondsPerRound} s, hA → hB ${head}`);
  lines.push(`|---|${PATH_IDS.map(() => '---:').join('|')}|`);
  lines.push(row('**median Gbit/s**', (f) => `**${f.throughput.medianGbitPerSecond.toFixed(2)}**`));
  lines.push(row('rounds, Gbit/s', (f) => f.throughput.rounds.map((round) => round.gbitPerSecond.toFixed(2)).join(' / ')));
  lines.push(row('retransmits (all rounds)', (f) => String(f.throughput.retransmits)));
  lines.push(row('CPU % sender / receiver (median)', (f) => `${f.throughput.medianSenderCpuPercent} / ${f.throughput.medianReceiverCpuPercent}`));
  lines.push(row('MTU', (f) => String(f.mtu)));
  lines.push('');
  lines.push(`| ping RTT, ${p.pings} × ${p.pingIntervalMs} ms, ms ${head}`);
  lines.push(`|---|${PATH_IDS.map(() => '---:').join('|')}|`);
  lines.push(row('avg', (f) => ms(f.latency.rtt.meanMs)));
  lines.push(row('p50', (f) => ms(f.latency.rtt.p50Ms)));
  lines.push(row('p99', (f) => ms(f.latency.rtt.p99Ms)));
  lines.push(row('lost', (f) => `${f.latency.sent - f.latency.received} of ${f.latency.sent}`));
  lines.push('');
  lines.push('| Ratios | value |');
  lines.push('|---|---:|');
  lines.push(`| throughput Berth / swarm | ${x(r.ratios.throughputBerthToSwarm)} |`);
  lines.push(`| throughput Berth / underlay | ${x(r.ratios.throughputBerthToUnderlay)} |`);
  lines.push(`| throughput swarm / underlay | ${x(r.ratios.throughputSwarmToUnderlay)} |`);
  lines.push(`| RTT Berth / swarm, avg · p50 · p99 | ${x(r.ratios.rttAvgBerthToSwarm)} · ${x(r.ratios.rttP50BerthToSwarm)} · ${x(r.ratios.rttP99BerthToSwarm)} |`);
  lines.push('');
  const overlays = (['berth', 'swarm'] as const).filter((id) => r.convergence[id] !== undefined);
  if (overlays.length > 0) {
    const conv = (id: OverlayId, value: (c: ConvergenceFigures) => string): string => {
      const figures = r.convergence[id];
      return figures === undefined ? 'not measured' : value(figures);
    };
    const summary = (pick: (c: ConvergenceFigures) => Summary | null) => (c: ConvergenceFigures): string => {
      const s = pick(c);
      return s === null ? '–' : `${ms(s.p50Ms)} / ${ms(s.p99Ms)} / ${ms(s.maxMs)}`;
    };
    lines.push(`| Convergence, ms: \`docker run -d\` on hB → first ping reply on hA, p50 / p99 / max | ${PATH_TITLES.berth} | ${PATH_TITLES.swarm} |`);
    lines.push('|---|---:|---:|');
    const convRow = (label: string, value: (c: ConvergenceFigures) => string): string => `| ${label} | ${conv('berth', value)} | ${conv('swarm', value)} |`;
    lines.push(convRow('**total**', summary((c) => c.total)));
    lines.push(convRow('`docker run -d` alone', summary((c) => c.dockerRun)));
    lines.push(convRow('after `docker run -d` returned', summary((c) => c.afterRun)));
    lines.push(convRow(`containers reached (within ${p.convergenceTimeoutSeconds} s)`, (c) => `${c.converged} of ${c.containers}`));
    const floor = r.localBridgeDockerRun;
    if (floor) lines.push(`| the engine's floor: \`docker run -d\` on hB into a local user-defined network of Docker's bridge driver (no overlay, no plugin), same rounds | ${ms(floor.p50Ms)} / ${ms(floor.p99Ms)} / ${ms(floor.maxMs)} | |`);
    lines.push('');
  }
  lines.push(...renderTargets(r.targets));
  return `${lines.join('\n')}\n`;
}

export function renderMarkdown(r: BenchResults): string {
  return `# network results\n\nWritten by \`npm run bench:network\`; raw figures in results.json.\n\n${renderTable(r)}`;
}
