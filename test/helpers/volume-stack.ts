import { join } from 'node:path';
import { singleHostStorePath } from '../../plugins/config/agent-config.js';
import { createLogger } from '../../plugins/logging/logger.js';
import { createPluginApp } from '../../plugins/server/plugin-app.js';
import { SocketHttpServer } from '../../plugins/server/socket-http-server.js';
import { FileStateStore } from '../../plugins/state/file-state-store.js';
import { KeyedMutex } from '../../plugins/util/keyed-mutex.js';
import { BackupService } from '../../volume-driver/backups/backup-service.js';
import { SnapshotService } from '../../volume-driver/snapshots/snapshot-service.js';
import { MountReconciler } from '../../volume-driver/mount-reconciler.js';
import { DirBackend } from '../../volume-driver/storage/dir-backend.js';
import { UsageTracker } from '../../volume-driver/usage-tracker.js';
import { createVolumePluginApi } from '../../volume-driver/volume-plugin-api.js';
import { VolumeRepository } from '../../volume-driver/volume-repository.js';
import { VolumeService } from '../../volume-driver/volume-service.js';
import { FakeEngine } from './fake-engine.js';
import { makeTempDir } from './temp-dir.js';

/** The volume driver wired as in the agent, on a real store, real directories and a real socket. */
export interface VolumeStack {
  readonly root: string;
  readonly socket: string;
  readonly store: FileStateStore;
  readonly repository: VolumeRepository;
  readonly backend: DirBackend;
  readonly engine: FakeEngine;
  readonly service: VolumeService;
  readonly snapshots: SnapshotService;
  readonly backups: BackupService;
  /** Stops serving and closes the store, keeping the files (to simulate a restart). */
  stop(): Promise<void>;
  dispose(): Promise<void>;
}

export async function startVolumeStack(existingRoot?: string): Promise<VolumeStack> {
  const temp = existingRoot ? undefined : await makeTempDir('berth-vol-');
  const root = existingRoot ?? temp!.path;
  const log = createLogger('silent');
  const store = await FileStateStore.open(singleHostStorePath({ root }));
  const repository = new VolumeRepository(store);
  const backend = new DirBackend(root);
  const engine = new FakeEngine();
  const reconciler = new MountReconciler(repository, engine, 'berth', log);
  const locks = new KeyedMutex();
  const late: { backups?: BackupService } = {};
  const service = new VolumeService({
    repository,
    backend,
    usage: new UsageTracker(backend, log),
    reconciler,
    log,
    locks,
    engineCheckTimeoutMs: 1000,
    restoreBackup: (source, keyPath, destination) => late.backups!.restoreFromPath(source, keyPath, destination),
  });
  const snapshots = new SnapshotService({ repository, backend, locks, engine, driverName: 'berth', log, unmountWaitMs: 2000 });
  const backups = new BackupService({ snapshots, volumes: service, log, agentVersion: 'test' });
  late.backups = backups;
  await service.recover();
  const socket = join(root, 'p.sock');
  const server = new SocketHttpServer({ path: socket, socketMode: 0o660, directoryMode: 0o755 }, createPluginApp([createVolumePluginApi(service)], log, 1024 * 1024));
  await server.start();
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await server.close(1000);
    await store.close();
  };
  return { root, socket, store, repository, backend, engine, service, snapshots, backups, stop, dispose: async () => (await stop(), await temp?.dispose()) };
}
