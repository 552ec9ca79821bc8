import type { AgentConfig } from '../plugins/config/agent-config.js';
import type { Engine } from '../plugins/engine/engine.js';
import type { Logger } from '../plugins/logging/logger.js';
import type { AdminRoute } from '../plugins/server/admin-app.js';
import type { StateStore } from '../plugins/state/state-store.js';
import { ClusterVolumeRepository } from '../volume-driver/replication/cluster-volume-repository.js';
import { ClusteredVolumes } from '../volume-driver/replication/clustered-volumes.js';
import type { LiveHosts, PeerLink } from '../volume-driver/replication/peer-link.js';
import { createReplicationAdminRoutes } from '../volume-driver/replication/replication-admin-routes.js';
import { ReplicationService } from '../volume-driver/replication/replication-service.js';
import type { StorageBackend } from '../volume-driver/storage/storage-backend.js';
import type { VolumeService } from '../volume-driver/volume-service.js';

/** The engine gives a Mount 2 minutes; a catch-up must give up cleanly well before. */
const CATCH_UP_BUDGET_MS = 90_000;
const FINAL_SHIP_WAIT_MS = 30_000;
const DEFAULT_REPLICATE_EVERY_MS = 2000;
const HANDOFF_HOLD_MS = 120_000;

export interface ReplicationStackParts {
  readonly config: AgentConfig;
  readonly store: StateStore;
  readonly volumes: VolumeService;
  readonly backend: StorageBackend;
  readonly engine: Engine;
  readonly live: LiveHosts;
  readonly peers?: PeerLink;
  readonly log: Logger;
}

/** Volumes on a shared etcd: cluster-wide names, ownership, replicas. Started after the host registry. */
export class ReplicationStack {
  private constructor(
    readonly service: ReplicationService,
    readonly volumes: ClusteredVolumes,
    readonly adminRoutes: readonly AdminRoute[],
  ) {}

  static async start(parts: ReplicationStackParts): Promise<ReplicationStack> {
    const { config, log } = parts;
    const service = new ReplicationService({
      repo: new ClusterVolumeRepository(parts.store),
      volumes: parts.volumes,
      ...(parts.backend.replication ? { chain: parts.backend.replication } : {}),
      backendKind: parts.backend.kind,
      ...(parts.peers ? { peers: parts.peers } : {}),
      live: parts.live,
      engine: parts.engine,
      driverName: config.name,
      log: log.child({ component: 'replication' }),
      settings: {
        hostName: config.hostName,
        leaseTtlSeconds: config.hostTtlSeconds,
        catchUpBudgetMs: CATCH_UP_BUDGET_MS,
        finalShipWaitMs: FINAL_SHIP_WAIT_MS,
        defaultIntervalMs: DEFAULT_REPLICATE_EVERY_MS,
        handoffHoldMs: HANDOFF_HOLD_MS,
      },
    });
    await service.start();
    const volumes = new ClusteredVolumes(parts.volumes, service, parts.backend, parts.live, config.hostName, log.child({ component: 'volumes' }));
    if (service.unavailableReason) log.info({ reason: service.unavailableReason }, 'volumes stay on the host that made them: replication is not available');
    return new ReplicationStack(service, volumes, createReplicationAdminRoutes(service));
  }

  stop(): Promise<void> {
    return this.service.stop();
  }
}
