import { errorMessage, isBerthError } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import type { Lease, StateStore } from '../../plugins/state/state-store.js';

/**
 * The lease this agent's owner claims live under. Renewed at a third of its TTL; when it expired anyway
 * (the store was out of reach longer than the TTL) a new one is granted and `onRenewed` re-attaches the
 * claims the records still give this host. `healthy` turns false once no renewal succeeded for a TTL:
 * other hosts may then have taken this host's volumes over, so nothing new is published as owner.
 */
export class OwnershipLease {
  private lease: Lease | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastRenewal = 0;
  private stopped = false;
  private failing = false;

  constructor(
    private readonly store: StateStore,
    private readonly ttlSeconds: number,
    private readonly onRenewed: (lease: Lease) => Promise<void>,
    private readonly log: Logger,
  ) {}

  async start(): Promise<Lease> {
    const lease = await this.store.grantLease(this.ttlSeconds);
    this.lease = lease;
    this.lastRenewal = Date.now();
    this.schedule();
    return lease;
  }

  current(): Lease {
    if (!this.lease) throw new Error('ownership lease used before start');
    return this.lease;
  }

  get healthy(): boolean {
    return Date.now() - this.lastRenewal < this.ttlSeconds * 1000;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.renew(), Math.max(300, (this.ttlSeconds * 1000) / 3));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      try {
        await this.current().keepAlive();
      } catch (error) {
        if (!isBerthError(error, 'ERR_LEASE_NOT_FOUND')) throw error;
        this.log.warn('ownership lease expired while the store was out of reach; claiming owned volumes again');
        this.lease = await this.store.grantLease(this.ttlSeconds);
        await this.onRenewed(this.lease);
      }
      this.lastRenewal = Date.now();
      if (this.failing) this.log.info('ownership lease renewed');
      this.failing = false;
    } catch (error) {
      if (!this.failing) this.log.warn({ err: errorMessage(error) }, 'cannot renew the ownership lease; retrying');
      this.failing = true;
    }
    this.schedule();
  }
}
