import { BerthError, errorMessage, isBerthError } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import type { Lease } from '../../plugins/state/state-store.js';
import type { ClusterView } from './cluster-view.js';
import type { HostRecord, MemberRecord } from './network-records.js';

export interface HostRegistrySettings {
  /** Lease TTL: how long after its agent stops the other hosts consider this host dead. */
  readonly ttlSeconds: number;
  readonly address?: string;
  readonly peerPort?: number;
  readonly version: string;
}

/**
 * Keeps this host registered under a lease (cluster/hosts/<name>), renewed at a third of the TTL, and its
 * membership record (cluster/members/<name>) with the last time it was seen alive. When the store is
 * unreachable it keeps retrying; when the lease expired meanwhile (store back after a long outage) it
 * registers again under a new lease.
 */
export class HostRegistry {
  private lease: Lease | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly startedAt = new Date().toISOString();
  private lastMemberWrite = 0;
  private failing = false;

  constructor(
    private readonly view: ClusterView,
    private readonly settings: HostRegistrySettings,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    // Two agents under one name would take each other's endpoints for their own.
    const existing = this.view.liveHosts().get(this.view.hostName);
    if (existing && existing.address !== this.settings.address) {
      throw new BerthError(
        'ERR_INVALID_CONFIG',
        `host name ${this.view.hostName} is registered by a live agent at ${existing.address ?? 'an unknown address'}; give every host a unique --host-name`,
      );
    }
    await this.register();
    this.schedule();
  }

  /** Revokes the lease: other hosts see this one leave at once instead of after the TTL. */
  async stop(options: { revoke: boolean }): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (options.revoke) await this.lease?.revoke().catch(() => undefined);
  }

  private async register(): Promise<void> {
    const lease = await this.view.repository.store.grantLease(this.settings.ttlSeconds);
    const record: HostRecord = {
      name: this.view.hostName,
      version: this.settings.version,
      startedAt: this.startedAt,
      ...(this.settings.address ? { address: this.settings.address } : {}),
      ...(this.settings.peerPort ? { peerPort: this.settings.peerPort } : {}),
    };
    await this.view.repository.registerHost(record, lease);
    this.lease = lease;
    await this.touchMember(true);
  }

  private async touchMember(force: boolean): Promise<void> {
    const now = Date.now();
    if (!force && now - this.lastMemberWrite < 30_000) return;
    const existing = this.view.members().find((member) => member.name === this.view.hostName);
    const record: MemberRecord = {
      name: this.view.hostName,
      firstSeen: existing?.firstSeen ?? new Date(now).toISOString(),
      lastSeen: new Date(now).toISOString(),
      ...(this.settings.address ? { address: this.settings.address } : {}),
    };
    await this.view.repository.putMember(record);
    this.lastMemberWrite = now;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.renew(), Math.max(500, (this.settings.ttlSeconds * 1000) / 3));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      try {
        await this.lease!.keepAlive();
      } catch (error) {
        if (!isBerthError(error, 'ERR_LEASE_NOT_FOUND')) throw error;
        this.log.warn('host lease expired while the store was out of reach; registering again');
        await this.register();
      }
      await this.touchMember(false);
      if (this.failing) this.log.info('host registration renewed');
      this.failing = false;
    } catch (error) {
      if (!this.failing) this.log.warn({ err: errorMessage(error) }, 'cannot renew host registration; retrying');
      this.failing = true;
    }
    this.schedule();
  }
}
