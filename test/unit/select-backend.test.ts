import { expect } from 'chai';
import { BtrfsBackend, isOnBtrfs } from '../../volume-driver/storage/btrfs-backend.js';
import { DirBackend } from '../../volume-driver/storage/dir-backend.js';
import { selectBackend } from '../../volume-driver/storage/select-backend.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { makeTempDir } from '../helpers/temp-dir.js';

// The btrfs data-root case needs a real btrfs mount: test/integration/btrfs-backend.test.ts.
describe('selectBackend', () => {
  let temp: { path: string; dispose(): Promise<void> };

  beforeEach(async () => {
    temp = await makeTempDir('berth-select-');
    if (await isOnBtrfs(temp.path)) throw new Error(`${temp.path} is on btrfs; these cases need a data root that is not`);
  });

  afterEach(() => temp.dispose());

  it('picks dir for auto on a data root that is not on btrfs, and for dir', async () => {
    for (const backend of ['auto', 'dir'] as const) {
      const selected = await selectBackend({ backend, root: temp.path, poolSize: 1024 ** 3 });
      expect(selected).to.be.instanceOf(DirBackend);
      expect(selected.capabilities).to.deep.equal({ instantSnapshots: false, sizeLimit: false });
    }
  });

  it('picks btrfs for auto and btrfs when a pool is configured, creating nothing before prepare', async () => {
    for (const backend of ['auto', 'btrfs'] as const) {
      const selected = await selectBackend({ backend, root: temp.path, btrfsPool: `${temp.path}/pool.img`, poolSize: 1024 ** 3 });
      expect(selected).to.be.instanceOf(BtrfsBackend);
      expect(selected.path('v')).to.equal(`${temp.path}/pool/volumes/v`);
    }
  });

  it('refuses btrfs without a pool or a btrfs data root, saying what to do', async () => {
    const error = await expectBerthError(selectBackend({ backend: 'btrfs', root: temp.path, poolSize: 1024 ** 3 }), 'ERR_INVALID_CONFIG');
    expect(error.message).to.include(temp.path).and.include('--btrfs-pool FILE').and.include('btrfs');
  });

  it('keeps serving the backend that made the volumes of the data root', async () => {
    const pool = { backend: 'auto' as const, root: temp.path, btrfsPool: `${temp.path}/pool.img`, poolSize: 1024 ** 3 };
    expect(await selectBackend(pool, undefined, new Set(['dir']))).to.be.instanceOf(DirBackend);
    const explicit = await expectBerthError(selectBackend({ ...pool, backend: 'btrfs' }, undefined, new Set(['dir'])), 'ERR_INVALID_CONFIG');
    expect(explicit.message).to.equal(`data root ${temp.path} holds dir volumes; --backend btrfs cannot serve them (use --backend auto or dir)`);
    const lostPool = await expectBerthError(selectBackend({ backend: 'auto', root: temp.path, poolSize: 1024 ** 3 }, undefined, new Set(['btrfs'])), 'ERR_INVALID_CONFIG');
    expect(lostPool.message).to.contain('holds btrfs volumes but neither --btrfs-pool is set');
  });
});
