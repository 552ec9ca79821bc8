// The two hosts every measurement uses, hA the owner and hB the replica, with what is read of them.
import type { Host } from '../../test/helpers/cluster.js';
import { AgentLog, ReplicationInspector, STEP_FAILED, WHOLE_COPY, type ReceivedSnapshot } from './observe.js';

/** Where both agents' logs ended at some moment. */
export interface LogMark {
  readonly owner: number;
  readonly replica: number;
}

/** What the agents logged about a volume's replication over a stretch of time. */
export interface Logged {
  /** Snapshots the replica received, with the bytes of each transfer. */
  readonly received: readonly ReceivedSnapshot[];
  /** Replica pulls that fell back to a whole copy ('sender no longer has the common snapshot'). */
  readonly wholeCopies: number;
  /** Owner replication steps that failed and were retried. */
  readonly ownerStepFailures: number;
}

export class ReplicatedHosts {
  /** The owner's view of a volume (inspect on hA). */
  readonly inspector: ReplicationInspector;
  readonly ownerLog: AgentLog;
  readonly replicaLog: AgentLog;

  constructor(
    readonly owner: Host,
    readonly replica: Host,
    readonly postgresImage: string,
    readonly busyboxImage: string,
  ) {
    this.inspector = new ReplicationInspector(owner);
    this.ownerLog = new AgentLog(owner);
    this.replicaLog = new AgentLog(replica);
  }

  /** `docker volume create -d berth -o replicas=2 -o replica-hosts=hB [OPTIONS] NAME` on hA. */
  async createVolume(name: string, options: readonly string[]): Promise<void> {
    await this.createPlainVolume(name, ['replicas=2', `replica-hosts=${this.replica.name}`, ...options]);
  }

  /** `docker volume create -d berth [-o OPTION]... NAME` on hA. */
  async createPlainVolume(name: string, options: readonly string[]): Promise<void> {
    await this.owner.dockerOk(['volume', 'create', '--driver', 'berth', ...options.flatMap((option) => ['--opt', option]), name]);
  }

  mark(): LogMark {
    return { owner: this.ownerLog.offset(), replica: this.replicaLog.offset() };
  }

  /** What both logs say about `volume` since `mark`, between `from` and `to` (ms since the epoch) when given. */
  logged(volume: string, mark: LogMark, from = 0, to = Number.POSITIVE_INFINITY): Logged {
    const within = <T extends { at: number }>(entries: readonly T[]): T[] => entries.filter((entry) => entry.at >= from && entry.at <= to);
    return {
      received: within(this.replicaLog.received(volume, mark.replica)),
      wholeCopies: within(this.replicaLog.entries(WHOLE_COPY, volume, mark.replica)).length,
      ownerStepFailures: within(this.ownerLog.entries(STEP_FAILED, volume, mark.owner)).length,
    };
  }
}
