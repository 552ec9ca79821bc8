import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'chai';
import { BtrfsBackend, BTRFS_SUPER_MAGIC } from '../../volume-driver/storage/btrfs-backend.js';
import { selectBackend } from '../../volume-driver/storage/select-backend.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { disposeWithMounts, releaseMountsAndLoops } from '../helpers/loop-mounts.js';
import { readMounts } from '../helpers/mounts.js';
import { requirePrerequisites } from '../helpers/prerequisites.js';
import { checkCommand } from '../helpers/run-command.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { describeStorageBackendContract } from '../contracts/storage-backend-contract.js';
import { expectErrno, expectMissing } from '../helpers/fs-assertions.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const TOOLS = ['mkfs.btrfs', 'btrfs', 'losetup', 'mount', 'umount', 'chattr', 'blkid'];

/**
 * The btrfs backend on real btrfs: a pool file made by the test, loop-mounted in a temporary
 * directory, holds a data root per test (the "data root on btrfs" mode); the pool mode is tested
 * with pool files the backend creates and mounts itself. Everything is unmounted, every loop
 * device detached and every file deleted at the end, also when a test fails.
 */
describe('BtrfsBackend on loop-mounted btrfs', function () {
  this.timeout(300_000);

  let temp: { path: string; dispose(): Promise<void> } | undefined;
  let shared: string;
  let roots = 0;

  /** A fresh data root on the shared btrfs filesystem. */
  const freshRoot = async (): Promise<string> => {
    const root = join(shared, `root-${roots++}`);
    await mkdir(root);
    return root;
  };

  before(async () => {
    requirePrerequisites(TOOLS);
    temp = await makeTempDir('berth-btrfs-');
    const image = join(temp.path, 'shared.img');
    shared = join(temp.path, 'shared');
    await mkdir(shared);
    await checkCommand(['truncate', '-s', '8G', image]);
    await checkCommand(['mkfs.btrfs', '-q', image]);
    await checkCommand(['mount', '-o', 'loop', image, shared]);
  });

  after(async () => {
    if (!temp) return;
    const problems = await disposeWithMounts(temp);
    expect(problems, 'mounts or loop devices left behind').to.deep.equal([]);
  });

  describeStorageBackendContract('BtrfsBackend (data root on btrfs)', async () => {
    const root = await freshRoot();
    const backend = new BtrfsBackend({ root });
    await backend.prepare();
    return {
      backend,
      layout: backend.layout,
      reopen: async () => new BtrfsBackend({ root }),
      copyTree: async (from, to) => {
        await checkCommand(['btrfs', 'subvolume', 'snapshot', from, to]);
      },
      dispose: () => deleteTree(root),
    };
  });

  describe('btrfs specifics', () => {
    let root: string;
    let backend: BtrfsBackend;

    beforeEach(async () => {
      root = await freshRoot();
      backend = new BtrfsBackend({ root });
      await backend.prepare();
    });

    afterEach(async () => {
      await deleteTree(root);
    });

    it('makes every volume a subvolume and every snapshot a read-only subvolume snapshot', async () => {
      const path = await backend.create('v', {});
      expect((await lstat(path)).ino).to.equal(256);
      const snapshot = await backend.createSnapshot('v', 's');
      const shown = await checkCommand(['btrfs', 'subvolume', 'show', snapshot.path]);
      expect(shown.stdout).to.match(/Flags:\s+readonly/);
      expect(shown.stdout).to.match(/Parent UUID:\s+[0-9a-f-]{36}/);
      expect((await checkCommand(['btrfs', 'subvolume', 'show', path])).stdout).to.match(/Flags:\s+-/);
    });

    it('enforces the size option with a quota limit (EDQUOT), also after a restore and in a clone', async () => {
      const path = await backend.create('small', { sizeBytes: 8 * MiB });
      await writeFile(join(path, 'fits'), randomBytes(4 * MiB));
      await expectErrno(writeFile(join(path, 'too-big'), randomBytes(16 * MiB)), 'EDQUOT');
      await rm(join(path, 'too-big'), { force: true });
      expect(await maxReferenced(path)).to.equal(8 * MiB);
      await checkCommand(['btrfs', 'filesystem', 'sync', path]);
      const usage = await backend.usage('small');
      expect(usage.usedBytes).to.be.within(4 * MiB, 8 * MiB);
      expect(usage.files).to.equal(1);

      await backend.createSnapshot('small', 's');
      await backend.restoreSnapshot('small', 's');
      expect(await maxReferenced(path)).to.equal(8 * MiB);
      await expectErrno(writeFile(join(path, 'too-big'), randomBytes(16 * MiB)), 'EDQUOT');
      await rm(join(path, 'too-big'), { force: true });

      // The restored tree gets the volume's current limit, not the one its snapshot inherited.
      await checkCommand(['btrfs', 'qgroup', 'limit', String(32 * MiB), path]);
      await backend.restoreSnapshot('small', 's');
      expect(await maxReferenced(path)).to.equal(32 * MiB);
      await checkCommand(['btrfs', 'qgroup', 'limit', String(8 * MiB), path]);

      const clone = await backend.cloneSnapshot('small', 's', 'roomy', { sizeBytes: 64 * MiB });
      expect(await maxReferenced(clone)).to.equal(64 * MiB);
      await writeFile(join(clone, 'more'), randomBytes(16 * MiB));
      const unlimited = await backend.cloneSnapshot('small', 's', 'unlimited', {});
      expect(await maxReferenced(unlimited)).to.equal(undefined);
    });

    it('snapshots a 1 GiB volume instantly, sharing every extent with it', async () => {
      const path = await backend.create('big', {});
      const file = join(path, 'blob');
      const chunk = randomBytes(8 * MiB);
      const handle = await open(file, 'w');
      try {
        for (let written = 0; written < GiB; written += chunk.length) await handle.write(chunk);
      } finally {
        await handle.close();
      }
      await checkCommand(['btrfs', 'filesystem', 'sync', path]);

      const started = process.hrtime.bigint();
      const snapshot = await backend.createSnapshot('big', 's');
      const snapshotMs = Number(process.hrtime.bigint() - started) / 1e6;
      const restoreStarted = process.hrtime.bigint();
      await backend.restoreSnapshot('big', 's');
      const restoreMs = Number(process.hrtime.bigint() - restoreStarted) / 1e6;
      console.log(`      btrfs, 1 GiB volume: snapshot ${snapshotMs.toFixed(1)} ms, restore ${restoreMs.toFixed(1)} ms`);

      expect((await checkCommand(['btrfs', 'subvolume', 'show', snapshot.path])).stdout).to.match(/Flags:\s+readonly/);
      const du = await checkCommand(['btrfs', 'filesystem', 'du', '-s', '--raw', snapshot.path, path]);
      // Total, Exclusive, Set shared, Filename: the snapshot and the restored volume own nothing exclusively.
      for (const line of du.stdout.trim().split('\n').slice(1)) {
        const [total, exclusive, shared] = line.trim().split(/\s+/).map(Number);
        expect(total, line).to.be.at.least(GiB);
        expect(exclusive, line).to.equal(0);
        expect(shared, line).to.be.at.least(GiB);
      }
      expect((await stat(file)).size).to.equal(GiB);
    });

    it('deletes read-only snapshots and nested subvolumes wherever they are left', async () => {
      const path = await backend.create('v', {});
      await writeFile(join(path, 'f'), 'x');
      // A container may create subvolumes inside its volume.
      await checkCommand(['btrfs', 'subvolume', 'create', join(path, 'nested')]);
      await checkCommand(['btrfs', 'subvolume', 'create', join(path, 'nested', 'deeper')]);
      await backend.createSnapshot('v', 's');
      await checkCommand(['btrfs', 'subvolume', 'snapshot', '-r', path, join(backend.layout.trashDir, 'ro-leftover')]);
      await mkdir(join(backend.layout.stagingDir, 'holder'));
      await checkCommand(['btrfs', 'subvolume', 'snapshot', '-r', path, join(backend.layout.stagingDir, 'holder', 'ro')]);
      const again = new BtrfsBackend({ root });
      await again.prepare();
      expect(await readdir(backend.layout.trashDir)).to.deep.equal([]);
      expect(await readdir(backend.layout.stagingDir)).to.deep.equal([]);
      await again.remove('v');
      expect(await again.exists('v')).to.equal(false);
      expect(await readdir(join(backend.layout.snapshotsDir))).to.deep.equal([]);
      expect(await readdir(backend.layout.trashDir)).to.deep.equal([]);
    });

    it('refuses to snapshot a volume that is a plain directory', async () => {
      await mkdir(join(backend.layout.volumesDir, 'legacy'));
      const error = await expectBerthError(backend.createSnapshot('legacy', 's'), 'ERR_STORAGE');
      expect(error.message).to.include('legacy').and.include('not a btrfs subvolume');
    });

    it('reports a failing btrfs command once, as ERR_STORAGE naming the volume and keeping stderr', async () => {
      await backend.create('v', {});
      await backend.createSnapshot('v', 'first');
      const dir = join(backend.layout.snapshotsDir, 'v');
      await checkCommand(['chattr', '+i', dir]);
      try {
        const error = await expectBerthError(backend.createSnapshot('v', 'second'), 'ERR_STORAGE');
        expect(error.message).to.match(/^cannot snapshot volume v as second: btrfs subvolume snapshot -r /);
        expect(error.message).to.include('Operation not permitted');
        expect(error.details?.['stderr']).to.be.a('string').and.include('Operation not permitted');
      } finally {
        await checkCommand(['chattr', '-i', dir]);
      }
      expect((await backend.listSnapshots('v')).map((snapshot) => snapshot.name)).to.deep.equal(['first']);
    });

    it('is what `auto` and `btrfs` select on a btrfs data root', async () => {
      for (const choice of ['auto', 'btrfs'] as const) {
        const selected = await selectBackend({ backend: choice, root, poolSize: GiB });
        expect(selected.kind).to.equal('btrfs');
        expect(selected.capabilities).to.deep.equal({ instantSnapshots: true, sizeLimit: true });
      }
      expect((await selectBackend({ backend: 'dir', root, poolSize: GiB })).kind).to.equal('dir');
    });
  });

  describe('pool file', () => {
    let dir: string;

    beforeEach(async () => {
      if (!temp) throw new Error('no temporary directory');
      dir = join(temp.path, `pool-test-${roots++}`);
      await mkdir(dir);
    });

    afterEach(async () => {
      const problems = await releaseMountsAndLoops(dir);
      await rm(dir, { recursive: true, force: true });
      expect(problems, 'mounts or loop devices left behind').to.deep.equal([]);
    });

    it('creates a sparse pool, mounts it, re-mounts it after an unmount, and never re-formats it', async () => {
      const root = join(dir, 'root');
      const file = join(dir, 'pools', 'berth.img');
      const pool = { file, sizeBytes: 512 * MiB };
      const first = new BtrfsBackend({ root, pool });
      await first.prepare();
      const mountpoint = join(root, 'pool');
      expect(first.base).to.equal(mountpoint);
      expect(first.path('v')).to.equal(join(mountpoint, 'volumes', 'v'));
      const fileStats = await stat(file);
      expect(fileStats.size).to.equal(512 * MiB);
      expect(fileStats.blocks * 512).to.be.below(512 * MiB);
      expect((await statfs(mountpoint)).type).to.equal(BTRFS_SUPER_MAGIC);
      expect(mountsAt(mountpoint)).to.have.length(1);
      const uuid = await filesystemUuid(file);

      await first.create('keep', { uid: 999, mode: 0o750 });
      await writeFile(join(first.path('keep'), 'data'), 'survives');
      await first.createSnapshot('keep', 's');

      // Prepared again while mounted: nothing is stacked or formatted.
      await new BtrfsBackend({ root, pool }).prepare();
      expect(mountsAt(mountpoint)).to.have.length(1);

      // Agent restart after a reboot: the pool is not mounted any more; a bigger size is configured now.
      await checkCommand(['umount', mountpoint]);
      expect(mountsAt(mountpoint)).to.have.length(0);
      const second = new BtrfsBackend({ root, pool: { file, sizeBytes: GiB } });
      await second.prepare();
      expect(mountsAt(mountpoint)).to.have.length(1);
      expect(await filesystemUuid(file)).to.equal(uuid);
      expect((await stat(file)).size).to.equal(512 * MiB);
      expect(await readFile(join(second.path('keep'), 'data'), 'utf8')).to.equal('survives');
      expect((await lstat(second.path('keep'))).uid).to.equal(999);
      expect((await second.listSnapshots('keep')).map((snapshot) => snapshot.name)).to.deep.equal(['s']);
      expect(await readdir(dir)).to.have.members(['root', 'pools']);
      expect(await readdir(join(dir, 'pools'))).to.deep.equal(['berth.img']);
    });

    it('refuses to format a pool file that holds something else, and a foreign mount at the mount point', async () => {
      const file = join(dir, 'not-btrfs.img');
      const content = randomBytes(2 * MiB);
      await writeFile(file, content);
      const error = await expectBerthError(new BtrfsBackend({ root: join(dir, 'a'), pool: { file, sizeBytes: 512 * MiB } }).prepare(), 'ERR_STORAGE');
      expect(error.message).to.include(file).and.include('refusing to format it');
      expect((await readFile(file)).equals(content)).to.equal(true);

      const root = join(dir, 'b');
      await mkdir(join(root, 'pool'), { recursive: true });
      await checkCommand(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'berth-test', join(root, 'pool')]);
      const foreign = await expectBerthError(new BtrfsBackend({ root, pool: { file: join(dir, 'fresh.img'), sizeBytes: 512 * MiB } }).prepare(), 'ERR_STORAGE');
      expect(foreign.message).to.include('tmpfs').and.include('mounted there instead');
      await expectMissing(join(dir, 'fresh.img'));
    });

    it('is what `auto` selects when a pool is configured, without touching anything before prepare', async () => {
      const root = join(dir, 'root');
      const file = join(dir, 'pool.img');
      const selected = await selectBackend({ backend: 'auto', root, btrfsPool: file, poolSize: 512 * MiB });
      expect(selected).to.be.instanceOf(BtrfsBackend);
      await expectMissing(file);
    });
  });
});

