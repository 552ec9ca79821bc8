import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { expect } from 'chai';
import { BtrfsBackend, type BtrfsPoolOptions } from '../../volume-driver/storage/btrfs-backend.js';
import type { BtrfsReplication } from '../../volume-driver/storage/btrfs-replication.js';
import { replicationStoreContract, type ReplicationHost } from '../contracts/replication-store-contract.js';
import { collect, pieces } from '../helpers/byte-streams.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { expectErrno } from '../helpers/fs-assertions.js';
import { disposeWithMounts } from '../helpers/loop-mounts.js';
import { requirePrerequisites } from '../helpers/prerequisites.js';
import { exitPromise, pidsWithArgument, waitForChildExit } from '../helpers/processes.js';
import { repoRoot } from '../helpers/repo-root.js';
import { checkCommand } from '../helpers/run-command.js';
import { distinctBlocks, fileDigest, fillVolume, KiB, MiB, overwrite, ship, timed, treeDigest, volumeWithSnapshot, writeRandomFile } from '../helpers/replication-trees.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitUntil } from '../helpers/wait-until.js';

const GiB = 1024 * MiB;
const TOOLS = ['mkfs.btrfs', 'btrfs', 'losetup', 'mount', 'umount', 'filefrag', 'sync'];

interface Host {
  readonly root: string;
  readonly pool: BtrfsPoolOptions;
  readonly backend: BtrfsBackend;
  readonly chain: BtrfsReplication;
}

/**
 * Replication chains between "hosts": each host is a BtrfsBackend on its own btrfs pool file
 * (created and loop-mounted by the backend in a temporary directory), so send and receive
 * cross filesystems as they do between machines. Every pool is unmounted and its loop device
 * detached at the end, also when a test fails.
 */
