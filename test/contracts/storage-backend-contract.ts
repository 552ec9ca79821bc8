import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, chown, link, lstat, mkdir, readdir, readFile, readlink, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { expect } from 'chai';
import { isBerthError } from '../../plugins/errors/berth-error.js';
import type { StorageBackend } from '../../volume-driver/storage/storage-backend.js';
import type { StorageLayout } from '../../volume-driver/storage/storage-layout.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { expectMissing } from '../helpers/fs-assertions.js';

export interface StorageBackendFixture {
  /** A prepared backend on storage no one else uses. */
  readonly backend: StorageBackend;
  /** Where the backend keeps volumes/, snapshots/, staging/, trash/ and restore/, to fake crash states. */
  readonly layout: StorageLayout;
  /** A new instance on the same storage, as after an agent restart; the suite calls prepare(). */
  reopen(): Promise<StorageBackend>;
  /** Makes `to` a writable copy of the tree at `from` the way the backend builds trees (cp -a, a btrfs snapshot). */
  copyTree(from: string, to: string): Promise<void>;
  /** Releases everything the fixture made. */
  dispose(): Promise<void>;
}

/**
 * The behaviour every StorageBackend must show (dir and btrfs alike). Crash states are made by
 * hand with the paths StorageLayout documents, then a restarted backend's prepare() must leave
 * each volume with its whole old or whole new content. Read-only snapshots are asserted only
 * for copy-on-write backends: dir snapshots are plain copies, read-only by convention (they live
 * outside `volumes/`, so no container can reach them), which the kernel does not enforce.
 */
