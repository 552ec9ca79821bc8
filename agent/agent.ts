import { mkdir } from 'node:fs/promises';
import { singleHostStorePath, type AgentConfig } from '../plugins/config/agent-config.js';
import { adminSocketPath, pluginSocketPath } from '../plugins/config/plugin-name.js';
import { DockerEngine } from '../plugins/engine/docker-engine.js';
import { BerthError, errorMessage, isBerthError } from '../plugins/errors/berth-error.js';
import type { Logger } from '../plugins/logging/logger.js';
import { createAdminApp } from '../plugins/server/admin-app.js';
import { createPluginApp } from '../plugins/server/plugin-app.js';
import { SocketHttpServer } from '../plugins/server/socket-http-server.js';
import { socketIsLive } from '../plugins/server/unix-socket.js';
import { EtcdStateStore } from '../plugins/state/etcd-state-store.js';
import { FileStateStore } from '../plugins/state/file-state-store.js';
import type { StateStore } from '../plugins/state/state-store.js';
import { BERTH_VERSION } from '../plugins/version.js';
import { KeyedMutex } from '../plugins/util/keyed-mutex.js';
import { createBackupAdminRoutes } from '../volume-driver/backups/backup-admin-routes.js';
import { BackupService } from '../volume-driver/backups/backup-service.js';
import { createSnapshotAdminRoutes } from '../volume-driver/snapshots/snapshot-admin-routes.js';
import { SnapshotScheduler } from '../volume-driver/snapshots/snapshot-scheduler.js';
import { SnapshotService } from '../volume-driver/snapshots/snapshot-service.js';
import { MountReconciler, type ReconcileReport } from '../volume-driver/mount-reconciler.js';
import { selectBackend } from '../volume-driver/storage/select-backend.js';
import { UsageTracker } from '../volume-driver/usage-tracker.js';
import { createVolumeAdminRoutes } from '../volume-driver/volume-admin-routes.js';
import { createVolumePluginApi } from '../volume-driver/volume-plugin-api.js';
import { VolumeRepository } from '../volume-driver/volume-repository.js';
import { VolumeService } from '../volume-driver/volume-service.js';
import { ClusterVolumeRepository } from '../volume-driver/replication/cluster-volume-repository.js';
import { createReplicationAdminRoutes } from '../volume-driver/replication/replication-admin-routes.js';
import type { VolumeDriverOps } from '../volume-driver/volume-driver-ops.js';
import { runDoctor } from './doctor.js';
import { importSingleHostVolumes } from './single-host-import.js';
import { NetworkStack } from './network-stack.js';
import { ReplicationStack } from './replication-stack.js';

const RECONCILE_INTERVAL_MS = 60_000;

/**
 * The composition root: builds every service from the frozen config and owns their lifetime.
 * It lives outside plugins/ because it wires the drivers, and plugins/ must not import them.
 */
export class Agent {
  private pluginServer?: SocketHttpServer;
  private adminServer?: SocketHttpServer;
  private store?: StateStore;
  private scheduler?: SnapshotScheduler;
  private network?: NetworkStack;
  private replication?: ReplicationStack;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private lastReconcile: { at: string; report?: ReconcileReport; error?: string } | undefined;
  private readonly startedAt = new Date();

