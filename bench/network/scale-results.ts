// Shape of scale-results.json, and its rendering as scale-results.md and the table in README.md.
import type { MachineBasics } from '../common/machine.js';
import type { Summary } from '../common/stats.js';
import type { Target } from './results.js';
import type { KernelFloor } from './scale-floor.js';
import type { ThreadStates } from './scale-probes.js';

export interface HostConvergence {
  readonly host: string;
  /** From the start of the timed phase until its tables first matched; null when they never did in time. */
  readonly completeMs: number | null;
  /** How completion was seen: the table monitors, or dumps (the host's monitor lost events). */
  readonly seenBy: 'monitor' | 'dump' | null;
  /** Entries on its VXLAN device at the final check, and what that check found wrong. */
  readonly fdb: number;
  readonly neighbours: number;
  readonly flood: number;
  readonly missing: number;
  readonly wrong: number;
  readonly extra: number;
  /** Entries removed during the run (a lapsed host lease purges entries). */
  readonly removals: number;
  /** CPU seconds its agent used during the timed phase (until every host was complete or the deadline). */
  readonly agentCpuSeconds: number;
  readonly problems: readonly string[];
}

export interface CpuUse {
  /** CPU seconds used from the start of the timed phase to convergence (or the deadline), by process kind. */
  readonly agents: number;
  /** Of which in the kernel (netlink requests, sockets). */
  readonly agentsSystem: number;
  readonly etcd: number;
  readonly monitors: number;
  readonly benchmark: number;
  /** Every process on the machine, including the kernel's own work and anything else running. */
  readonly machine: number;
  /** The interval measured, and the CPU seconds the machine's cores could give in it. */
  readonly intervalSeconds: number;
  readonly available: number;
}

export interface IpamFigures {
  readonly allocationsPerHost: number;
  readonly allocations: number;
  /** Endpoints the network already had (the view every allocation works with). */
  readonly endpointsAlready: number;
  readonly seconds: number;
  /** Aggregate: every host allocating at once, `concurrencyPerHost` calls in flight on each. */
  readonly perSecond: number;
  /** Each host's own rate while all ran. */
  readonly perHostPerSecond: { readonly min: number; readonly median: number; readonly max: number };
  readonly latency: Summary;
  readonly duplicates: number;
}

export interface RoundResults {
  /** `containers`: every endpoint joined (a veth pair, as for a container); `records`: CreateEndpoint only. */
  readonly name: 'containers' | 'records';
  readonly join: boolean;
  readonly setup: {
    /** Starting every agent (in batches) until all plugin sockets answered. */
    readonly agentsStartSeconds: number;
    /** Creating the network on the first host and attaching it on the others, until every host had its VXLAN device and a flood entry per other host. */
    readonly networkReadySeconds: number;
    readonly vxlanDevice: string;
  };
  readonly endpoints: {
    readonly total: number;
    /** From the start of the timed phase: the last CreateEndpoint answered (every record is in the store), the last call answered. */
    readonly allRecordedMs: number;
    readonly allDoneMs: number;
    /** Endpoints per second through the driver. */
    readonly perSecond: number;
    readonly latency: { readonly requestAddress: Summary; readonly createEndpoint: Summary; readonly join: Summary | null };
    readonly duplicateAddresses: number;
    readonly duplicateMacs: number;
  };
  readonly convergence: {
    readonly hostsComplete: number;
    /** From the start of the timed phase until every host's tables were complete; null when some never were in time. */
    readonly allHostsMs: number | null;
    /** allHostsMs minus allRecordedMs: how long the tables trailed the last endpoint record. */
    readonly lagAfterLastRecordMs: number | null;
    readonly perHost: Summary | null;
    /**
     * Per endpoint and remote host: from CreateEndpoint answering to both entries being in that host's kernel
     * (total), split at the moment an outside `etcdctl watch` saw the record (store delivery, then the agent's part:
     * its own watch, reconcile pass and netlink writes).
     */
    readonly propagation: { readonly total: Summary | null; readonly store: Summary | null; readonly agent: Summary | null; readonly samples: number };
    readonly hosts: readonly HostConvergence[];
  };
  readonly cpu: CpuUse;
  /** Where the agents' main threads were, sampled every 100 ms during the timed phase. */
  readonly agentThreads: ThreadStates;
  readonly ipam: IpamFigures | null;
}

