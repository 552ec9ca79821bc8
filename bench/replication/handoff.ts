// Measurement 3: a planned handoff (PostgreSQL stopped on one host, started on the other with the same
// volume) against a plain restart on the owner, each from `docker stop` to accepting connections.
import type { PostgresContainer } from '../../test/helpers/postgres.js';
import { median, round } from '../common/stats.js';
import { createPostgres, historyRows, pgbench, timedMove, type MoveTiming } from './database.js';
import type { ReplicatedHosts } from './volumes.js';

export interface HandoffSettings {
  readonly rounds: number;
  /** Seconds of pgbench writes before each measurement. */
  readonly writeSeconds: number;
  readonly clients: number;
  readonly threads: number;
}

export interface MoveSample extends MoveTiming {
  readonly kind: 'restart' | 'handoff';
  /** 'hA' for a restart, 'hA→hB' for a handoff. */
  readonly hosts: string;
  /** pgbench transactions committed just before (all of them were there after the move). */
  readonly rowsBefore: number;
}

export interface MoveSummary {
  readonly count: number;
  readonly medianMs: number;
  readonly minMs: number;
  readonly maxMs: number;
  readonly medianStopMs: number;
  readonly medianStartMs: number;
  readonly medianReadyMs: number;
}

export interface HandoffFigures {
  readonly settings: HandoffSettings;
  readonly restart: MoveSummary;
  readonly handoff: MoveSummary;
  /** median handoff − median restart (ms). */
  readonly differenceMs: number;
  readonly ratio: number;
  /** In the order measured. */
  readonly samples: readonly MoveSample[];
}

/**
 * On the volume of `running` (PostgreSQL on hA, already loaded): rounds of one restart on hA and one
 * handoff between hA and hB (directions alternate, so the restart is always on hA: restart then
 * A→B, then B→A then restart, ...). Before each: a few seconds of pgbench writes; after each: the
 * committed rows are checked. Leaves every container stopped.
 */
export async function measureHandoffs(hosts: ReplicatedHosts, running: PostgresContainer, settings: HandoffSettings, log: (message: string) => void): Promise<HandoffFigures> {
  const onA = running;
  const onB = await createPostgres(hosts.replica, 'bench-lag-hB', running.volume, hosts.postgresImage);
  const hostName = new Map([[onA, hosts.owner.name], [onB, hosts.replica.name]]);
  let current = onA;
  const samples: MoveSample[] = [];
  const measure = async (kind: MoveSample['kind']): Promise<void> => {
    await pgbench(current, ['-n', '-c', String(settings.clients), '-j', String(settings.threads), '-T', String(settings.writeSeconds)], (settings.writeSeconds + 300) * 1000);
    const rowsBefore = await historyRows(current);
    const next = kind === 'restart' ? current : current === onA ? onB : onA;
    const where = kind === 'restart' ? `${hostName.get(current)}` : `${hostName.get(current)}→${hostName.get(next)}`;
    const timing = await timedMove(current, next);
    const rowsAfter = await historyRows(next);
    if (rowsAfter !== rowsBefore) throw new Error(`${kind} ${where}: ${rowsBefore} pgbench transactions before, ${rowsAfter} after`);
    samples.push({ kind, hosts: where, rowsBefore, ...roundTiming(timing) });
    log(`handoff: ${kind.padEnd(7)} ${where.padEnd(6)} ${(timing.totalMs / 1000).toFixed(2)} s (stop ${(timing.stopMs / 1000).toFixed(2)}, start ${(timing.startMs / 1000).toFixed(2)}, ready ${(timing.readyMs / 1000).toFixed(2)})`);
    current = next;
  };
  for (let turn = 0; turn < settings.rounds; turn++) {
    const order: MoveSample['kind'][] = current === onA ? ['restart', 'handoff'] : ['handoff', 'restart'];
    for (const kind of order) await measure(kind);
  }
  await current.stop();
  const restart = summary(samples.filter((s) => s.kind === 'restart'));
  const handoff = summary(samples.filter((s) => s.kind === 'handoff'));
  return {
    settings,
    restart,
    handoff,
    differenceMs: round(handoff.medianMs - restart.medianMs, 1),
    ratio: round(handoff.medianMs / restart.medianMs),
    samples,
  };
}

function roundTiming(timing: MoveTiming): MoveTiming {
  return { stopMs: round(timing.stopMs, 1), startMs: round(timing.startMs, 1), readyMs: round(timing.readyMs, 1), totalMs: round(timing.totalMs, 1) };
}

function summary(samples: readonly MoveSample[]): MoveSummary {
  const of = (pick: (s: MoveSample) => number): number => round(median(samples.map(pick)), 1);
  const totals = samples.map((s) => s.totalMs);
  return {
    count: samples.length,
    medianMs: of((s) => s.totalMs),
    minMs: Math.min(...totals),
    maxMs: Math.max(...totals),
    medianStopMs: of((s) => s.stopMs),
    medianStartMs: of((s) => s.startMs),
    medianReadyMs: of((s) => s.readyMs),
  };
}
