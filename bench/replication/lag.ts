// Measurement 1: how far a replica trails the owner while PostgreSQL on the owner runs pgbench. The
// owner's view of the volume is sampled every 250 ms for the length of the run.
import { loadavg } from 'node:os';
import { startPostgres, type PostgresContainer } from '../../test/helpers/postgres.js';
import { sleep } from '../../test/helpers/wait-until.js';
import { distribution, round, type Distribution } from '../common/stats.js';
import { initialise, pgbench, type PgbenchRun } from './database.js';
import { chainPosition, type ReplicationInspector } from './observe.js';
import type { ReplicatedHosts } from './volumes.js';

export interface LagSettings {
  readonly volume: string;
  readonly scale: number;
  readonly clients: number;
  readonly threads: number;
  readonly seconds: number;
  readonly sampleIntervalMs: number;
  /** pgbench -R: a steady rate of transactions per second instead of as many as the machine does. */
  readonly rateTps?: number;
}

export interface LagSample {
  /** ms since pgbench was started. */
  readonly atMs: number;
  readonly inspectMs: number;
  readonly state: string;
  readonly snapshot: string | null;
  readonly head: string | null;
  readonly lagSeconds: number | null;
  readonly lagBytes: number | null;
  readonly lastTransferBytes: number | null;
}

export interface LagFigures {
  readonly settings: LagSettings;
  readonly pgbench: PgbenchRun;
  readonly samples: {
    readonly count: number;
    /** Samples whose inspect failed (left out of every figure). */
    readonly failed: number;
    /** Samples with no lagSeconds (the replica had not reported a snapshot's time yet). */
    readonly withoutLagSeconds: number;
    /** Samples with no lagBytes (the owner could not measure the changes since the replica's snapshot). */
    readonly withoutLagBytes: number;
    readonly meanIntervalMs: number;
    /** How long the inspect request took (ms). */
    readonly inspectMs: Distribution;
    /** Samples per replica state. */
    readonly states: Readonly<Record<string, number>>;
  };
  readonly lagSeconds: Distribution | null;
  readonly lagBytes: Distribution | null;
  /** Snapshots the owner took and the replica received during the run. */
  readonly cycles: {
    readonly snapshotsTaken: number;
    readonly received: number;
    readonly perMinute: number;
    /** Bytes of each transfer, from the replica's log ('replica caught up'). */
    readonly transferBytes: Distribution | null;
    /** From a snapshot's time on the owner to the replica holding it (ms), for the snapshots samples saw. */
    readonly takenToReceivedMs: Distribution | null;
    /** Transfers that fell back to a whole copy of the volume (the owner no longer had the replica's snapshot). */
    readonly wholeCopies: number;
    /** Owner replication steps that failed (and were retried). */
    readonly ownerStepFailures: number;
  };
  readonly loadAverage: { readonly start: readonly number[]; readonly end: readonly number[] };
  readonly rawSamples: readonly LagSample[];
}

/**
 * PostgreSQL on hA on the replicated volume: `pgbench -i`, a wait until the replica holds all of it,
 * then `pgbench -c C -j T -T S` while the owner's view is sampled. Resolves with the figures and the
 * container, still running (the handoff measurement goes on with the same database).
 */
export async function measureLag(hosts: ReplicatedHosts, settings: LagSettings, log: (message: string) => void): Promise<{ figures: LagFigures; pg: PostgresContainer }> {
  const { owner } = hosts;
  await hosts.createVolume(settings.volume, []);
  const pg = await startPostgres(owner, { name: 'bench-lag-hA', volume: settings.volume, image: hosts.postgresImage });
  log(`lag: pgbench -i -s ${settings.scale} on ${settings.volume}`);
  await initialise(pg, settings.scale);
  return { figures: await measureLagOn(hosts, pg, settings, log), pg };
}

