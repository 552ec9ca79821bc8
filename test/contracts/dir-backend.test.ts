import { DirBackend } from '../../volume-driver/storage/dir-backend.js';
import { checkCommand } from '../helpers/run-command.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { describeStorageBackendContract } from './storage-backend-contract.js';

describeStorageBackendContract('DirBackend', async () => {
  const temp = await makeTempDir('berth-dir-backend-');
  const backend = new DirBackend(temp.path);
  await backend.prepare();
  return {
    backend,
    layout: backend.layout,
    reopen: async () => new DirBackend(temp.path),
    copyTree: async (from, to) => {
      await checkCommand(['cp', '-a', '--no-target-directory', from, to]);
    },
    dispose: () => temp.dispose(),
  };
});
