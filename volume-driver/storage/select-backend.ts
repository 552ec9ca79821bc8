import type { AgentConfig } from '../../plugins/config/agent-config.js';
import { BerthError } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import { BtrfsBackend, isOnBtrfs } from './btrfs-backend.js';
import { DirBackend } from './dir-backend.js';
import type { StorageBackend } from './storage-backend.js';

export type BackendSelection = Pick<AgentConfig, 'backend' | 'root' | 'btrfsPool' | 'poolSize'>;

/**
 * `auto` picks btrfs when a pool is configured or the data root is on btrfs, else dir; `btrfs`
 * without either is a configuration error. The choice and its reason are logged once.
 * The backend is not prepared yet (the pool is created and mounted by `prepare()`).
 */
export async function selectBackend(config: BackendSelection, log?: Logger, existingKinds: ReadonlySet<string> = new Set()): Promise<StorageBackend> {
  const { backend: choice, root, btrfsPool } = config;
  const pool = btrfsPool === undefined ? undefined : { file: btrfsPool, sizeBytes: config.poolSize };
  // Volumes already on this data root decide: one data root is served by one backend.
  if (existingKinds.size > 1) throw new BerthError('ERR_INVALID_CONFIG', `data root ${root} holds volumes of several backends (${[...existingKinds].join(', ')}); this version serves one backend per data root`);
  const existing = [...existingKinds][0] as 'dir' | 'btrfs' | undefined;
  if (existing !== undefined && choice !== 'auto' && choice !== existing) {
    throw new BerthError('ERR_INVALID_CONFIG', `data root ${root} holds ${existing} volumes; --backend ${choice} cannot serve them (use --backend auto or ${existing})`);
  }
  let kind: 'dir' | 'btrfs';
  let reason: string;
  if (existing === 'dir') {
    [kind, reason] = ['dir', `data root ${root} already holds dir volumes`];
  } else if (existing === 'btrfs' && !pool && !(await isOnBtrfs(root))) {
    throw new BerthError('ERR_INVALID_CONFIG', `data root ${root} holds btrfs volumes but neither --btrfs-pool is set nor is the data root on btrfs`);
  } else if (choice === 'dir') {
    [kind, reason] = ['dir', 'configured'];
  } else if (pool) {
    [kind, reason] = ['btrfs', `pool ${pool.file} mounted at ${root}/pool`];
  } else if (await isOnBtrfs(root)) {
    [kind, reason] = ['btrfs', `data root ${root} is on btrfs`];
  } else if (choice === 'btrfs') {
    throw new BerthError('ERR_INVALID_CONFIG', `the btrfs backend needs a btrfs filesystem, and data root ${root} is not on one; use --btrfs-pool FILE (a pool file the agent creates and loop-mounts) or put the data root on btrfs`);
  } else {
    [kind, reason] = ['dir', `data root ${root} is not on btrfs and no --btrfs-pool is set`];
  }
  log?.info({ backend: kind, requested: choice, reason }, 'storage backend selected');
  const backendLog = log?.child({ backend: kind });
  const logOption = backendLog ? { log: backendLog } : {};
  return kind === 'dir' ? new DirBackend(root, logOption) : new BtrfsBackend({ root, ...(pool ? { pool } : {}), ...logOption });
}
