import type { BackendChoice } from '../../plugins/config/agent-config.js';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { DirBackend } from './dir-backend.js';
import type { StorageBackend } from './storage-backend.js';

/** `auto` picks the best backend the host offers; today that is `dir` everywhere. */
export async function selectBackend(choice: BackendChoice, root: string): Promise<StorageBackend> {
  if (choice === 'btrfs') throw new BerthError('ERR_INVALID_CONFIG', 'the btrfs backend is not available in this version; use --backend dir or auto');
  return new DirBackend(root);
}