/** Deletes a tree that holds subvolumes (read-only snapshots included), innermost first. */
async function deleteTree(root: string): Promise<void> {
  const subvolumes: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const path = join(dir, entry.name);
      await walk(path);
      if ((await lstat(path)).ino === 256) subvolumes.push(path);
    }
  };
  await walk(root);
  for (const path of subvolumes) await checkCommand(['btrfs', 'subvolume', 'delete', path]);
  await rm(root, { recursive: true, force: true });
}

function mountsAt(path: string): string[] {
  return readMounts()
    .filter((mount) => mount.mountPoint === path)
    .map((mount) => `${mount.fsType} ${mount.source}`);
}

async function filesystemUuid(file: string): Promise<string> {
  return (await checkCommand(['blkid', '-p', '-o', 'value', '-s', 'UUID', file])).stdout.trim();
}

async function maxReferenced(subvolume: string): Promise<number | undefined> {
  const shown = await checkCommand(['btrfs', 'qgroup', 'show', '--raw', '-r', '-f', subvolume]);
  const line = shown.stdout.split('\n').find((candidate) => /^\d+\/\d+\s/.test(candidate.trim()));
  const limit = line?.trim().split(/\s+/)[3];
  return limit === undefined || limit === 'none' ? undefined : Number(limit);
}