export function describeStorageBackendContract(label: string, factory: () => Promise<StorageBackendFixture>): void {
  describe(`StorageBackend contract: ${label}`, function () {
    this.timeout(120_000);

    let fixture: StorageBackendFixture;
    let backend: StorageBackend;

    beforeEach(async () => {
      fixture = await factory();
      backend = fixture.backend;
    });

    afterEach(async () => {
      await fixture.dispose();
    });

    const restart = async (): Promise<StorageBackend> => {
      const again = await fixture.reopen();
      await again.prepare();
      return again;
    };

    describe('volumes', () => {
      it('creates a volume at volumes/<name>, lists and measures it, and refuses to create it twice', async () => {
        const path = await backend.create('data', {});
        expect(path).to.equal(join(fixture.layout.volumesDir, 'data'));
        expect(backend.path('data')).to.equal(path);
        expect(await backend.exists('data')).to.equal(true);
        expect(await backend.exists('other')).to.equal(false);
        expect(await backend.listNames()).to.deep.equal(['data']);
        expect((await lstat(path)).mode & 0o7777).to.equal(0o755);
        await writeFile(join(path, 'blob'), randomBytes(1024 * 1024));
        await mkdir(join(path, 'dir'));
        await writeFile(join(path, 'dir', 'small'), 'x');
        const usage = await backend.usage('data');
        expect(usage.usedBytes).to.be.at.least(1024 * 1024);
        expect(usage.files).to.equal(3);
        await expectBerthError(backend.create('data', {}), 'ERR_VOLUME_EXISTS');
        expect(await readFile(join(path, 'dir', 'small'), 'utf8')).to.equal('x');
      });

      it('applies uid, gid and mode to the volume root', async () => {
        const path = await backend.create('owned', { uid: 1234, gid: 5678, mode: 0o750 });
        const stats = await lstat(path);
        expect({ uid: stats.uid, gid: stats.gid, mode: stats.mode & 0o7777 }).to.deep.equal({ uid: 1234, gid: 5678, mode: 0o750 });
        expect((await lstat(fixture.layout.volumesDir)).mode & 0o777).to.equal(0o711);
      });

      it('refuses names that could escape the layout', async () => {
        for (const name of ['..', '../x', 'a/b', '.hidden', '']) {
          expect(() => backend.path(name), name).to.throw(/volume name/);
          await expectBerthError(backend.create(name, {}), 'ERR_INVALID_NAME');
        }
        await backend.create('v', {});
        for (const snapshot of ['..', '../../volumes/v', 'a/b', '.x', '']) {
          await expectBerthError(backend.createSnapshot('v', snapshot), 'ERR_INVALID_NAME');
          await expectBerthError(backend.deleteSnapshot('v', snapshot), 'ERR_INVALID_NAME');
        }
      });

      it('removes only the named volume with its snapshots, and removing again succeeds', async () => {
        const names = ['app', 'app.old', 'app-2', 'appx', 'ap'];
        for (const name of names) {
          await backend.create(name, {});
          await writeFile(join(backend.path(name), 'id'), name);
          await backend.createSnapshot(name, 's1');
        }
        await backend.remove('app');
        expect(await backend.exists('app')).to.equal(false);
        expect(await backend.listSnapshots('app')).to.deep.equal([]);
        await backend.remove('app');
        await backend.remove('never-existed');
        expect((await backend.listNames()).sort()).to.deep.equal(['ap', 'app-2', 'app.old', 'appx']);
        for (const name of names.filter((candidate) => candidate !== 'app')) {
          expect(await readFile(join(backend.path(name), 'id'), 'utf8')).to.equal(name);
          const snapshots = await backend.listSnapshots(name);
          expect(snapshots.map((snapshot) => snapshot.name)).to.deep.equal(['s1']);
          expect(await readFile(join(snapshots[0]?.path ?? '', 'id'), 'utf8')).to.equal(name);
        }
        expect(await readdir(fixture.layout.trashDir)).to.deep.equal([]);
      });
    });

    describe('snapshots', () => {
      it('creates, lists and deletes snapshots; deleting is idempotent', async () => {
        await backend.create('v', {});
        await writeFile(join(backend.path('v'), 'f'), 'one');
        const before = Math.floor(Date.now() / 1000) * 1000;
        const first = await backend.createSnapshot('v', 's1');
        await writeFile(join(backend.path('v'), 'f'), 'two');
        const second = await backend.createSnapshot('v', 's2');
        const after = Date.now();
        expect(first).to.deep.include({ volume: 'v', name: 's1', path: join(fixture.layout.snapshotsDir, 'v', 's1') });
        for (const made of [first, second]) {
          const at = Date.parse(made.createdAt);
          expect(made.createdAt).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
          expect(at).to.be.within(before, after);
        }
        expect(await backend.listSnapshots('v')).to.deep.equal([first, second].sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name)));
        expect(await readFile(join(first.path, 'f'), 'utf8')).to.equal('one');
        expect(await readFile(join(second.path, 'f'), 'utf8')).to.equal('two');

        await backend.deleteSnapshot('v', 's1');
        expect((await backend.listSnapshots('v')).map((snapshot) => snapshot.name)).to.deep.equal(['s2']);
        await expectMissing(first.path);
        await backend.deleteSnapshot('v', 's1');
        await backend.deleteSnapshot('v', 'never-made');
        await backend.deleteSnapshot('no-volume', 's1');
        expect(await backend.listSnapshots('no-volume')).to.deep.equal([]);
        expect(await readFile(join(backend.path('v'), 'f'), 'utf8')).to.equal('two');
      });

      it('keeps a snapshot frozen while the volume changes', async () => {
        const path = await backend.create('v', {});
        await buildTree(path);
        const expected = await treeDigest(path);
        const snapshot = await backend.createSnapshot('v', 's');
        expect(await treeDigest(snapshot.path)).to.deep.equal(expected);
        await mutateTree(path);
        expect(await treeDigest(path)).to.not.deep.equal(expected);
        expect(await treeDigest(snapshot.path)).to.deep.equal(expected);
      });

      it('keeps snapshots out of containers’ reach, read-only in the kernel where the backend has copy-on-write snapshots', async () => {
        const path = await backend.create('v', {});
        await writeFile(join(path, 'f'), 'x');
        const snapshot = await backend.createSnapshot('v', 's');
        expect(relative(fixture.layout.volumesDir, snapshot.path).startsWith('..')).to.equal(true);
        if (backend.capabilities.instantSnapshots) {
          await expectErrno(writeFile(join(snapshot.path, 'new'), 'y'), 'EROFS');
          await expectErrno(writeFile(join(snapshot.path, 'f'), 'y'), 'EROFS');
          await expectErrno(unlink(join(snapshot.path, 'f')), 'EROFS');
          await expectErrno(mkdir(join(snapshot.path, 'd')), 'EROFS');
          await expectErrno(chmod(snapshot.path, 0o777), 'EROFS');
          expect(await readFile(join(snapshot.path, 'f'), 'utf8')).to.equal('x');
        }
      });

      it('refuses a duplicate snapshot name and keeps the first snapshot', async () => {
        await backend.create('v', {});
        await writeFile(join(backend.path('v'), 'f'), 'first');
        const first = await backend.createSnapshot('v', 's');
        await writeFile(join(backend.path('v'), 'f'), 'second');
        await expectBerthError(backend.createSnapshot('v', 's'), 'ERR_SNAPSHOT_EXISTS');
        expect(await readFile(join(first.path, 'f'), 'utf8')).to.equal('first');
        expect((await backend.listSnapshots('v')).map((snapshot) => snapshot.name)).to.deep.equal(['s']);
        // Even an empty snapshot directory, which rename(2) would silently replace.
        await backend.create('empty', {});
        await backend.createSnapshot('empty', 's');
        await expectBerthError(backend.createSnapshot('empty', 's'), 'ERR_SNAPSHOT_EXISTS');
        expect(await readdir(fixture.layout.stagingDir)).to.deep.equal([]);
      });

      it('refuses to snapshot, restore or clone what does not exist', async () => {
        await expectBerthError(backend.createSnapshot('missing', 's'), 'ERR_VOLUME_NOT_FOUND');
        await backend.create('v', {});
        await expectBerthError(backend.restoreSnapshot('v', 'missing'), 'ERR_SNAPSHOT_NOT_FOUND');
        await expectBerthError(backend.cloneSnapshot('v', 'missing', 'copy', {}), 'ERR_SNAPSHOT_NOT_FOUND');
        expect(await backend.listNames()).to.deep.equal(['v']);
        expect(await readdir(fixture.layout.stagingDir)).to.deep.equal([]);
      });
    });

    describe('restore', () => {
      it('brings back the snapshot’s content: added files gone, changed and deleted ones back, owners, modes, symlinks and hard links kept', async () => {
        const path = await backend.create('v', { mode: 0o750 });
        await buildTree(path);
        const expected = await treeDigest(path);
        await backend.createSnapshot('v', 's');
        await mutateTree(path);
        await chmod(path, 0o777);
        await backend.create('neighbour', {});
        await writeFile(join(backend.path('neighbour'), 'n'), 'untouched');

        await backend.restoreSnapshot('v', 's');
        expect(backend.path('v')).to.equal(path);
        expect(await treeDigest(path)).to.deep.equal(expected);
        expect((await lstat(path)).mode & 0o7777).to.equal(0o750);
        const [a, hard] = await Promise.all([lstat(join(path, 'a.txt')), lstat(join(path, 'hard'))]);
        expect(hard.ino).to.equal(a.ino);
        expect(await readlink(join(path, 'link'))).to.equal('a.txt');
        // The volume stays writable, the snapshot stays as it was, nothing is left behind.
        await writeFile(join(path, 'after'), 'ok');
        expect(await treeDigest((await backend.listSnapshots('v'))[0]?.path ?? '')).to.deep.equal(expected);
        expect(await readFile(join(backend.path('neighbour'), 'n'), 'utf8')).to.equal('untouched');
        expect(await readdir(fixture.layout.restoreDir)).to.deep.equal([]);
        expect(await readdir(fixture.layout.stagingDir)).to.deep.equal([]);
        expect((await backend.listNames()).sort()).to.deep.equal(['neighbour', 'v']);
      });

      it('restores a 64 MiB file exactly (sha256)', async () => {
        const path = await backend.create('big', {});
        const file = join(path, 'blob');
        await writeFile(file, randomBytes(64 * 1024 * 1024));
        const original = await sha256(file);
        const snapshot = await backend.createSnapshot('big', 's');
        await writeFile(file, randomBytes(64 * 1024 * 1024));
        expect(await sha256(file)).to.not.equal(original);
        expect(await sha256(join(snapshot.path, 'blob'))).to.equal(original);
        await backend.restoreSnapshot('big', 's');
        expect(await sha256(file)).to.equal(original);
      });
    });

    describe('clone', () => {
      it('makes an independent volume from a snapshot, both ways, with the new volume’s options', async () => {
        const path = await backend.create('src', {});
        await buildTree(path);
        const expected = await treeDigest(path);
        await backend.createSnapshot('src', 's');
        const clonePath = await backend.cloneSnapshot('src', 's', 'copy', { uid: 4321, mode: 0o700 });
        expect(clonePath).to.equal(backend.path('copy'));
        expect(await backend.exists('copy')).to.equal(true);
        expect((await backend.listNames()).sort()).to.deep.equal(['copy', 'src']);
        const root = await lstat(clonePath);
        expect({ uid: root.uid, mode: root.mode & 0o7777 }).to.deep.equal({ uid: 4321, mode: 0o700 });
        expect(withoutRoot(await treeDigest(clonePath))).to.deep.equal(withoutRoot(expected));

        await writeFile(join(clonePath, 'only-in-clone'), 'c');
        await writeFile(join(clonePath, 'a.txt'), 'changed in clone');
        await writeFile(join(path, 'only-in-source'), 's');
        await expectMissing(join(path, 'only-in-clone'));
        await expectMissing(join(clonePath, 'only-in-source'));
        expect(await readFile(join(path, 'a.txt'), 'utf8')).to.equal('alpha');
        expect(await treeDigest((await backend.listSnapshots('src'))[0]?.path ?? '')).to.deep.equal(expected);
        expect(await backend.listSnapshots('copy')).to.deep.equal([]);

        // Removing either side leaves the other whole.
        await backend.remove('src');
        expect(await readFile(join(clonePath, 'sub', 'b.txt'), 'utf8')).to.equal('beta');
      });

      it('refuses to clone onto an existing volume', async () => {
        await backend.create('src', {});
        await backend.createSnapshot('src', 's');
        await backend.create('taken', {});
        await writeFile(join(backend.path('taken'), 'mine'), 'keep');
        await expectBerthError(backend.cloneSnapshot('src', 's', 'taken', {}), 'ERR_VOLUME_EXISTS');
        expect(await readFile(join(backend.path('taken'), 'mine'), 'utf8')).to.equal('keep');
        expect(await readdir(fixture.layout.stagingDir)).to.deep.equal([]);
      });
    });

    describe('remove', () => {
      it('deletes the volume’s snapshots; a new volume of the same name starts without them', async () => {
        await backend.create('v', {});
        const made = [await backend.createSnapshot('v', 'a'), await backend.createSnapshot('v', 'b')];
        await backend.remove('v');
        for (const snapshot of made) await expectMissing(snapshot.path);
        await expectMissing(join(fixture.layout.snapshotsDir, 'v'));
        await backend.create('v', {});
        expect(await backend.listSnapshots('v')).to.deep.equal([]);
        expect(await readdir(backend.path('v'))).to.deep.equal([]);
      });
    });

    describe('recovery at prepare', () => {
      /** A volume `v` with content "old" and a snapshot `s` with content "new", plus a neighbour. */
      const setUp = async (): Promise<{ live: string; snapshot: string; old: string; fresh: string; dir: string }> => {
        const live = await backend.create('v', {});
        await writeFile(join(live, 'content'), 'new');
        const snapshot = (await backend.createSnapshot('v', 's')).path;
        await writeFile(join(live, 'content'), 'old');
        await writeFile(join(live, 'only-old'), 'x');
        await backend.create('neighbour', {});
        await writeFile(join(backend.path('neighbour'), 'n'), 'untouched');
        const paths = fixture.layout.restorePaths('v');
        await mkdir(paths.dir, { recursive: true });
        return { live, snapshot, old: paths.old, fresh: paths.new, dir: paths.dir };
      };

      const expectVolume = async (again: StorageBackend, content: 'old' | 'new'): Promise<void> => {
        expect(await readFile(join(again.path('v'), 'content'), 'utf8')).to.equal(content);
        const entries = (await readdir(again.path('v'))).sort();
        expect(entries).to.deep.equal(content === 'old' ? ['content', 'only-old'] : ['content']);
        expect(await readFile(join(again.path('neighbour'), 'n'), 'utf8')).to.equal('untouched');
        expect((await again.listNames()).sort()).to.deep.equal(['neighbour', 'v']);
        expect((await again.listSnapshots('v')).map((snapshot) => snapshot.name)).to.deep.equal(['s']);
        expect(await readdir(fixture.layout.restoreDir)).to.deep.equal([]);
        expect(await readdir(fixture.layout.stagingDir)).to.deep.equal([]);
        expect(await readdir(fixture.layout.trashDir)).to.deep.equal([]);
        // The recovered backend works: a real restore now succeeds.
        await again.restoreSnapshot('v', 's');
        expect(await readFile(join(again.path('v'), 'content'), 'utf8')).to.equal('new');
      };

      it('empties staging and trash', async () => {
        await backend.create('v', {});
        await writeFile(join(backend.path('v'), 'f'), 'keep');
        const snapshot = await backend.createSnapshot('v', 's');
        await fixture.copyTree(backend.path('v'), join(fixture.layout.stagingDir, 'half-built.0123'));
        await fixture.copyTree(snapshot.path, join(fixture.layout.trashDir, 'half-deleted.4567'));
        await mkdir(join(fixture.layout.trashDir, 'plain', 'deep'), { recursive: true });
        await writeFile(join(fixture.layout.trashDir, 'plain', 'deep', 'x'), 'x');
        const again = await restart();
        expect(await readdir(fixture.layout.stagingDir)).to.deep.equal([]);
        expect(await readdir(fixture.layout.trashDir)).to.deep.equal([]);
        expect(await readFile(join(again.path('v'), 'f'), 'utf8')).to.equal('keep');
        expect(await readFile(join(snapshot.path, 'f'), 'utf8')).to.equal('keep');
      });

      it('rolls back a restore interrupted before the switch (new tree built, volume untouched)', async () => {
        const { snapshot, fresh } = await setUp();
        await fixture.copyTree(snapshot, fresh);
        await expectVolume(await restart(), 'old');
      });

      it('rolls forward a restore interrupted at the commit point (volume moved aside, new tree ready)', async () => {
        const { live, snapshot, old, fresh } = await setUp();
        await fixture.copyTree(snapshot, fresh);
        await rename(live, old);
        await expectVolume(await restart(), 'new');
      });

      it('finishes a restore interrupted after the switch (old tree still aside)', async () => {
        const { live, snapshot, old, fresh } = await setUp();
        await fixture.copyTree(snapshot, fresh);
        await rename(live, old);
        await rename(fresh, live);
        await expectVolume(await restart(), 'new');
      });

      it('puts the old tree back when only it is left', async () => {
        const { live, old } = await setUp();
        await rename(live, old);
        await expectVolume(await restart(), 'old');
      });

      it('drops a restore directory left empty, and a new tree whose volume is gone', async () => {
        const { snapshot } = await setUp();
        await mkdir(fixture.layout.restorePaths('gone').dir);
        await fixture.copyTree(snapshot, fixture.layout.restorePaths('gone').new);
        await expectVolume(await restart(), 'old');
        expect(await backend.exists('gone')).to.equal(false);
      });

      it('resolves a leftover before the next restore of the same volume', async () => {
        const { live, snapshot, old, fresh } = await setUp();
        await fixture.copyTree(snapshot, fresh);
        await rename(live, old);
        // No restart: the next restore of the volume must finish the interrupted one first.
        await backend.restoreSnapshot('v', 's');
        expect(await readFile(join(backend.path('v'), 'content'), 'utf8')).to.equal('new');
        expect(await readdir(fixture.layout.restoreDir)).to.deep.equal([]);
      });
    });
  });
}