  constructor(
    private readonly config: AgentConfig,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const { config, log } = this;
    const pluginSocket = pluginSocketPath(config.pluginDir, config.name);
    // Refuse before touching any state: a live agent already serves this plugin name.
    if (await socketIsLive(pluginSocket)) {
      throw new BerthError('ERR_SOCKET_IN_USE', `another agent is serving ${pluginSocket}; stop it first or choose another --name`);
    }
    const peerTls = config.store.kind === 'etcd' ? await ReplicationStack.loadTls(config) : undefined;
    if (config.pkiDir !== undefined && config.store.kind !== 'etcd') log.warn('pki-dir is ignored on the single-host file store: there are no other hosts to talk to');
    await mkdir(config.root, { recursive: true, mode: 0o700 });
    // A watch that cannot resume (etcd compacted the revision it needed while unreachable) stops: the network
    // state mirrors then list and watch again.
    const onCompacted: { restart?: () => void } = {};
    const onWatchError = (error: unknown): void => {
      if (isBerthError(error, 'ERR_STATE_COMPACTED')) onCompacted.restart?.();
      else log.warn({ err: errorMessage(error) }, 'state store watch interrupted; it keeps retrying');
    };
    const store =
      config.store.kind === 'etcd' ? await EtcdStateStore.open(config.store.endpoints, { onWatchError }) : await FileStateStore.open(singleHostStorePath(config));
    this.store = store;

    // On a shared etcd every host keeps its own volumes: their data lives on that host.
    const repository = new VolumeRepository(store, config.store.kind === 'etcd' ? `hosts/${config.hostName}/` : '');
    // A host that ran alone brings its volumes along when it joins a cluster.
    if (config.store.kind === 'etcd') await importSingleHostVolumes(singleHostStorePath(config), repository, new ClusterVolumeRepository(store), config.hostName, log.child({ component: 'volumes' }));
    const existingKinds = new Set((await repository.list()).map(({ record }) => record.backend));
    const backend = await selectBackend(config, log.child({ component: 'storage' }), existingKinds);
    const engine = new DockerEngine(config.dockerHost);
    const reconciler = new MountReconciler(repository, engine, config.name, log.child({ component: 'mount-reconciler' }));
    const locks = new KeyedMutex();
    // The two services need each other: restores create volumes, `from-backup` volumes restore.
    const late: { backups?: BackupService } = {};
    const volumes = new VolumeService({
      repository,
      locks,
      restoreBackup: (source, keyPath, destination) => late.backups!.restoreFromPath(source, keyPath, destination),
      backend,
      usage: new UsageTracker(backend, log.child({ component: 'usage' })),
      reconciler,
      log: log.child({ component: 'volumes' }),
      // On a shared store ClusteredVolumes decides; a single host has no other host to keep copies on.
      ...(config.store.kind === 'etcd' ? {} : { replicasUnavailable: 'a shared etcd store (--store etcd://...) with the btrfs backend and the peer port on every host' }),
    });
    const snapshots = new SnapshotService({ repository, backend, locks, engine, driverName: config.name, log: log.child({ component: 'snapshots' }) });
    this.scheduler = new SnapshotScheduler(repository, snapshots, log.child({ component: 'snapshot-schedule' }));
    const backups = new BackupService({ snapshots, volumes, log: log.child({ component: 'backups' }), agentVersion: BERTH_VERSION });
    late.backups = backups;
    const recovered = await volumes.recover();
    const leftovers = await snapshots.removeLeftovers('backup');
    if (leftovers.length > 0) log.warn({ snapshots: leftovers }, 'removed snapshots of backups a crash interrupted');
    log.info({ ...recovered, backend: backend.kind }, 'volume state recovered');

    const network = await NetworkStack.start(config, store, engine, locks, log.child({ component: 'network' }), peerTls ? config.peerPort : undefined);
    this.network = network;
    let volumeOps: VolumeDriverOps = volumes;
    if (config.store.kind === 'etcd') {
      this.replication = await ReplicationStack.start({ config, store, volumes, backend, engine, directory: () => network.liveHosts(), log }, peerTls);
      volumeOps = this.replication.volumes;
    }
    const replication = this.replication;
    onCompacted.restart = () => {
      void network.restartWatches();
      void replication?.service.restartWatch();
    };

    this.pluginServer = new SocketHttpServer(
      { path: pluginSocket, socketMode: 0o660, directoryMode: 0o755 },
      createPluginApp([createVolumePluginApi(volumeOps), ...network.pluginApis], log.child({ socket: 'plugin' }), config.bodyLimitBytes),
    );
    const adminRoutes = [
      ...network.adminRoutes,
      ...createVolumeAdminRoutes(volumeOps),
      ...(replication?.adminRoutes ?? createReplicationAdminRoutes(undefined)),
      ...createSnapshotAdminRoutes(snapshots),
      ...createBackupAdminRoutes(backups),
      {
        method: 'GET' as const,
        path: '/v1/status',
        handler: async () => {
          const all = await volumes.list();
          const engineState = await engine.info().then(
            (info) => ({ endpoint: engine.endpoint, reachable: true, version: info.version }),
            (error: unknown) => ({ endpoint: engine.endpoint, reachable: false, error: errorMessage(error) }),
          );
          return {
            name: config.name,
            version: BERTH_VERSION,
            pid: process.pid,
            startedAt: this.startedAt.toISOString(),
            uptimeSeconds: Math.round((Date.now() - this.startedAt.getTime()) / 1000),
            root: config.root,
            store: store.description,
            hostName: config.hostName,
            backend: backend.kind,
            pluginSocket,
            adminSocket: adminSocketPath(config.runDir, config.name),
            volumes: { total: all.length, mounted: all.filter((volume) => volume.mountCount > 0).length },
            engine: engineState,
            network: network.status(),
            lastReconcile: this.lastReconcile ?? null,
          };
        },
      },
      { method: 'GET' as const, path: '/v1/metrics', handler: async () => ({ samples: (await replication?.service.metrics()) ?? [] }) },
      {
        method: 'GET' as const,
        path: '/v1/doctor',
        handler: async () => ({ checks: await runDoctor({ config, store, engine, backend, volumes, reconciler }) }),
      },
    ];
    this.adminServer = new SocketHttpServer(
      { path: adminSocketPath(config.runDir, config.name), socketMode: 0o600, directoryMode: 0o700 },
      createAdminApp(adminRoutes, log.child({ socket: 'admin' }), config.bodyLimitBytes),
    );
    await this.adminServer.start();
    await this.pluginServer.start();
    log.info({ pluginSocket, adminSocket: this.adminServer.path, version: BERTH_VERSION }, 'agent serving');

    this.scheduleReconcile(reconciler, 0);
    this.scheduler.start();
  }

  /** Graceful stop: in-flight requests finish, sockets are unlinked, the store is flushed. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.reconcileTimer);
    this.scheduler?.stop();
    await Promise.all([this.pluginServer?.close(), this.adminServer?.close()]);
    await this.replication?.stop();
    await this.network?.stop();
    await this.store?.close();
    this.log.info('agent stopped');
  }

  /** Releases mounts lost while the agent or the engine was down; retries until the engine answers. */
  private scheduleReconcile(reconciler: MountReconciler, delayMs: number, failures = 0): void {
    if (this.stopping) return;
    this.reconcileTimer = setTimeout(async () => {
      let next = RECONCILE_INTERVAL_MS;
      let failed = 0;
      try {
        const report = await reconciler.reconcile();
        this.lastReconcile = { at: new Date().toISOString(), report };
      } catch (error) {
        this.lastReconcile = { at: new Date().toISOString(), error: errorMessage(error) };
        if (isBerthError(error, 'ERR_ENGINE_UNAVAILABLE')) {
          failed = failures + 1;
          next = Math.min(1000 * 2 ** failures, 15_000);
          if (failures === 0) this.log.warn({ err: errorMessage(error) }, 'engine not reachable yet; recorded mounts kept until it answers');
        } else {
          this.log.error({ err: error }, 'mount reconciliation failed');
        }
      }
      this.scheduleReconcile(reconciler, next, failed);
    }, delayMs);
    this.reconcileTimer.unref();
  }
}
