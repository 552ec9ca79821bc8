// PostgreSQL as the replication benchmark drives it: pgbench runs with their figures, and the stop and
// start of a container timed up to the moment the server accepts connections again.
import { POSTGRES_DATA_DIR, PostgresContainer } from '../../test/helpers/postgres.js';
import type { Host } from '../../test/helpers/cluster.js';

export interface PgbenchRun {
  readonly tps: number;
  readonly latencyAverageMs: number;
  readonly transactions: number;
}

/** `pgbench ARGS` in the container; throws unless it exits 0 with its figures. */
export async function pgbench(pg: PostgresContainer, args: readonly string[], timeoutMs: number): Promise<PgbenchRun> {
  const result = await pg.pgbench(args, { timeoutMs });
  if (result.code !== 0) throw new Error(`pgbench ${args.join(' ')} in ${pg.name} failed (exit ${result.code}): ${result.stderr.trim().split('\n').slice(-5).join(' | ')}`);
  const number = (pattern: RegExp): number => {
    const value = Number(pattern.exec(result.stdout)?.[1]);
    if (!Number.isFinite(value)) throw new Error(`pgbench in ${pg.name}: no ${pattern.source} in its output:\n${result.stdout}`);
    return value;
  };
  return {
    tps: number(/^tps = ([\d.]+) \(without initial connection time\)/m),
    latencyAverageMs: number(/^latency average = ([\d.]+) ms/m),
    transactions: number(/^number of transactions actually processed: (\d+)/m),
  };
}

/** `pgbench -i -s SCALE -q`: the standard tables, SCALE × 100,000 accounts. */
export async function initialise(pg: PostgresContainer, scale: number): Promise<void> {
  const result = await pg.pgbench(['-i', '-s', String(scale), '-q'], { timeoutMs: 900_000 });
  if (result.code !== 0) throw new Error(`pgbench -i -s ${scale} in ${pg.name} failed (exit ${result.code}): ${result.stderr.trim().split('\n').slice(-5).join(' | ')}`);
}

/** Committed pgbench transactions (rows of pgbench_history). */
export async function historyRows(pg: PostgresContainer): Promise<number> {
  return Number(await pg.psql('SELECT count(*) FROM pgbench_history'));
}

/**
 * `docker create` of a PostgreSQL container on `volume`, with the flags `startPostgres` runs one with
 * (fast shutdown on stop); started later with `docker start`. The volume is mounted `nocopy`: otherwise
 * the engine mounts it at create time, to copy the image's files at that path into an empty volume, and
 * on another host than the owner that Mount is a takeover (refused while the volume is in use there).
 */
export async function createPostgres(host: Host, name: string, volume: string, image: string): Promise<PostgresContainer> {
  await host.dockerOk(['create', '--name', name, '--volume', `${volume}:${POSTGRES_DATA_DIR}:nocopy`, '--stop-signal', 'SIGINT', image]);
  return new PostgresContainer(host, name, volume, 120_000);
}

/** Milliseconds of one stop → start cycle, split where the commands returned. */
export interface MoveTiming {
  /** `docker stop` of the running container (PostgreSQL's fast shutdown, the volume's Unmount). */
  readonly stopMs: number;
  /** `docker start` of the next container (the volume's Mount, the container's start). */
  readonly startMs: number;
  /** From `docker start` returning until PostgreSQL accepts connections. */
  readonly readyMs: number;
  /** From the start of `docker stop` until PostgreSQL accepts connections: the figure. */
  readonly totalMs: number;
}

/** How often the server is asked whether it accepts connections while it starts. */
const READY_POLL_SECONDS = 0.05;
const READY_TIMEOUT_SECONDS = 120;

/**
 * `docker stop` of `from`, `docker start` of `to` (the same container for a restart, one on another
 * host for a handoff), then `pg_isready` inside `to` every 50 ms until the server accepts connections.
 * The polling runs in the container, so its granularity is not that of a `docker exec` per attempt.
 */
export async function timedMove(from: PostgresContainer, to: PostgresContainer): Promise<MoveTiming> {
  const started = performance.now();
  await from.stop();
  const stopped = performance.now();
  await to.docker(['start', to.name]);
  const running = performance.now();
  const attempts = Math.ceil(READY_TIMEOUT_SECONDS / READY_POLL_SECONDS);
  const poll = `i=0; until pg_isready -q -U postgres -t 2; do i=$((i+1)); [ "$i" -ge ${attempts} ] && exit 1; sleep ${READY_POLL_SECONDS}; done`;
  const ready = await to.exec(['sh', '-c', poll], { timeoutMs: (READY_TIMEOUT_SECONDS + 60) * 1000 });
  const done = performance.now();
  if (ready.code !== 0) {
    const log = await to.logs().catch((err: unknown) => `(cannot read the log: ${String(err)})`);
    throw new Error(`PostgreSQL in ${to.name} did not accept connections within ${READY_TIMEOUT_SECONDS} s of its start (exit ${ready.code}: ${ready.stderr.trim()})\n--- docker logs ${to.name} (tail) ---\n${log.trimEnd().split('\n').slice(-20).join('\n')}`);
  }
  return { stopMs: stopped - started, startMs: running - stopped, readyMs: done - running, totalMs: done - started };
}
