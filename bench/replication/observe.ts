// What the benchmark reads of replication: the owner's view of a volume (what `berth volume inspect
// VOL --json` prints), and the replica agent's debug line for each snapshot it received.
import { readFileSync, statSync } from 'node:fs';
import { AdminClient } from '../../cli/admin-client.js';
import { adminSocketPath } from '../../plugins/config/plugin-name.js';
import { parseChainId } from '../../volume-driver/replication/replication-records.js';
import type { Host } from '../../test/helpers/cluster.js';
import { waitUntil } from '../../test/helpers/wait-until.js';

/** One replica as `berth volume inspect --json` shows it under `[0].replication.replicas`. */
export interface ReplicaView {
  readonly host: string;
  readonly alive: boolean;
  readonly state: string;
  readonly snapshot: string | null;
  readonly snapshotTakenAt: string | null;
  readonly receivedAt: string | null;
  readonly lagSeconds: number | null;
  readonly lagBytes: number | null;
  readonly lastTransferBytes: number | null;
  readonly error?: string;
}

/** `[0].replication` of `berth volume inspect --json`. */
export interface ReplicationView {
  readonly owner: string;
  readonly ownerAlive: boolean;
  readonly epoch: number;
  readonly mounted: boolean;
  readonly replicateEvery: string;
  readonly head: string | null;
  readonly headTakenAt: string | null;
  readonly replicas: readonly ReplicaView[];
}

/**
 * Reads a volume's replication view from a host's agent with the request `berth volume inspect`
 * makes (GET /v1/volumes/NAME on the admin socket), from this process: starting the CLI (a Node
 * process) four times a second would take a large share of a small machine from the workload.
 */
export class ReplicationInspector {
  private readonly client: AdminClient;

  constructor(readonly host: Host, timeoutMs = 30_000) {
    this.client = new AdminClient(adminSocketPath(host.runDir, 'berth'), timeoutMs);
  }

  async view(volume: string): Promise<ReplicationView> {
    const reply = await this.client.get<{ volume: { replication?: ReplicationView } }>(`/v1/volumes/${encodeURIComponent(volume)}`);
    const replication = reply.volume.replication;
    if (replication?.replicas === undefined) throw new Error(`volume ${volume} on ${this.host.name} shows no replicas: ${JSON.stringify(reply.volume.replication)}`);
    return replication;
  }

  /** The one replica of `volume` (the benchmark's volumes have replicas=2). */
  async replica(volume: string): Promise<{ view: ReplicationView; replica: ReplicaView }> {
    const view = await this.view(volume);
    const replica = view.replicas[0];
    if (replica === undefined) throw new Error(`volume ${volume} has no replica host`);
    return { view, replica };
  }

  /**
   * Waits (bounded) until the replica holds the owner's head, in sync, with no bytes changed since:
   * nothing is left to ship. Resolves with that view.
   */
  async waitInSync(volume: string, timeoutMs: number): Promise<{ view: ReplicationView; replica: ReplicaView }> {
    return waitUntil(async () => {
      const seen = await this.replica(volume);
      const { view, replica } = seen;
      return replica.state === 'in-sync' && replica.lagBytes === 0 && view.head !== null && replica.snapshot === view.head ? seen : undefined;
    }, { description: `the replica of ${volume} to hold everything ${this.host.name} has (in-sync, lagBytes 0)`, timeoutMs, intervalMs: 250 });
  }
}

/** A 'replica caught up' line of a replica agent's log: one snapshot received. */
export interface ReceivedSnapshot {
  /** The agent's log time, ms since the epoch. */
  readonly at: number;
  readonly id: string;
  readonly bytes: number;
}

export const RECEIVED = 'replica caught up';
export const WHOLE_COPY = 'sender no longer has the common snapshot; rebuilding the replica from a whole copy';
export const STEP_FAILED = 'replication step failed; retrying';

/** One host's agent log (JSON lines), read from a byte offset on. */
export class AgentLog {
  constructor(private readonly host: Host) {}

  private get path(): string {
    const agent = this.host.agent;
    if (agent === undefined) throw new Error(`no agent was started on ${this.host.name}`);
    return agent.logPath;
  }

  /** The log's current end, to read from later. */
  offset(): number {
    return statSync(this.path).size;
  }

  /** Entries with message `msg` about `volume` logged after `offset`, in log order, with their time (ms since the epoch). */
  entries(msg: string, volume: string, offset: number): Array<Record<string, unknown> & { at: number }> {
    const text = readFileSync(this.path).subarray(offset).toString('utf8');
    const found: Array<Record<string, unknown> & { at: number }> = [];
    for (const line of text.split('\n')) {
      if (!line.includes(msg)) continue;
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (entry.msg !== msg || entry.volume !== volume) continue;
      found.push({ ...entry, at: typeof entry.time === 'string' ? Date.parse(entry.time) : Number.NaN });
    }
    return found;
  }

  /** Replica: the snapshots of `volume` received after `offset` (its debug line with the bytes of each transfer). */
  received(volume: string, offset: number): ReceivedSnapshot[] {
    return this.entries(RECEIVED, volume, offset).flatMap((entry) =>
      typeof entry.id === 'string' && typeof entry.bytes === 'number' ? [{ at: entry.at, id: entry.id, bytes: entry.bytes }] : [],
    );
  }
}

/** Epoch and sequence number of a chain snapshot id (`e<epoch>-<seq>`); throws for anything else. */
export function chainPosition(id: string): { epoch: number; seq: number } {
  const parsed = parseChainId(id);
  if (parsed === undefined) throw new Error(`${id} is not a chain snapshot id`);
  return parsed;
}