/** The sampling part of measureLag on a database already loaded: a wait until the replica holds it, then pgbench. */
export async function measureLagOn(hosts: ReplicatedHosts, pg: PostgresContainer, settings: LagSettings, log: (message: string) => void): Promise<LagFigures> {
  const { inspector } = hosts;
  // Each measurement starts from a database at rest: the writes of the load before (pgbench -i, or the
  // other lag run) flushed by a checkpoint, not spread into this one's minute by the checkpointer.
  await pg.psql('CHECKPOINT');
  await inspector.waitInSync(settings.volume, 300_000);
  const loadStart = loadavg().map((v) => round(v, 2));
  const headBefore = (await inspector.replica(settings.volume)).view.head;
  const mark = hosts.mark();

  const rate = settings.rateTps === undefined ? [] : ['-R', String(settings.rateTps)];
  log(`lag: pgbench -c ${settings.clients} -j ${settings.threads} -T ${settings.seconds}${rate.length > 0 ? ` -R ${settings.rateTps}` : ''}, sampling the owner's view every ${settings.sampleIntervalMs} ms`);
  const started = performance.now();
  const startedAt = Date.now();
  let loadDone = false;
  const load = pgbench(pg, ['-n', '-c', String(settings.clients), '-j', String(settings.threads), '-T', String(settings.seconds), ...rate], (settings.seconds + 300) * 1000);
  const finished = load.finally(() => (loadDone = true));
  finished.catch(() => undefined); // awaited below
  const { samples, failed } = await sample(inspector, settings, started, () => loadDone);
  const run = await load;
  const endedAt = Date.now();
  const headAfter = (await inspector.replica(settings.volume)).view.head;
  const loadEnd = loadavg().map((v) => round(v, 2));

  const logged = hosts.logged(settings.volume, mark, startedAt, endedAt);
  const cycles = logged.received;
  const shipped = new Map<string, number>();
  const views = samples.flatMap((s) => (s.view === undefined ? [] : [s.view]));
  for (const { replica } of views) {
    if (replica.snapshot !== null && replica.snapshotTakenAt !== null && replica.receivedAt !== null) {
      shipped.set(replica.snapshot, Date.parse(replica.receivedAt) - Date.parse(replica.snapshotTakenAt));
    }
  }
  const rawSamples: LagSample[] = samples.flatMap((s) => s.view === undefined ? [] : [{
    atMs: round(s.atMs, 1),
    inspectMs: round(s.inspectMs, 1),
    state: s.view.replica.state,
    snapshot: s.view.replica.snapshot,
    head: s.view.view.head,
    lagSeconds: s.view.replica.lagSeconds,
    lagBytes: s.view.replica.lagBytes,
    lastTransferBytes: s.view.replica.lastTransferBytes,
  }]);
  const lagSeconds = rawSamples.flatMap((s) => (s.lagSeconds === null ? [] : [s.lagSeconds]));
  const lagBytes = rawSamples.flatMap((s) => (s.lagBytes === null ? [] : [s.lagBytes]));
  const states: Record<string, number> = {};
  for (const s of rawSamples) states[s.state] = (states[s.state] ?? 0) + 1;
  const taken = headBefore !== null && headAfter !== null && chainPosition(headAfter).epoch === chainPosition(headBefore).epoch ? chainPosition(headAfter).seq - chainPosition(headBefore).seq : Number.NaN;
  const spanMs = rawSamples.length > 1 ? (rawSamples.at(-1)?.atMs ?? 0) - (rawSamples[0]?.atMs ?? 0) : Number.NaN;
  const figures: LagFigures = {
    settings,
    pgbench: run,
    samples: {
      count: rawSamples.length,
      failed,
      withoutLagSeconds: rawSamples.length - lagSeconds.length,
      withoutLagBytes: rawSamples.length - lagBytes.length,
      meanIntervalMs: round(spanMs / Math.max(1, rawSamples.length - 1), 1),
      inspectMs: distribution(rawSamples.map((s) => s.inspectMs), 1),
      states,
    },
    lagSeconds: lagSeconds.length > 0 ? distribution(lagSeconds) : null,
    lagBytes: lagBytes.length > 0 ? distribution(lagBytes, 0) : null,
    cycles: {
      snapshotsTaken: taken,
      received: cycles.length,
      perMinute: round((cycles.length / ((endedAt - startedAt) / 1000)) * 60, 1),
      transferBytes: cycles.length > 0 ? distribution(cycles.map((c) => c.bytes), 0) : null,
      takenToReceivedMs: shipped.size > 0 ? distribution([...shipped.values()], 0) : null,
      wholeCopies: logged.wholeCopies,
      ownerStepFailures: logged.ownerStepFailures,
    },
    loadAverage: { start: loadStart, end: loadEnd },
    rawSamples,
  };
  return figures;
}

interface RawSample {
  readonly atMs: number;
  readonly inspectMs: number;
  readonly view: Awaited<ReturnType<ReplicationInspector['replica']>> | undefined;
}

/** Samples the owner's view on a fixed grid until `done()`; an inspect that overruns moves the next one later. */
async function sample(inspector: ReplicationInspector, settings: LagSettings, started: number, done: () => boolean): Promise<{ samples: RawSample[]; failed: number }> {
  const samples: RawSample[] = [];
  let failed = 0;
  const hardStop = started + (settings.seconds + 300) * 1000;
  for (let tick = 0; !done() && performance.now() < hardStop; tick++) {
    const due = started + tick * settings.sampleIntervalMs;
    const now = performance.now();
    if (due < now - settings.sampleIntervalMs) continue; // an overrun: skip the grid points it covered
    if (due > now) await sleep(due - now);
    if (done()) break;
    const at = performance.now();
    try {
      const view = await inspector.replica(settings.volume);
      samples.push({ atMs: at - started, inspectMs: performance.now() - at, view });
    } catch {
      failed += 1;
    }
  }
  return { samples, failed };
}