export interface ScaleResults {
  readonly benchmark: 'network-scale';
  readonly date: string;
  readonly durationSeconds: number;
  readonly source: { readonly commit: string; readonly uncommittedFiles: readonly string[] };
  readonly machine: MachineBasics & {
    readonly etcd: string;
    readonly iproute2: string;
    readonly loadAverageAtStart: readonly number[];
    readonly loadAverageAtEnd: readonly number[];
  };
  readonly parameters: {
    readonly hosts: number;
    readonly endpointsPerHost: number;
    readonly concurrencyPerHost: number;
    readonly rounds: readonly RoundResults['name'][];
    readonly subnet: string;
    readonly underlay: string;
    readonly ipamAllocationsPerHost: number;
    readonly timeoutSeconds: number;
    readonly agentStartBatch: number;
    readonly agentArgs: readonly string[];
  };
  readonly rounds: readonly RoundResults[];
  readonly kernelFloor: KernelFloor | null;
  readonly targets: readonly Target[];
  /** What the run shows about where the time goes, written from the figures above. */
  readonly findings: readonly string[];
}

export const ROUND_TITLES: Readonly<Record<RoundResults['name'], string>> = {
  containers: 'containers (each endpoint joined)',
  records: 'records only (no Join)',
};

const fmt = (value: number | null | undefined, digits = 0): string => (value === null || value === undefined ? 'n/a' : value.toFixed(digits));
const ms = (value: number | null | undefined): string => (value === null || value === undefined ? 'n/a' : `${Math.round(value)} ms`);
const spread = (summary: Summary | null | undefined): string => (summary === null || summary === undefined ? 'n/a' : `${fmt(summary.p50Ms)} / ${fmt(summary.p99Ms)} / ${fmt(summary.maxMs)}`);
const percent = (share: number): string => `${Math.round(share * 100)} %`;

/** The figures as Markdown tables (README and scale-results.md). */
export function renderTable(results: ScaleResults): string {
  const { machine: m, parameters: p, rounds, kernelFloor } = results;
  const header = (title: string): string[] => [`| ${title} | ${rounds.map((r) => ROUND_TITLES[r.name]).join(' | ')} |`, `|---|${rounds.map(() => '---:').join('|')}|`];
  const row = (name: string, cell: (round: RoundResults) => string): string => `| ${name} | ${rounds.map(cell).join(' | ')} |`;
  const lines = [
    `Run of ${results.date.slice(0, 10)} on ${m.cpus} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB, kernel ${m.kernel}, Node ${m.node}, ${m.etcd}, ${m.iproute2}; load average ${m.loadAverageAtStart.join(' ')} at start, ${m.loadAverageAtEnd.join(' ')} at end; commit ${results.source.commit.slice(0, 7)}${results.source.uncommittedFiles.length > 0 ? ` (plus uncommitted changes to ${results.source.uncommittedFiles.join(', ')})` : ''}. ${p.hosts} hosts × ${p.endpointsPerHost} endpoints, ${p.concurrencyPerHost} endpoints being started at once per host, no engines; each round on a fresh cluster.`,
    '',
    ...header('Convergence, from the first RequestAddress'),
    row("**every host's FDB and neighbour tables complete**", (r) => `**${ms(r.convergence.allHostsMs)}**`),
    row('hosts complete', (r) => `${r.convergence.hostsComplete} of ${p.hosts}`),
    row(`last CreateEndpoint answered (all ${p.hosts * p.endpointsPerHost} records in the store)`, (r) => ms(r.endpoints.allRecordedMs)),
    row('last driver call answered', (r) => ms(r.endpoints.allDoneMs)),
    row('tables complete after the last record', (r) => ms(r.convergence.lagAfterLastRecordMs)),
    row('per host, p50 / p99 / max, ms', (r) => spread(r.convergence.perHost)),
    row('endpoints per second through the driver', (r) => fmt(r.endpoints.perSecond)),
    '',
    ...header('Per endpoint and remote host, ms, p50 / p99 / max'),
    row('CreateEndpoint answered → entries in the remote kernel', (r) => spread(r.convergence.propagation.total)),
    row('CreateEndpoint answered → record seen by an outside etcd watch', (r) => spread(r.convergence.propagation.store)),
    row('record seen by that watch → entries in the remote kernel', (r) => spread(r.convergence.propagation.agent)),
    row('samples', (r) => String(r.convergence.propagation.samples)),
    '',
    ...header('Driver calls, ms, p50 / p99 / max'),
    row('RequestAddress', (r) => spread(r.endpoints.latency.requestAddress)),
    row('CreateEndpoint', (r) => spread(r.endpoints.latency.createEndpoint)),
    row('Join', (r) => spread(r.endpoints.latency.join)),
    '',
    ...header('Timed phase: CPU seconds, and where the agents were'),
    row('length of the phase, s (CPU seconds the cores could give)', (r) => `${fmt(r.cpu.intervalSeconds, 1)} (${fmt(r.cpu.available, 1)})`),
    row('whole machine', (r) => fmt(r.cpu.machine, 1)),
    row(`${p.hosts} agents (of which in the kernel)`, (r) => `${fmt(r.cpu.agents, 1)} (${fmt(r.cpu.agentsSystem, 1)})`),
    row('etcd', (r) => fmt(r.cpu.etcd, 1)),
    row('table monitors, benchmark process', (r) => `${fmt(r.cpu.monitors, 1)}, ${fmt(r.cpu.benchmark, 1)}`),
    row("agents' main threads: running or runnable / waiting for the rtnl lock / other kernel waits / idle", (r) =>
      [r.agentThreads.running, r.agentThreads.rtnlWait, r.agentThreads.otherKernelWait, r.agentThreads.idle].map(percent).join(' / '),
    ),
  ];
  const withIpam = rounds.find((r) => r.ipam !== null);
  if (withIpam?.ipam) {
    const ipam = withIpam.ipam;
    lines.push(
      '',
      `| IPAM: ${ipam.allocationsPerHost} RequestAddress per host on all ${p.hosts} hosts at once, after the ${withIpam.name} round (${ipam.endpointsAlready} endpoints in the network) | value |`,
      '|---|---:|',
      `| **allocations per second, all hosts** | **${fmt(ipam.perSecond)}** |`,
      `| per host, min / median / max | ${fmt(ipam.perHostPerSecond.min)} / ${fmt(ipam.perHostPerSecond.median)} / ${fmt(ipam.perHostPerSecond.max)} |`,
      `| latency, ms, p50 / p99 / max | ${spread(ipam.latency)} |`,
      `| addresses handed out twice | ${ipam.duplicates} |`,
    );
  }
  if (kernelFloor !== null) {
    lines.push(
      '',
      `| The kernel alone: iproute2 batches into ${kernelFloor.hosts} fresh namespaces at once, no control plane | seconds |`,
      '|---|---:|',
      `| ${kernelFloor.vethsPerHost} veth pairs per namespace | ${fmt(kernelFloor.vethsSeconds, 2)} |`,
      `| ${kernelFloor.entriesPerHost} FDB and neighbour entries per namespace | ${fmt(kernelFloor.entriesSeconds, 2)} |`,
    );
  }
  lines.push('', '| Target | goal | measured | met |', '|---|---|---:|:---:|');
  for (const target of results.targets) {
    lines.push(`| ${target.name} | ${target.target} | ${target.value === null ? 'n/a' : `${target.value}${target.unit}`} | ${target.met === null ? 'n/a' : target.met ? 'yes' : '**no**'} |`);
  }
  return `${lines.join('\n')}\n`;
}

