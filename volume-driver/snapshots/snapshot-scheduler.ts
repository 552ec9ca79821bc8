import { errorMessage } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import { parseVolumeOptions } from '../volume-options.js';
import type { VolumeRepository } from '../volume-repository.js';
import type { SnapshotService } from './snapshot-service.js';

export interface ScheduleRun {
  readonly created: readonly string[];
  readonly pruned: readonly string[];
  readonly failed: readonly string[];
}

/**
 * Takes the snapshots a volume's schedule asks for (`snapshot-every`) and keeps the newest
 * `snapshot-keep` of them. Its state is the snapshots themselves (their names carry their
 * origin and time), so nothing is lost or duplicated across agent restarts. Only scheduled
 * snapshots are ever pruned; manual and pre-restore ones belong to the operator.
 */
export class SnapshotScheduler {
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly repository: VolumeRepository,
    private readonly snapshots: SnapshotService,
    private readonly log: Logger,
    private readonly tickMs = 5_000,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.tickMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  async runOnce(now = new Date()): Promise<ScheduleRun> {
    const created: string[] = [];
    const pruned: string[] = [];
    const failed: string[] = [];
    for (const { record } of await this.repository.list()) {
      if (record.state !== 'ready') continue;
      const { snapshotEveryMs, snapshotKeep } = parseVolumeOptions(record.options);
      if (snapshotEveryMs === undefined) continue;
      try {
        const scheduled = (await this.snapshots.list(record.name)).filter((snapshot) => snapshot.origin === 'scheduled');
        const latest = scheduled.at(-1);
        if (!latest || now.getTime() - Date.parse(latest.createdAt) >= snapshotEveryMs) {
          const made = await this.snapshots.create(record.name, undefined, 'scheduled');
          scheduled.push(made);
          created.push(`${record.name}@${made.name}`);
        }
        const keep = snapshotKeep ?? Number.POSITIVE_INFINITY;
        for (const old of scheduled.slice(0, Math.max(0, scheduled.length - keep))) {
          await this.snapshots.remove(record.name, old.name);
          pruned.push(`${record.name}@${old.name}`);
        }
      } catch (error) {
        failed.push(record.name);
        this.log.error({ volume: record.name, err: errorMessage(error) }, 'scheduled snapshot failed');
      }
    }
    return { created, pruned, failed };
  }

  private async tick(): Promise<void> {
    if (this.running) return; // a slow run is never overlapped by the next tick
    this.running = true;
    try {
      const run = await this.runOnce();
      if (run.created.length > 0 || run.pruned.length > 0) this.log.info(run, 'snapshot schedule ran');
    } catch (error) {
      this.log.error({ err: errorMessage(error) }, 'snapshot schedule failed');
    } finally {
      this.running = false;
    }
  }
}
