import type { Logger } from '../plugins/logging/logger.js';
import type { StorageBackend, VolumeUsage } from './storage/storage-backend.js';

interface Measurement extends VolumeUsage {
  readonly measuredAt: string;
}

/**
 * Measuring a volume walks its tree, far too slow for Get (called before every Mount).
 * Get reads the last measurement and schedules a refresh when it is stale; one volume is
 * measured at a time so a burst of Gets never becomes a burst of tree walks.
 */
export class UsageTracker {
  private readonly measurements = new Map<string, Measurement>();
  private readonly queue = new Set<string>();
  private draining = false;

  constructor(
    private readonly backend: StorageBackend,
    private readonly log: Logger,
    private readonly maxAgeMs = 10_000,
  ) {}

  /** Last known usage (possibly stale or absent); refreshes in the background when stale. */
  peek(name: string): Measurement | undefined {
    const known = this.measurements.get(name);
    if (!known || Date.now() - Date.parse(known.measuredAt) > this.maxAgeMs) this.schedule(name);
    return known;
  }

  /** Measures now; for operator commands that want an exact figure. */
  async measure(name: string): Promise<Measurement> {
    const usage = await this.backend.usage(name);
    const measurement = { ...usage, measuredAt: new Date().toISOString() };
    this.measurements.set(name, measurement);
    return measurement;
  }

  forget(name: string): void {
    this.measurements.delete(name);
    this.queue.delete(name);
  }

  private schedule(name: string): void {
    this.queue.add(name);
    if (!this.draining) void this.drain();
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      for (let name = first(this.queue); name !== undefined; name = first(this.queue)) {
        this.queue.delete(name);
        await this.measure(name).catch((error: unknown) => this.log.debug({ err: error, volume: name }, 'usage measurement failed'));
      }
    } finally {
      this.draining = false;
    }
  }
}

function first(set: Set<string>): string | undefined {
  return set.values().next().value;
}