export function renderMarkdown(results: ScaleResults): string {
  const sections: string[] = [
    '# Network control-plane scale: results',
    '',
    'Produced by `npm run bench:network-scale` (see README.md beside this file for what is measured).',
    '',
    renderTable(results),
    '## Where the time goes',
    '',
    ...results.findings.map((finding) => `- ${finding}`),
    '',
    'README.md beside this file reads these figures, and lists what profiling earlier runs found and fixed.',
    '',
  ];
  for (const round of results.rounds) {
    const hostRows = round.convergence.hosts.map(
      (host) =>
        `| ${host.host} | ${ms(host.completeMs)} | ${host.seenBy ?? 'n/a'} | ${host.fdb} | ${host.neighbours} | ${host.flood} | ${host.missing} / ${host.wrong} / ${host.extra} | ${host.removals} | ${fmt(host.agentCpuSeconds, 1)} |`,
    );
    const problems = round.convergence.hosts.flatMap((host) => host.problems.map((problem) => `- ${host.host}: ${problem}`));
    sections.push(
      `## Per host: ${ROUND_TITLES[round.name]}`,
      '',
      `Set-up: agents started in ${round.setup.agentsStartSeconds} s; the network on every host in ${round.setup.networkReadySeconds} s (device ${round.setup.vxlanDevice}).`,
      '',
      '| host | tables complete | seen by | FDB entries | neighbours | flood | missing / wrong / extra | removals | agent CPU s |',
      '|---|---:|---|---:|---:|---:|---:|---:|---:|',
      ...hostRows,
      '',
      ...(problems.length > 0 ? ['Problems:', '', ...problems, ''] : []),
    );
  }
  sections.push(`Whole run: ${results.durationSeconds} s.`, '');
  return sections.join('\n');
}
