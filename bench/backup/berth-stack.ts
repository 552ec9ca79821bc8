// The volume driver's services wired as in the agent (agent/agent.ts), in-process, on a
// BtrfsBackend whose data root is on btrfs: what test/helpers/volume-stack.ts does with a
// DirBackend, without the plugin socket and without an engine (no container uses these volumes,
// so snapshots are taken with quiesce=none, as on a volume without containers).
import { createLogger } from '../../plugins/logging/logger.js';
import { FileStateStore } from '../../plugins/state/file-state-store.js';
import { KeyedMutex } from '../../plugins/util/keyed-mutex.js';
import { BackupService } from '../../volume-driver/backups/backup-service.js';
import { SnapshotService } from '../../volume-driver/snapshots/snapshot-service.js';
import { BtrfsBackend } from '../../volume-driver/storage/btrfs-backend.js';
import { UsageTracker } from '../../volume-driver/usage-tracker.js';
import { VolumeRepository } from '../../volume-driver/volume-repository.js';
import { VolumeService } from '../../volume-driver/volume-service.js';

export interface BerthStack {
  readonly backend: BtrfsBackend;
  readonly service: VolumeService;
  readonly snapshots: SnapshotService;
  readonly backups: BackupService;
  close(): Promise<void>;
}

/**
 * Opens the stack on data root `root` (on btrfs) with its state in `stateFile`. The state store
 * takes a file lock: one stack per state file at a time.
 */
export async function openBerthStack(root: string, stateFile: string): Promise<BerthStack> {
  const log = createLogger('silent');
  const store = await FileStateStore.open(stateFile);
  try {
    const repository = new VolumeRepository(store);
    const backend = new BtrfsBackend({ root, log });
    const locks = new KeyedMutex();
    const late: { backups?: BackupService } = {};
    const service = new VolumeService({
      repository,
      backend,
      usage: new UsageTracker(backend, log),
      log,
      locks,
      restoreBackup: (source, keyPath, destination) => late.backups!.restoreFromPath(source, keyPath, destination),
    });
    const snapshots = new SnapshotService({ repository, backend, locks, driverName: 'berth', log });
    const backups = new BackupService({ snapshots, volumes: service, log, agentVersion: 'bench' });
    late.backups = backups;
    await service.recover(); // prepares the backend, as the agent does at start
    return { backend, service, snapshots, backups, close: () => store.close() };
  } catch (error) {
    await store.close().catch(() => undefined);
    throw error;
  }
}
