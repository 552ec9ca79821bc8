import type { AgentConfig } from '../plugins/config/agent-config.js';
import { BerthError } from '../plugins/errors/berth-error.js';
import { PeerClient, type PeerTarget } from '../plugins/peer/peer-client.js';
import { PeerServer } from '../plugins/peer/peer-server.js';
import { loadPeerTls } from '../plugins/peer/peer-tls.js';
import { createReplicationPeerRoutes } from '../volume-driver/replication/replication-peer-routes.js';
import type { Engine } from '../plugins/engine/engine.js';
import type { Logger } from '../plugins/logging/logger.js';
import type { AdminRoute } from '../plugins/server/admin-app.js';
import type { StateStore } from '../plugins/state/state-store.js';
import { ClusterVolumeRepository } from '../volume-driver/replication/cluster-volume-repository.js';
import { ClusteredVolumes } from '../volume-driver/replication/clustered-volumes.js';
import type { LiveHosts, PeerLink, VerifiedStream } from '../volume-driver/replication/peer-link.js';
import { createReplicationAdminRoutes } from '../volume-driver/replication/replication-admin-routes.js';
import { ReplicationService } from '../volume-driver/replication/replication-service.js';
import type { StorageBackend } from '../volume-driver/storage/storage-backend.js';
import type { VolumeService } from '../volume-driver/volume-service.js';

/** The engine gives a Mount 2 minutes; a catch-up must give up cleanly well before. */
const CATCH_UP_BUDGET_MS = 90_000;
const FINAL_SHIP_WAIT_MS = 30_000;
export const DEFAULT_REPLICATE_EVERY_MS = 1000;
const HANDOFF_HOLD_MS = 120_000;

/** Live hosts with where their peer port listens (the host registry's records). */
export type PeerDirectory = () => ReadonlyMap<string, { readonly address?: string; readonly peerPort?: number }>;

export interface ReplicationStackParts {
  readonly config: AgentConfig;
  readonly store: StateStore;
  readonly volumes: VolumeService;
  readonly backend: StorageBackend;
  readonly engine: Engine;
  readonly directory: PeerDirectory;
  readonly log: Logger;
}

/** PeerLink over the authenticated peer port, finding hosts through the registry. */
class RegisteredPeers implements PeerLink {
  constructor(
    private readonly client: PeerClient,
    private readonly directory: PeerDirectory,
  ) {}

  json<T>(host: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    return this.client.json<T>(this.target(host), method, path, body);
  }

  stream(host: string, path: string): Promise<VerifiedStream> {
    return this.client.stream(this.target(host), path);
  }

  private target(host: string): PeerTarget {
    const record = this.directory().get(host);
    if (!record?.address || !record.peerPort) throw new BerthError('ERR_PEER_UNAVAILABLE', `host ${host} is not alive or has no peer port (start its agent with --pki-dir and --advertise-addr)`);
    return { host, address: record.address, port: record.peerPort };
  }
}

/** Volumes on a shared etcd: cluster-wide names, ownership, replicas. Started after the host registry. */
export class ReplicationStack {
  private constructor(
    readonly service: ReplicationService,
    readonly volumes: ClusteredVolumes,
    readonly adminRoutes: readonly AdminRoute[],
    private readonly peerServer: PeerServer | undefined,
    private readonly peerClient: PeerClient | undefined,
  ) {}

  /** Checks the peer certificates before anything else starts: a bad one fails the start with its reason. */
  static loadTls(config: AgentConfig): ReturnType<typeof loadPeerTls> | undefined {
    return config.pkiDir === undefined ? undefined : loadPeerTls(config.pkiDir, config.hostName);
  }

  static async start(parts: ReplicationStackParts, tls: Awaited<ReturnType<typeof loadPeerTls>> | undefined): Promise<ReplicationStack> {
    const { config, log } = parts;
    const live: LiveHosts = { liveHostNames: () => new Set(parts.directory().keys()) };
    const peerClient = tls ? new PeerClient(tls) : undefined;
    const peers = peerClient ? new RegisteredPeers(peerClient, parts.directory) : undefined;
    const service = new ReplicationService({
      repo: new ClusterVolumeRepository(parts.store),
      volumes: parts.volumes,
      ...(parts.backend.replication ? { chain: parts.backend.replication } : {}),
      backendKind: parts.backend.kind,
      ...(peers ? { peers } : {}),
      live,
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
        replaceReplicasAfterMs: config.replaceReplicasAfterMs,
      },
    });
    await service.start();
    let peerServer: PeerServer | undefined;
    if (tls) {
      peerServer = new PeerServer(tls, createReplicationPeerRoutes(service), { host: config.advertiseAddr ?? '0.0.0.0', port: config.peerPort }, log.child({ component: 'peer-port' }));
      await peerServer.start();
      log.info({ address: config.advertiseAddr ?? '0.0.0.0', port: peerServer.port }, 'peer port listening (mutual TLS)');
    }
    const volumes = new ClusteredVolumes(parts.volumes, service, parts.backend, live, config.hostName, log.child({ component: 'volumes' }));
    if (service.unavailableReason) log.info({ reason: service.unavailableReason }, 'volumes stay on the host that made them: replication is not available');
    return new ReplicationStack(service, volumes, createReplicationAdminRoutes(service), peerServer, peerClient);
  }

  async stop(): Promise<void> {
    await this.peerServer?.close();
    await this.service.stop();
    this.peerClient?.close();
  }
}