/** Files, a nested directory, a symlink, a hard link, an executable and foreign owners. */
async function buildTree(root: string): Promise<void> {
  await writeFile(join(root, 'a.txt'), 'alpha');
  await chmod(join(root, 'a.txt'), 0o640);
  await chown(join(root, 'a.txt'), 1000, 1000);
  await mkdir(join(root, 'sub', 'deep'), { recursive: true });
  await writeFile(join(root, 'sub', 'b.txt'), 'beta');
  await writeFile(join(root, 'sub', 'deep', 'c.bin'), randomBytes(100 * 1024));
  await chmod(join(root, 'sub', 'deep'), 0o700);
  await symlink('a.txt', join(root, 'link'));
  await symlink('/nonexistent/target', join(root, 'dangling'));
  await link(join(root, 'a.txt'), join(root, 'hard'));
  await writeFile(join(root, 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
}

/** Changes, adds, deletes, re-permissions and re-links entries of a tree made by buildTree. */
async function mutateTree(root: string): Promise<void> {
  await writeFile(join(root, 'a.txt'), 'changed');
  await writeFile(join(root, 'added'), 'new file');
  await mkdir(join(root, 'added-dir'));
  await rm(join(root, 'sub', 'deep', 'c.bin'));
  await rm(join(root, 'sub', 'b.txt'));
  await chmod(join(root, 'run.sh'), 0o600);
  await chown(join(root, 'sub'), 2000, 2000);
  await unlink(join(root, 'link'));
  await symlink('sub', join(root, 'link'));
}

type Digest = Record<string, string>;

/** One line per entry: type, mode, owner, size, content hash or link target, and mtime of files. */
async function treeDigest(root: string): Promise<Digest> {
  const digest: Digest = {};
  const visit = async (path: string): Promise<void> => {
    const stats = await lstat(path);
    const name = relative(root, path) || '.';
    const base = `mode=${(stats.mode & 0o7777).toString(8)} owner=${stats.uid}:${stats.gid}`;
    if (stats.isSymbolicLink()) digest[name] = `link ${base} -> ${await readlink(path)}`;
    else if (stats.isFile()) digest[name] = `file ${base} size=${stats.size} links=${stats.nlink} mtime=${stats.mtimeMs} sha256=${await sha256(path)}`;
    else if (stats.isDirectory()) {
      digest[name] = `dir ${base}`;
      for (const entry of (await readdir(path)).sort()) await visit(join(path, entry));
    } else digest[name] = `other ${base}`;
  };
  await visit(root);
  return digest;
}

function withoutRoot(digest: Digest): Digest {
  return Object.fromEntries(Object.entries(digest).filter(([name]) => name !== '.'));
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}


async function expectErrno(promise: Promise<unknown>, code: string): Promise<void> {
  try {
    await promise;
  } catch (error) {
    if (!isBerthError(error) && (error as NodeJS.ErrnoException).code === code) return;
    throw new Error(`expected ${code}, got ${String(error)}`, { cause: error });
  }
  throw new Error(`expected ${code}, but the call succeeded`);
}
