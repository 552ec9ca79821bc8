// Measurement 4: what replication costs the owner's writers: pgbench TPS on a replicated volume against
// the same database on a volume without replicas, both on hA, in alternating order.
import { loadavg } from 'node:os';
import { startPostgres, type PostgresContainer } from '../../test/helpers/postgres.js';
import { median, ratio, round, type Distribution, distribution } from '../common/stats.js';
import { initialise, pgbench, type PgbenchRun } from './database.js';
import type { ReplicatedHosts } from './volumes.js';

export interface ThroughputSettings {
  readonly scale: number;
  readonly clients: number;
  readonly threads: number;
  readonly seconds: number;
  readonly rounds: number;
}

export const VARIANTS = ['replicated', 'local'] as const;
export type Variant = (typeof VARIANTS)[number];

export interface ThroughputRound extends PgbenchRun {
  readonly variant: Variant;
  readonly round: number;
  /** Load average (1 min) when the run started. */
  readonly loadAverage1: number;
  /** Replicated runs: what the agents logged during the run. */
  readonly replication?: {
    /** Snapshots the replica received, and their bytes. */
    readonly received: number;
    readonly receivedBytes: number;
    readonly wholeCopies: number;
    readonly ownerStepFailures: number;
  };
}

export interface ThroughputFigures {
  readonly settings: ThroughputSettings;
  readonly volumes: Readonly<Record<Variant, { readonly name: string; readonly options: readonly string[] }>>;
  readonly medianTps: Readonly<Record<Variant, number>>;
  readonly medianLatencyMs: Readonly<Record<Variant, number>>;
  /** replicated / local median TPS. */
  readonly ratio: number;
  /** Per replicated run: snapshots shipped per minute. */
  readonly cyclesPerMinute: Distribution | null;
  /** In the order measured. */
  readonly rounds: readonly ThroughputRound[];
}

/**
 * Two volumes on hA, one with a replica on hB and one without (replicas=1), each with PostgreSQL and
 * the same `pgbench -i` database; then rounds of `pgbench -c C -j T -T S` on each, the order
 * alternating (replicated first in even rounds), a CHECKPOINT before every run.
 */
export async function measureThroughput(hosts: ReplicatedHosts, settings: ThroughputSettings, log: (message: string) => void): Promise<ThroughputFigures> {
  const volumes: Record<Variant, { name: string; options: string[] }> = {
    replicated: { name: 'bench-tps-replicated', options: ['replicas=2', `replica-hosts=${hosts.replica.name}`] },
    local: { name: 'bench-tps-local', options: ['replicas=1'] },
  };
  const databases = {} as Record<Variant, PostgresContainer>;
  for (const variant of VARIANTS) {
    await hosts.createPlainVolume(volumes[variant].name, volumes[variant].options);
    databases[variant] = await startPostgres(hosts.owner, { name: `bench-tps-${variant}`, volume: volumes[variant].name, image: hosts.postgresImage });
    log(`throughput: pgbench -i -s ${settings.scale} on ${volumes[variant].name}`);
    await initialise(databases[variant], settings.scale);
  }
  await hosts.inspector.waitInSync(volumes.replicated.name, 300_000);
  const rounds: ThroughputRound[] = [];
  for (let turn = 0; turn < settings.rounds; turn++) {
    const order = turn % 2 === 0 ? VARIANTS : [...VARIANTS].reverse();
    for (const variant of order) {
      const pg = databases[variant];
      await pg.psql('CHECKPOINT');
      const mark = hosts.mark();
      const startedAt = Date.now();
      const load1 = loadavg()[0] ?? Number.NaN;
      const run = await pgbench(pg, ['-n', '-c', String(settings.clients), '-j', String(settings.threads), '-T', String(settings.seconds)], (settings.seconds + 300) * 1000);
      const endedAt = Date.now();
      const logged = variant === 'replicated' ? hosts.logged(volumes.replicated.name, mark, startedAt, endedAt) : undefined;
      rounds.push({
        variant,
        round: turn + 1,
        ...run,
        loadAverage1: round(load1, 2),
        ...(logged === undefined ? {} : {
          replication: {
            received: logged.received.length,
            receivedBytes: logged.received.reduce((sum, entry) => sum + entry.bytes, 0),
            wholeCopies: logged.wholeCopies,
            ownerStepFailures: logged.ownerStepFailures,
          },
        }),
      });
      log(`throughput: round ${turn + 1}/${settings.rounds} ${variant.padEnd(10)} ${run.tps.toFixed(1)} TPS${logged === undefined ? '' : `, ${logged.received.length} snapshots shipped (${logged.wholeCopies} whole copies)`}`);
    }
  }
  for (const variant of VARIANTS) await databases[variant].stop();
  const medianOf = (variant: Variant, pick: (r: ThroughputRound) => number): number => round(median(rounds.filter((r) => r.variant === variant).map(pick)), 1);
  const medianTps = { replicated: medianOf('replicated', (r) => r.tps), local: medianOf('local', (r) => r.tps) };
  const perMinute = rounds.flatMap((r) => (r.replication === undefined ? [] : [(r.replication.received / settings.seconds) * 60]));
  return {
    settings,
    volumes,
    medianTps,
    medianLatencyMs: { replicated: medianOf('replicated', (r) => r.latencyAverageMs), local: medianOf('local', (r) => r.latencyAverageMs) },
    ratio: ratio(medianTps.replicated, medianTps.local),
    cyclesPerMinute: perMinute.length > 0 ? distribution(perMinute, 1) : null,
    rounds,
  };
}