describe('btrfs replication chains between pools', function () {
  this.timeout(300_000);

  let temp: { path: string; dispose(): Promise<void> } | undefined;
  const hosts = new Map<string, Host>();

  const host = async (name: string): Promise<Host> => {
    const known = hosts.get(name);
    if (known) return known;
    if (!temp) throw new Error('no temporary directory');
    const root = join(temp.path, name);
    const pool = { file: join(temp.path, `${name}.img`), sizeBytes: 2 * GiB };
    const backend = new BtrfsBackend({ root, pool });
    await backend.prepare();
    const made = { root, pool, backend, chain: backend.replication };
    hosts.set(name, made);
    return made;
  };

  before(async () => {
    requirePrerequisites(TOOLS);
    temp = await makeTempDir('berth-repl-');
  });

  after(async () => {
    if (!temp) return;
    const problems = await disposeWithMounts(temp);
    expect(problems, 'mounts or loop devices left behind').to.deep.equal([]);
  });

  it('ships a 50 MiB volume whole: the materialized copy has the same files, modes, owners and links', async () => {
    const a = await host('a');
    const b = await host('b');
    const live = await a.backend.create('full', {});
    await fillVolume(live);
    await checkCommand(['btrfs', 'filesystem', 'sync', live]);

    const snapshotMs = await timed(() => a.chain.takeReplicationSnapshot('full', 'e0000001-00000001'));
    expect(await a.chain.replicationSnapshots('full')).to.deep.equal(['e0000001-00000001']);
    expect(await a.backend.snapshotNames('full')).to.deep.equal([]);
    let sentBytes = 0;
    const sendMs = await timed(async () => {
      for await (const chunk of a.chain.sendReplicationSnapshot('full', 'e0000001-00000001')) sentBytes += (chunk as Buffer).length;
    });
    const shipped = await ship(a, b, 'full', 'e0000001-00000001');
    expect(shipped.bytes).to.equal(sentBytes);
    const materializeMs = await timed(() => b.chain.materializeReplicationSnapshot('full', 'e0000001-00000001', {}));
    console.log(
      `      50 MiB volume: snapshot ${snapshotMs.toFixed(1)} ms, send alone ${sendMs.toFixed(0)} ms (${sentBytes} bytes), ` +
        `send piped into receive ${shipped.ms.toFixed(0)} ms, materialize ${materializeMs.toFixed(1)} ms`,
    );

    expect(await treeDigest(b.backend.path('full'))).to.deep.equal(await treeDigest(live));
    const received = await subvolumeShow(b.backend.layout.replicaPath('full', 'e0000001-00000001'));
    const original = await subvolumeShow(a.backend.layout.replicaPath('full', 'e0000001-00000001'));
    expect(received.flags).to.equal('readonly');
    expect(received.receivedUuid).to.equal(original.uuid);
    expect(await b.chain.replicationVolumes()).to.include('full');
  });

  it('ships 256 scattered 4 KiB writes into a 64 MiB file as an incremental stream under twice their size', async () => {
    const a = await host('a');
    const b = await host('b');
    const live = await volumeWithSnapshot(a, 'scatter', 64 * MiB);
    await ship(a, b, 'scatter', 'e0000001-00000001');

    const handle = await open(join(live, 'data'), 'r+');
    try {
      for (const block of distinctBlocks(256, (64 * MiB) / (4 * KiB))) await handle.write(randomBytes(4 * KiB), 0, 4 * KiB, block * 4 * KiB);
      await handle.sync();
    } finally {
      await handle.close();
    }
    const changed = await a.chain.changedBytesSince('scatter', 'e0000001-00000001');
    expect(changed).to.be.within(1 * MiB, 1.25 * MiB);
    await a.chain.takeReplicationSnapshot('scatter', 'e0000001-00000002');
    const incremental = await ship(a, b, 'scatter', 'e0000001-00000002', 'e0000001-00000001');
    console.log(`      incremental of 256 x 4 KiB = ${MiB} changed bytes: ${incremental.bytes} bytes in the stream (${(incremental.bytes / MiB).toFixed(3)}x), ${incremental.ms.toFixed(0)} ms`);
    expect(incremental.bytes).to.be.below(2 * MiB);
    expect(await fileDigest(join(b.backend.layout.replicaPath('scatter', 'e0000001-00000002'), 'data'))).to.equal(await fileDigest(join(live, 'data')));
    expect(await b.chain.replicationSnapshots('scatter')).to.deep.equal(['e0000001-00000001', 'e0000001-00000002']);
  });

  it('fails clearly when the parent of an incremental stream is missing, small or large', async () => {
    const [a, b] = [await host('a'), await host('b')];
    const live = await a.backend.create('orphan', {});
    await writeFile(join(live, 'base'), 'base');
    await a.chain.takeReplicationSnapshot('orphan', 'e0000001-00000001');
    await writeRandomFile(join(live, 'large'), 4 * MiB);
    await a.chain.takeReplicationSnapshot('orphan', 'e0000001-00000002');
    await writeFile(join(live, 'small'), 'small');
    await a.chain.takeReplicationSnapshot('orphan', 'e0000001-00000003');
    for (const [id, parent] of [
      ['e0000001-00000002', 'e0000001-00000001'],
      ['e0000001-00000003', 'e0000001-00000002'],
    ] as const) {
      const error = await expectBerthError(b.chain.receiveReplicationSnapshot('orphan', id, a.chain.sendReplicationSnapshot('orphan', id, parent)), 'ERR_REPLICATION');
      expect(error.message).to.include(`cannot receive chain snapshot ${id} of volume orphan`).and.include('cannot find parent subvolume');
      await expectNothingReceived(b, 'orphan');
    }
  });

  it('clears the remains of a receive whose process was killed at the next prepare()', async () => {
    const [a, b] = [await host('a'), await host('b')];
    const live = await volumeWithSnapshot(a, 'crash', 16 * MiB);
    const whole = await collect(a.chain.sendReplicationSnapshot('crash', 'e0000001-00000001'));
    const chainDir = b.backend.layout.replicasOf('crash');

    // Another process stands in for the agent, and is killed in the middle of the stream.
    const module = pathToFileURL(join(repoRoot, 'dist/volume-driver/storage/btrfs-backend.js')).href;
    const script = `const { BtrfsBackend } = await import(process.argv[1]);
      const backend = new BtrfsBackend(JSON.parse(process.argv[2]));
      await backend.replication.receiveReplicationSnapshot('crash', 'e0000001-00000001', process.stdin);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, module, JSON.stringify({ root: b.root, pool: b.pool })], { stdio: ['pipe', 'ignore', 'inherit'] });
    const exited = exitPromise(child);
    child.stdin.on('error', () => undefined);
    try {
      child.stdin.write(whole.subarray(0, whole.length >> 1));
      await waitUntil(async () => (await readdir(chainDir).catch(() => [])).some((entry) => entry.startsWith('.receiving-')) && pidsWithArgument(chainDir).length > 0, {
        description: 'the receive to start',
        timeoutMs: 30_000,
      });
      child.kill('SIGKILL');
      expect(await waitForChildExit(exited, 10_000)).to.not.equal(undefined);
    } finally {
      child.kill('SIGKILL');
      child.stdin.destroy();
    }
    // btrfs receive outlives the agent, reads the end of its pipe and exits by itself.
    await waitUntil(() => pidsWithArgument(chainDir).length === 0, { description: 'the orphaned btrfs receive to exit', timeoutMs: 30_000 });
    const left = await readdir(chainDir);
    expect(left).to.have.length(1);
    expect(left[0]).to.match(/^\.receiving-/);
    expect(await b.chain.replicationSnapshots('crash')).to.deep.equal([]);

    await new BtrfsBackend({ root: b.root, pool: b.pool }).prepare();
    expect(await readdir(chainDir)).to.deep.equal([]);
    expect(await readdir(b.backend.layout.trashDir)).to.deep.equal([]);
    await b.chain.receiveReplicationSnapshot('crash', 'e0000001-00000001', pieces(whole, 64 * KiB));
    expect(await fileDigest(join(b.backend.layout.replicaPath('crash', 'e0000001-00000001'), 'data'))).to.equal(await fileDigest(join(live, 'data')));
  });

  it('estimates the bytes changed since a chain snapshot from changed extents, on the owner and on a promoted replica', async () => {
    const [a, b] = [await host('a'), await host('b')];
    const live = await volumeWithSnapshot(a, 'delta', 8 * MiB);
    expect(await a.chain.changedBytesSince('delta', 'e0000001-00000001')).to.equal(0);

    await writeRandomFile(join(live, 'new'), 16 * MiB);
    const started = process.hrtime.bigint();
    const afterNew = await a.chain.changedBytesSince('delta', 'e0000001-00000001');
    const estimateMs = Number(process.hrtime.bigint() - started) / 1e6;
    expect(afterNew).to.be.within(16 * MiB, 17 * MiB);
    await overwrite(join(live, 'data'), 0, 4 * MiB);
    const afterOverwrite = await a.chain.changedBytesSince('delta', 'e0000001-00000001');
    expect(afterOverwrite).to.be.within(20 * MiB, 21 * MiB);
    // The same range written again counts once: it is the extents now in the volume that count.
    await overwrite(join(live, 'data'), 0, 4 * MiB);
    expect(await a.chain.changedBytesSince('delta', 'e0000001-00000001')).to.be.within(20 * MiB, 21 * MiB);
    console.log(`      changedBytesSince: ${afterNew} bytes after writing 16 MiB, in ${estimateMs.toFixed(1)} ms`);

    await a.chain.takeReplicationSnapshot('delta', 'e0000001-00000002');
    expect(await a.chain.changedBytesSince('delta', 'e0000001-00000002')).to.equal(0);

    await ship(a, b, 'delta', 'e0000001-00000002');
    const promoted = await b.chain.materializeReplicationSnapshot('delta', 'e0000001-00000002', {});
    expect(await b.chain.changedBytesSince('delta', 'e0000001-00000002')).to.equal(0);
    await writeRandomFile(join(promoted, 'on-b'), 1 * MiB);
    expect(await b.chain.changedBytesSince('delta', 'e0000001-00000002')).to.be.within(1 * MiB, 1.25 * MiB);

    await expectBerthError(a.chain.changedBytesSince('delta', 'e0000009-00000001'), 'ERR_SNAPSHOT_NOT_FOUND');
    await b.chain.dropLiveData('delta');
    await expectBerthError(b.chain.changedBytesSince('delta', 'e0000001-00000002'), 'ERR_VOLUME_NOT_FOUND');
  });

  it('keeps the chain apart: remove() and prepare() leave it, removeReplication deletes it, deletes are idempotent', async () => {
    const a = await host('a');
    const live = await a.backend.create('book', {});
    await writeFile(join(live, 'f'), 'f');
    await a.chain.takeReplicationSnapshot('book', 'e0000001-00000002');
    await a.chain.takeReplicationSnapshot('book', 'e0000001-00000001');
    await a.chain.takeReplicationSnapshot('book', 'e0000002-00000001');
    expect(await a.chain.replicationSnapshots('book')).to.deep.equal(['e0000001-00000001', 'e0000001-00000002', 'e0000002-00000001']);
    await expectBerthError(a.chain.takeReplicationSnapshot('book', 'e0000001-00000001'), 'ERR_SNAPSHOT_EXISTS');
    await expectBerthError(a.chain.takeReplicationSnapshot('no-such-volume', 'e0000001-00000001'), 'ERR_VOLUME_NOT_FOUND');
    await expectErrno(writeFile(join(a.backend.layout.replicaPath('book', 'e0000001-00000001'), 'g'), 'g'), 'EROFS');
    expect(await a.backend.listSnapshots('book')).to.deep.equal([]);
    await expectBerthError(a.chain.materializeReplicationSnapshot('book', 'e0000001-00000001', {}), 'ERR_VOLUME_EXISTS');
    await expectBerthError(a.chain.materializeReplicationSnapshot('book-copy', 'e0000001-00000001', {}), 'ERR_SNAPSHOT_NOT_FOUND');

    await a.chain.deleteReplicationSnapshot('book', 'e0000001-00000002');
    await a.chain.deleteReplicationSnapshot('book', 'e0000001-00000002');
    expect(await a.chain.replicationSnapshots('book')).to.deep.equal(['e0000001-00000001', 'e0000002-00000001']);

    await a.backend.remove('book');
    expect(await a.backend.exists('book')).to.equal(false);
    await new BtrfsBackend({ root: a.root, pool: a.pool }).prepare();
    expect(await a.chain.replicationSnapshots('book')).to.deep.equal(['e0000001-00000001', 'e0000002-00000001']);
    expect(await a.chain.replicationVolumes()).to.include('book');
    expect(await a.backend.listNames()).to.not.include('book');

    await a.chain.removeReplication('book');
    await a.chain.removeReplication('book');
    expect(await a.chain.replicationSnapshots('book')).to.deep.equal([]);
    expect(await a.chain.replicationVolumes()).to.not.include('book');
    expect(await readdir(a.backend.layout.trashDir)).to.deep.equal([]);
    await a.chain.deleteReplicationSnapshot('book', 'e0000001-00000001');
    expect(await a.chain.replicationSnapshots('never-replicated')).to.deep.equal([]);
  });

  it('reclaims a deleted chain snapshot at once, not with the periodic commit 30 s later', async () => {
    const a = await host('a');
    const live = await a.backend.create('reclaim', {});
    await writeRandomFile(join(live, 'data'), 4 * MiB);
    await a.chain.takeReplicationSnapshot('reclaim', 'e0000001-00000001');
    for (const block of [0, 1, 2, 3]) await overwrite(join(live, 'data'), block * MiB, 4 * KiB);
    await a.chain.takeReplicationSnapshot('reclaim', 'e0000001-00000002');
    await a.chain.deleteReplicationSnapshot('reclaim', 'e0000001-00000001');
    expect(await a.chain.replicationSnapshots('reclaim')).to.deep.equal(['e0000001-00000002']);
    // `btrfs subvolume list -d` lists subvolumes deleted but not yet reclaimed by the cleaner.
    const unreclaimed = async (): Promise<string> => (await checkCommand(['btrfs', 'subvolume', 'list', '-d', a.backend.base])).stdout.trim();
    await waitUntil(async () => (await unreclaimed()) === '', { timeoutMs: 10_000, intervalMs: 200, description: 'the deleted chain snapshot to be reclaimed' });
    await a.chain.removeReplication('reclaim');
    await a.backend.remove('reclaim');
  });

  it('has a received snapshot on disk when its id appears: no extent of it left to allocate (delalloc)', async () => {
    const a = await host('a');
    const b = await host('b');
    const live = await volumeWithSnapshot(a, 'durable', 4 * MiB);
    await ship(a, b, 'durable', 'e0000001-00000001');
    await writeRandomFile(join(live, 'added'), 2 * MiB);
    for (const block of [0, 1, 2, 3]) await overwrite(join(live, 'data'), block * MiB, 64 * KiB);
    await a.chain.takeReplicationSnapshot('durable', 'e0000001-00000002');
    await ship(a, b, 'durable', 'e0000001-00000002', 'e0000001-00000001');
    // FIEMAP flags an extent still only in the page cache `delalloc`: btrfs receive leaves what it wrote so.
    for (const file of ['added', 'data']) {
      const extents = (await checkCommand(['filefrag', '-v', join(b.backend.layout.replicaPath('durable', 'e0000001-00000002'), file)])).stdout;
      expect(extents, `extents of ${file}`).to.match(/extents? found/);
      expect(extents, `extents of ${file}`).to.not.include('delalloc');
    }
    expect(await fileDigest(join(b.backend.layout.replicaPath('durable', 'e0000001-00000002'), 'added'))).to.equal(await fileDigest(join(live, 'added')));
    await a.chain.removeReplication('durable');
    await b.chain.removeReplication('durable');
    await a.backend.remove('durable');
  });

  it('receives into a data root that is a directory deep inside a btrfs mount', async () => {
    const [a, e] = [await host('a'), await host('e')];
    const nested = new BtrfsBackend({ root: join(e.backend.base, 'deep', 'data-root') });
    await mkdir(join(e.backend.base, 'deep', 'data-root'), { recursive: true });
    await nested.prepare();
    const deep: Host = { root: nested.base, pool: e.pool, backend: nested, chain: nested.replication };
    const live = await volumeWithSnapshot(a, 'nested', 2 * MiB);
    await ship(a, deep, 'nested', 'e0000001-00000001');
    await writeFile(join(live, 'more'), 'more');
    await a.chain.takeReplicationSnapshot('nested', 'e0000001-00000002');
    await ship(a, deep, 'nested', 'e0000001-00000002', 'e0000001-00000001');
    await nested.replication.materializeReplicationSnapshot('nested', 'e0000001-00000002', {});
    expect(await treeDigest(nested.path('nested'))).to.deep.equal(await treeDigest(live));
  });

  it('materializes with the options of a new volume: owner, mode and size limit', async () => {
    const [a, d] = [await host('a'), await host('d')];
    const live = await a.backend.create('opts', { uid: 1000, mode: 0o700 });
    await writeFile(join(live, 'f'), 'f');
    await a.chain.takeReplicationSnapshot('opts', 'e0000001-00000001');
    await ship(a, d, 'opts', 'e0000001-00000001');
    const kept = await d.chain.materializeReplicationSnapshot('opts', 'e0000001-00000001', {});
    // Without options the received tree keeps the owner and mode it was sent with.
    expect((await lstat(kept)).uid).to.equal(1000);
    expect((await lstat(kept)).mode & 0o777).to.equal(0o700);
    await d.chain.dropLiveData('opts');
    const path = await d.chain.materializeReplicationSnapshot('opts', 'e0000001-00000001', { uid: 1234, gid: 1234, mode: 0o750, sizeBytes: 8 * MiB });
    const stats = await lstat(path);
    expect([stats.uid, stats.gid, stats.mode & 0o777]).to.deep.equal([1234, 1234, 0o750]);
    expect(stats.ino).to.equal(256);
    const qgroup = await checkCommand(['btrfs', 'qgroup', 'show', '--raw', '-r', '-f', path]);
    const row = qgroup.stdout.split('\n').find((line) => /^\d+\/\d+\s/.test(line.trim()));
    expect(row?.trim().split(/\s+/)[3], 'max referenced').to.equal(String(8 * MiB));
    expect(await readFile(join(path, 'f'), 'utf8')).to.equal('f');
    await d.backend.createSnapshot('opts', 'user');
    expect(await d.backend.snapshotNames('opts')).to.deep.equal(['user']);
  });

  it('streams errors and stops btrfs send when the consumer goes away', async () => {
    const a = await host('a');
    await volumeWithSnapshot(a, 'sender', 64 * MiB);

    await expectBerthError(collect(a.chain.sendReplicationSnapshot('sender', 'e0000009-00000001')), 'ERR_SNAPSHOT_NOT_FOUND');
    await expectBerthError(collect(a.chain.sendReplicationSnapshot('sender', 'e0000001-00000001', 'e0000009-00000001')), 'ERR_SNAPSHOT_NOT_FOUND');
    // A plain directory where a snapshot should be: btrfs send itself fails, and says why.
    await mkdir(a.backend.layout.replicaPath('sender', 'e0000001-00000002'));
    const failed = await expectBerthError(collect(a.chain.sendReplicationSnapshot('sender', 'e0000001-00000002')), 'ERR_REPLICATION', /^cannot send chain snapshot e0000001-00000002 of volume sender: btrfs -q send /);
    expect(failed.details?.['stderr']).to.be.a('string').and.not.equal('');
    await a.chain.deleteReplicationSnapshot('sender', 'e0000001-00000002');

    const snapshot = a.backend.layout.replicaPath('sender', 'e0000001-00000001');
    let received = 0;
    for await (const chunk of a.chain.sendReplicationSnapshot('sender', 'e0000001-00000001')) {
      received += (chunk as Buffer).length;
      break; // destroys the stream
    }
    expect(received).to.be.above(0);
    await waitUntil(() => pidsWithArgument(snapshot).length === 0, { description: 'btrfs send to be stopped', timeoutMs: 10_000 });
    await a.chain.deleteReplicationSnapshot('sender', 'e0000001-00000001');
    expect(await a.chain.replicationSnapshots('sender')).to.deep.equal([]);
  });

  replicationStoreContract({ host, expectNothingLeft: expectNoPartialSubvolume, checkForwarded: expectSameIdentity });
});

async function expectNothingReceived(host: Host, volume: string): Promise<void> {
  expect(await host.chain.replicationSnapshots(volume)).to.deep.equal([]);
  expect(await readdir(host.backend.layout.replicasOf(volume)).catch(() => [])).to.deep.equal([]);
  expect(await readdir(host.backend.layout.stagingDir)).to.deep.equal([]);
  expect(await readdir(host.backend.layout.trashDir)).to.deep.equal([]);
  await expectNoPartialSubvolume(host);
}

async function expectNoPartialSubvolume(host: ReplicationHost): Promise<void> {
  const subvolumes = await checkCommand(['btrfs', 'subvolume', 'list', '-o', host.backend.layout.base]);
  expect(subvolumes.stdout).to.not.include('.receiving-');
}

/** C knows a forwarded snapshot by A's identity (received_uuid), so it can take A's next increment directly. */
async function expectSameIdentity(atA: string, atC: string): Promise<void> {
  expect((await subvolumeShow(atC)).receivedUuid).to.equal((await subvolumeShow(atA)).uuid);
}

async function subvolumeShow(path: string): Promise<{ uuid: string; receivedUuid: string; flags: string }> {
  const shown = (await checkCommand(['btrfs', 'subvolume', 'show', path])).stdout;
  const field = (name: string): string => new RegExp(`^\\s*${name}:\\s*(\\S+)`, 'm').exec(shown)?.[1] ?? '';
  return { uuid: field('UUID'), receivedUuid: field('Received UUID'), flags: field('Flags') };
}

