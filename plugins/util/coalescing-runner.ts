/**
 * Runs one task again and again on demand, never two at once: requests made while it runs collapse into
 * one more run afterwards. A short delay before each run gathers a burst of changes (a watch delivering
 * many events) into one pass.
 */
export class CoalescingRunner {
  private running = false;
  private requested = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly task: () => Promise<void>,
    private readonly delayMs = 10,
  ) {}

  request(): void {
    if (this.stopped) return;
    this.requested = true;
    if (!this.running && !this.timer) this.timer = setTimeout(() => void this.drain(), this.delayMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    if (!this.running) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  /** Resolves once no run is in progress or requested. */
  idle(): Promise<void> {
    if (!this.running && !this.requested) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    this.timer = undefined;
    this.running = true;
    try {
      while (this.requested && !this.stopped) {
        this.requested = false;
        await this.task();
      }
    } finally {
      this.running = false;
      if (this.requested && !this.stopped) this.request();
      else for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }
}
