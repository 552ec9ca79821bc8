import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, chown, link, lstat, mkdir, open, readdir, readFile, rm, symlink, truncate, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { expect } from 'chai';
import { DirBackend } from '../../volume-driver/storage/dir-backend.js';
import type { DirReplication } from '../../volume-driver/storage/dir-replication.js';
import { CHAIN_STREAM_FORMAT, encodeRecord, encodeStreamStart, type ChainRecord } from '../../volume-driver/storage/dir-chain-stream.js';
import { replicationStoreContract } from '../contracts/replication-store-contract.js';
import { collect, pieces } from '../helpers/byte-streams.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { requirePrerequisites } from '../helpers/prerequisites.js';
import { exitPromise, waitForChildExit } from '../helpers/processes.js';
import { distinctBlocks, fileDigest, fillVolume, KiB, MiB, overwrite, ship, timed, treeDigest, volumeWithSnapshot, writeRandomFile } from '../helpers/replication-trees.js';
import { repoRoot } from '../helpers/repo-root.js';
import { checkCommand } from '../helpers/run-command.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitUntil } from '../helpers/wait-until.js';

interface Host {
  readonly root: string;
  readonly backend: DirBackend;
  readonly chain: DirReplication;
}

/**
 * Replication chains of the dir backend between "hosts": each host is a DirBackend on its own data
 * root in a temporary directory (plain directories on whatever filesystem that is; no btrfs), so a
 * stream is made from one host's trees and applied to another's as between machines. Hard links
 * are carried as hard links (within the volume), sparse files arrive dense.
 */
describe('dir replication chains between data roots', function () {
  this.timeout(300_000);

  let temp: { path: string; dispose(): Promise<void> } | undefined;
  const hosts = new Map<string, Host>();

  const host = async (name: string): Promise<Host> => {
    const known = hosts.get(name);
    if (known) return known;
    if (!temp) throw new Error('no temporary directory');
    const root = join(temp.path, name);
    const backend = new DirBackend(root);
    await backend.prepare();
    const made = { root, backend, chain: backend.replication };
    hosts.set(name, made);
    return made;
  };

  before(async () => {
    requirePrerequisites(['cp', 'sync', 'mkfifo', 'touch']);
    temp = await makeTempDir('berth-dir-repl-');
  });

  after(async () => {
    await temp?.dispose();
  });

  it('ships a 50 MiB volume whole: the materialized copy has the same files, modes, owners and links', async () => {
    const a = await host('a');
    const b = await host('b');
    const live = await a.backend.create('full', {});
    await fillVolume(live);

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
    // The next snapshot after a small change reuses the hashes of every file the baseline proves unchanged.
    await writeFile(join(live, 'small', 'f-0'), 'changed');
    const secondMs = await timed(() => a.chain.takeReplicationSnapshot('full', 'e0000001-00000002'));
    const incremental = await ship(a, b, 'full', 'e0000001-00000002', 'e0000001-00000001');
    console.log(
      `      50 MiB volume (+32 MiB sparse): snapshot ${snapshotMs.toFixed(0)} ms, send alone ${sendMs.toFixed(0)} ms (${sentBytes} bytes), ` +
        `send piped into receive ${shipped.ms.toFixed(0)} ms, materialize ${materializeMs.toFixed(0)} ms; ` +
        `after one small write: snapshot ${secondMs.toFixed(0)} ms, incremental ${incremental.bytes} bytes in ${incremental.ms.toFixed(0)} ms`,
    );

    expect(await treeDigest(b.backend.path('full'))).to.deep.equal(await treeDigest(a.backend.layout.replicaPath('full', 'e0000001-00000001')));
    expect(await treeDigest(b.backend.layout.replicaPath('full', 'e0000001-00000002'))).to.deep.equal(await treeDigest(live));
    expect(incremental.bytes).to.be.below(8 * KiB);
    const privateLink = await lstat(join(b.backend.path('full'), 'private-link'));
    expect([privateLink.nlink, privateLink.uid, privateLink.mode & 0o777]).to.deep.equal([2, 1234, 0o600]);
    expect(await b.chain.replicationVolumes()).to.include('full');
    // The manifest lives beside the tree, never inside it.
    expect(await readdir(b.backend.layout.replicasOf('full'))).to.have.members(['e0000001-00000001', 'e0000001-00000002', '.e0000001-00000001.manifest', '.e0000001-00000002.manifest', '.e0000001-00000001.live']);
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
    // An upper bound: the whole file counts once its size or mtime moved.
    expect(await a.chain.changedBytesSince('scatter', 'e0000001-00000001')).to.equal(64 * MiB);
    const snapshotMs = await timed(() => a.chain.takeReplicationSnapshot('scatter', 'e0000001-00000002'));
    const incremental = await ship(a, b, 'scatter', 'e0000001-00000002', 'e0000001-00000001');
    console.log(`      incremental of 256 x 4 KiB = ${MiB} changed bytes: ${incremental.bytes} bytes in the stream (${(incremental.bytes / MiB).toFixed(3)}x), snapshot ${snapshotMs.toFixed(0)} ms, ship ${incremental.ms.toFixed(0)} ms`);
    expect(incremental.bytes).to.be.below(2 * MiB);
    expect(await fileDigest(join(b.backend.layout.replicaPath('scatter', 'e0000001-00000002'), 'data'))).to.equal(await fileDigest(join(live, 'data')));
    expect(await b.chain.replicationSnapshots('scatter')).to.deep.equal(['e0000001-00000001', 'e0000001-00000002']);
  });

  it('carries changes of shape: kinds replaced, links made and broken, subtrees removed, files cut and grown, metadata', async () => {
    const [a, b] = [await host('a'), await host('b')];
    const live = await a.backend.create('shape', { mode: 0o750 });
    await mkdir(join(live, 'tree', 'deep'), { recursive: true });
    await writeRandomFile(join(live, 'tree', 'deep', 'x'), 100 * KiB);
    await writeRandomFile(join(live, 'becomes-dir'), 10 * KiB);
    await mkdir(join(live, 'becomes-file'));
    await writeFile(join(live, 'becomes-file', 'inside'), 'inside');
    await writeRandomFile(join(live, 'cut'), 1 * MiB + 100);
    await writeRandomFile(join(live, 'grown'), 5000);
    await writeFile(join(live, 'linked'), 'shared');
    await link(join(live, 'linked'), join(live, 'linked-too'));
    await writeFile(join(live, 'alone'), 'alone');
    await symlink('alone', join(live, 'pointer'));
    await writeFile(join(live, 'to-symlink'), 'file');
    await checkCommand(['mkfifo', join(live, 'pipe')]);
    await a.chain.takeReplicationSnapshot('shape', 'e0000001-00000001');
    await ship(a, b, 'shape', 'e0000001-00000001');

    await rm(join(live, 'tree'), { recursive: true });
    await rm(join(live, 'becomes-dir'));
    await mkdir(join(live, 'becomes-dir'));
    await writeFile(join(live, 'becomes-dir', 'new'), 'new');
    await rm(join(live, 'becomes-file'), { recursive: true });
    await writeFile(join(live, 'becomes-file'), 'now a file');
    await truncate(join(live, 'cut'), 4096 + 10);
    await overwrite(join(live, 'grown'), 4990, 20 * KiB);
    await unlink(join(live, 'linked-too'));
    await writeFile(join(live, 'linked-too'), 'shared'); // the same content, no longer the same inode
    await link(join(live, 'alone'), join(live, 'zz-new-link'));
    await unlink(join(live, 'pointer'));
    await symlink('linked', join(live, 'pointer'));
    await unlink(join(live, 'to-symlink'));
    await symlink('/outside/the/volume', join(live, 'to-symlink'));
    await chown(join(live, 'alone'), 4321, 4321);
    await chmod(join(live, 'alone'), 0o604);
    await chmod(live, 0o700);
    await a.chain.takeReplicationSnapshot('shape', 'e0000001-00000002');
    const incremental = await ship(a, b, 'shape', 'e0000001-00000002', 'e0000001-00000001');
    expect(incremental.bytes).to.be.below(64 * KiB);
    await b.chain.materializeReplicationSnapshot('shape', 'e0000001-00000002', {});
    expect(await treeDigest(b.backend.path('shape'))).to.deep.equal(await treeDigest(live));
    expect(await b.chain.changedBytesSince('shape', 'e0000001-00000002')).to.equal(0);
  });

  it('refuses a stream cut right before its end marker, and one that is no chain stream', async () => {
    const [a, b] = [await host('a'), await host('b')];
    await volumeWithSnapshot(a, 'cut-more', 1 * MiB);
    const whole = await collect(a.chain.sendReplicationSnapshot('cut-more', 'e0000001-00000001'));
    const cases: Array<[string, Buffer, RegExp]> = [
      ['cut right before the end marker', whole.subarray(0, whole.lastIndexOf(Buffer.from('E', 'latin1'))), /truncated/],
      ['a btrfs send stream', Buffer.from('btrfs-stream\0\x01\0\0\0', 'latin1'), /btrfs send stream: every host of a replicated volume needs the same storage backend/],
      ['something else', Buffer.from('garbage that is long enough'), /not a dir-backend chain stream/],
    ];
    for (const [label, data, message] of cases) {
      const error = await expectBerthError(b.chain.receiveReplicationSnapshot('cut-more', 'e0000001-00000001', pieces(data, 64 * KiB)), 'ERR_REPLICATION');
      expect(error.message, label).to.match(message).and.include('cut-more');
      await expectNothingReceived(b, 'cut-more');
    }
  });

  it('fails clearly when the parent of an incremental stream is missing, or differs from the sender\'s', async () => {
    const [a, b] = [await host('a'), await host('b')];
    const live = await a.backend.create('orphan', {});
    await writeFile(join(live, 'base'), 'base');
    await a.chain.takeReplicationSnapshot('orphan', 'e0000001-00000001');
    await writeRandomFile(join(live, 'large'), 4 * MiB);
    await a.chain.takeReplicationSnapshot('orphan', 'e0000001-00000002');
    for (const [id, parent] of [['e0000001-00000002', 'e0000001-00000001']] as const) {
      const error = await expectBerthError(b.chain.receiveReplicationSnapshot('orphan', id, a.chain.sendReplicationSnapshot('orphan', id, parent)), 'ERR_REPLICATION');
      expect(error.message).to.equal(`cannot receive chain snapshot ${id} of volume orphan: its parent, chain snapshot ${parent}, is not on this host`);
      await expectNothingReceived(b, 'orphan');
    }
    // B holds a snapshot of that id with other content (a chain that went its own way): the digest of the result tells.
    const other = await b.backend.create('orphan', {});
    await writeFile(join(other, 'base'), 'other');
    await b.chain.takeReplicationSnapshot('orphan', 'e0000001-00000001');
    await expectBerthError(ship(a, b, 'orphan', 'e0000001-00000002', 'e0000001-00000001'), 'ERR_REPLICATION', /does not match snapshot e0000001-00000002 as sent \(chain snapshot e0000001-00000001 differs between the two hosts\)/);
    expect(await b.chain.replicationSnapshots('orphan')).to.deep.equal(['e0000001-00000001']);
    expect(await readdir(b.backend.layout.stagingDir)).to.deep.equal([]);
  });

  it('refuses streams whose paths leave the tree, directly or through a symlink, and writes nothing outside', async () => {
    const b = await host('b');
    if (!temp) throw new Error('no temporary directory');
    const outside = join(temp.path, 'outside');
    await mkdir(outside, { recursive: true });
    const metadata = { mode: 0o644, uid: 0, gid: 0, mtimeMs: 0 };
    const file = (path: string): ChainRecord[] => [{ type: 'F', path, size: 4, ...metadata }];
    const cases: Array<[string, ChainRecord[], RegExp]> = [
      ['a ".." component', file('../outside/evil'), /has a "\.\." component/],
      ['an absolute path', file(`${outside}/evil`), /is absolute/],
      ['a ".." inside', file('a/../../outside/evil'), /has a "\.\." component/],
      ['an empty path', file(''), /is empty/],
      ['through a symlink', [{ type: 'S', path: 'ln', target: outside, uid: 0, gid: 0, mtimeMs: 0 }, ...file('ln/evil')], /its parent "ln" is not a directory/],
      ['a symlink to ".."', [{ type: 'S', path: 'up', target: '..', uid: 0, gid: 0, mtimeMs: 0 }, ...file('up/evil')], /its parent "up" is not a directory/],
      ['a hard link out', [{ type: 'L', path: 'hl', target: '../outside/secret' }], /unsafe target/],
      ['a removal of the root', [{ type: 'R', path: '' }], /is empty/],
      ['a patch of nothing', [{ type: 'P', path: 'none', size: 4, blocks: 0, ...metadata }], /does not hold as a regular file/],
    ];
    await writeFile(join(outside, 'secret'), 'secret');
    for (const [label, records, message] of cases) {
      const parts = [encodeStreamStart({ format: CHAIN_STREAM_FORMAT, volume: 'evil', id: 'e0000001-00000001', parent: null })];
      for (const record of records) parts.push(encodeRecord(record), ...(record.type === 'F' ? [Buffer.from('evil')] : []));
      parts.push(encodeRecord({ type: 'T', ...metadata }), encodeRecord({ type: 'E', records: records.length + 1, digest: '0'.repeat(64) }));
      const error = await expectBerthError(b.chain.receiveReplicationSnapshot('evil', 'e0000001-00000001', pieces(Buffer.concat(parts), 7)), 'ERR_REPLICATION');
      expect(error.message, label).to.match(message).and.match(/^cannot receive chain snapshot e0000001-00000001 of volume evil: /);
      expect(await readdir(outside), label).to.deep.equal(['secret']);
      expect(await readFile(join(outside, 'secret'), 'utf8')).to.equal('secret');
      await expectNothingReceived(b, 'evil');
    }
  });

  it('clears the remains of a receive whose process was killed at the next prepare()', async () => {
    const [a, b] = [await host('a'), await host('b')];
    const live = await volumeWithSnapshot(a, 'crash', 16 * MiB);
    const whole = await collect(a.chain.sendReplicationSnapshot('crash', 'e0000001-00000001'));

    // Another process stands in for the agent, and is killed in the middle of the stream.
    const module = pathToFileURL(join(repoRoot, 'dist/volume-driver/storage/dir-backend.js')).href;
    const script = `const { DirBackend } = await import(process.argv[1]);
      const backend = new DirBackend(process.argv[2]);
      await backend.replication.receiveReplicationSnapshot('crash', 'e0000001-00000001', process.stdin);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, module, b.root], { stdio: ['pipe', 'ignore', 'inherit'] });
    const exited = exitPromise(child);
    child.stdin.on('error', () => undefined);
    try {
      child.stdin.write(whole.subarray(0, whole.length >> 1));
      await waitUntil(async () => (await readdir(b.backend.layout.stagingDir)).length > 0, { description: 'the receive to start', timeoutMs: 30_000 });
      child.kill('SIGKILL');
      expect(await waitForChildExit(exited, 10_000)).to.not.equal(undefined);
    } finally {
      child.kill('SIGKILL');
      child.stdin.destroy();
    }
    expect(await readdir(b.backend.layout.stagingDir)).to.have.length(1);
    expect(await b.chain.replicationSnapshots('crash')).to.deep.equal([]);
    // A manifest whose tree never arrived (a crash between the two) goes too.
    await mkdir(b.backend.layout.replicasOf('crash'), { recursive: true });
    await writeFile(join(b.backend.layout.replicasOf('crash'), '.e0000001-00000009.manifest'), 'left over');

    await new DirBackend(b.root).prepare();
    expect(await readdir(b.backend.layout.stagingDir)).to.deep.equal([]);
    expect(await readdir(b.backend.layout.replicasOf('crash'))).to.deep.equal([]);
    await b.chain.receiveReplicationSnapshot('crash', 'e0000001-00000001', pieces(whole, 64 * KiB));
    expect(await fileDigest(join(b.backend.layout.replicaPath('crash', 'e0000001-00000001'), 'data'))).to.equal(await fileDigest(join(live, 'data')));
  });

  it('counts the bytes changed since a chain snapshot, on the owner and on a promoted replica, missing nothing', async () => {
    const [a, b] = [await host('a'), await host('b')];
    const live = await volumeWithSnapshot(a, 'delta', 8 * MiB);
    expect(await a.chain.changedBytesSince('delta', 'e0000001-00000001')).to.equal(0);

    await writeRandomFile(join(live, 'new'), 16 * MiB);
    const started = process.hrtime.bigint();
    const afterNew = await a.chain.changedBytesSince('delta', 'e0000001-00000001');
    const estimateMs = Number(process.hrtime.bigint() - started) / 1e6;
    // The new file's bytes, and 1 for the root directory's mtime.
    expect(afterNew).to.equal(16 * MiB + 1);
    // A file whose size or mtime moved counts whole: the 8 MiB file.
    await overwrite(join(live, 'data'), 0, 4 * MiB);
    expect(await a.chain.changedBytesSince('delta', 'e0000001-00000001')).to.equal(24 * MiB + 1);
    console.log(`      changedBytesSince: ${afterNew} bytes after writing 16 MiB, in ${estimateMs.toFixed(1)} ms`);

    await a.chain.takeReplicationSnapshot('delta', 'e0000001-00000002');
    expect(await a.chain.changedBytesSince('delta', 'e0000001-00000002')).to.equal(0);
    // Rewritten with the same size and its exact old mtime put back: ctime tells, and the changed blocks are counted.
    if (!temp) throw new Error('no temporary directory');
    const reference = join(temp.path, 'reference');
    await checkCommand(['touch', '-r', join(live, 'data'), reference]);
    await overwrite(join(live, 'data'), 8 * KiB, 100);
    await checkCommand(['touch', '-r', reference, join(live, 'data')]);
    expect(await a.chain.changedBytesSince('delta', 'e0000001-00000002')).to.equal(4 * KiB);
    await a.chain.takeReplicationSnapshot('delta', 'e0000001-00000003');
    expect(await a.chain.changedBytesSince('delta', 'e0000001-00000003')).to.equal(0);
    await chmod(join(live, 'new'), 0o600);
    expect(await a.chain.changedBytesSince('delta', 'e0000001-00000003')).to.equal(1);
    await rm(join(live, 'new'));
    expect(await a.chain.changedBytesSince('delta', 'e0000001-00000003')).to.equal(2); // the file, and its directory's mtime

    await ship(a, b, 'delta', 'e0000001-00000003');
    const promoted = await b.chain.materializeReplicationSnapshot('delta', 'e0000001-00000003', {});
    expect(await b.chain.changedBytesSince('delta', 'e0000001-00000003')).to.equal(0);
    await writeRandomFile(join(promoted, 'on-b'), 1 * MiB);
    expect(await b.chain.changedBytesSince('delta', 'e0000001-00000003')).to.equal(1 * MiB + 1);

    await expectBerthError(a.chain.changedBytesSince('delta', 'e0000009-00000001'), 'ERR_SNAPSHOT_NOT_FOUND');
    await b.chain.dropLiveData('delta');
    await expectBerthError(b.chain.changedBytesSince('delta', 'e0000001-00000003'), 'ERR_VOLUME_NOT_FOUND');
    // The baselines described the live data that is gone; the manifests stay with their trees.
    expect(await readdir(b.backend.layout.replicasOf('delta'))).to.have.members(['e0000001-00000003', '.e0000001-00000003.manifest']);
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
    expect(await a.backend.listSnapshots('book')).to.deep.equal([]);
    await expectBerthError(a.chain.materializeReplicationSnapshot('book', 'e0000001-00000001', {}), 'ERR_VOLUME_EXISTS');
    await expectBerthError(a.chain.materializeReplicationSnapshot('book-copy', 'e0000001-00000001', {}), 'ERR_SNAPSHOT_NOT_FOUND');

    await a.chain.deleteReplicationSnapshot('book', 'e0000001-00000002');
    await a.chain.deleteReplicationSnapshot('book', 'e0000001-00000002');
    expect(await a.chain.replicationSnapshots('book')).to.deep.equal(['e0000001-00000001', 'e0000002-00000001']);
    // The deleted snapshot's manifest and baseline went with it.
    expect((await readdir(a.backend.layout.replicasOf('book'))).filter((name) => name.includes('e0000001-00000002'))).to.deep.equal([]);

    await a.backend.remove('book');
    expect(await a.backend.exists('book')).to.equal(false);
    await new DirBackend(a.root).prepare();
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

  it('materializes with the options of a new volume (owner and mode) and refuses a size limit', async () => {
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
    await expectBerthError(d.chain.materializeReplicationSnapshot('opts', 'e0000001-00000001', { sizeBytes: 8 * MiB }), 'ERR_INVALID_OPTION');
    const path = await d.chain.materializeReplicationSnapshot('opts', 'e0000001-00000001', { uid: 1234, gid: 1234, mode: 0o750 });
    const stats = await lstat(path);
    expect([stats.uid, stats.gid, stats.mode & 0o777]).to.deep.equal([1234, 1234, 0o750]);
    expect(await readFile(join(path, 'f'), 'utf8')).to.equal('f');
    // The root's new owner and mode are a change since the snapshot: the owner would take a new one.
    expect(await d.chain.changedBytesSince('opts', 'e0000001-00000001')).to.equal(1);
    await d.backend.createSnapshot('opts', 'user');
    expect(await d.backend.snapshotNames('opts')).to.deep.equal(['user']);
  });

  it('streams errors, and stops reading the tree when the consumer goes away', async () => {
    const a = await host('a');
    await volumeWithSnapshot(a, 'sender', 16 * MiB);

    await expectBerthError(collect(a.chain.sendReplicationSnapshot('sender', 'e0000009-00000001')), 'ERR_SNAPSHOT_NOT_FOUND');
    await expectBerthError(collect(a.chain.sendReplicationSnapshot('sender', 'e0000001-00000001', 'e0000009-00000001')), 'ERR_SNAPSHOT_NOT_FOUND');
    // A tree that no longer matches its manifest fails the stream, naming the file.
    const copy = await a.backend.create('sender-copy', {});
    await writeRandomFile(join(copy, 'data'), 1 * MiB);
    await a.chain.takeReplicationSnapshot('sender-copy', 'e0000001-00000001');
    await truncate(join(a.backend.layout.replicaPath('sender-copy', 'e0000001-00000001'), 'data'), 1000);
    await expectBerthError(collect(a.chain.sendReplicationSnapshot('sender-copy', 'e0000001-00000001')), 'ERR_REPLICATION', /^cannot send chain snapshot e0000001-00000001 of volume sender-copy: .*data is shorter than its manifest says/);

    let received = 0;
    const stream = a.chain.sendReplicationSnapshot('sender', 'e0000001-00000001');
    for await (const chunk of stream) {
      received += (chunk as Buffer).length;
      break; // destroys the stream
    }
    expect(received).to.be.above(0);
    await waitUntil(() => stream.destroyed, { description: 'the stream to be destroyed', timeoutMs: 10_000 });
    await a.chain.deleteReplicationSnapshot('sender', 'e0000001-00000001');
    expect(await a.chain.replicationSnapshots('sender')).to.deep.equal([]);
  });

  replicationStoreContract({ host });
});

async function expectNothingReceived(host: Host, volume: string): Promise<void> {
  expect(await host.chain.replicationSnapshots(volume)).to.deep.equal([]);
  expect(await readdir(host.backend.layout.replicasOf(volume)).catch(() => [])).to.deep.equal([]);
  expect(await readdir(host.backend.layout.stagingDir)).to.deep.equal([]);
  expect(await readdir(host.backend.layout.trashDir)).to.deep.equal([]);
}
