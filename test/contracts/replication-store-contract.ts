import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'chai';
import type { ReplicationStore, StorageBackend } from '../../volume-driver/storage/storage-backend.js';
import type { StorageLayout } from '../../volume-driver/storage/storage-layout.js';
import { collect, pieces } from '../helpers/byte-streams.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { expectThrows, KiB, MiB, ship, treeDigest, volumeWithSnapshot, writeRandomFile } from '../helpers/replication-trees.js';

export interface ReplicationHost {
  readonly backend: StorageBackend & { readonly layout: StorageLayout };
  readonly chain: ReplicationStore;
}

export interface ReplicationStoreFixture {
  /** The host of that name (made on first use, on storage of its own), as a data root on another machine would be. */
  host(name: string): Promise<ReplicationHost>;
  /** Backend-specific remains of a failed receive to rule out, beyond the layout's directories. */
  expectNothingLeft?(host: ReplicationHost, volume: string): Promise<void>;
  /** Backend-specific identity of a forwarded snapshot (`atC`, received from a replica) against the original (`atA`). */
  checkForwarded?(atA: string, atC: string): Promise<void>;
}

/**
 * The behaviour every backend's ReplicationStore must show (dir and btrfs alike), as `it` cases of
 * the caller's describe: chains forwarded and shipped back after a promotion, streams cut, extended
 * or of another snapshot refused, verify's verdict kept, names that could leave the layout refused.
 */
export function replicationStoreContract(fixture: ReplicationStoreFixture): void {
  const { host } = fixture;

  async function expectNothingReceived(on: ReplicationHost, volume: string): Promise<void> {
    expect(await on.chain.replicationSnapshots(volume)).to.deep.equal([]);
    expect(await readdir(on.backend.layout.replicasOf(volume)).catch(() => [])).to.deep.equal([]);
    expect(await readdir(on.backend.layout.stagingDir)).to.deep.equal([]);
    expect(await readdir(on.backend.layout.trashDir)).to.deep.equal([]);
    await fixture.expectNothingLeft?.(on, volume);
  }

  it('forwards a chain: A→B, then B→C relative to a snapshot C received from A', async () => {
    const [a, b, c] = [await host('a'), await host('b'), await host('c')];
    const live = await a.backend.create('fwd', {});
    await writeRandomFile(join(live, 'one'), 4 * MiB);
    await a.chain.takeReplicationSnapshot('fwd', 'e0000001-00000001');
    await ship(a, b, 'fwd', 'e0000001-00000001');
    await ship(a, c, 'fwd', 'e0000001-00000001');
    await writeRandomFile(join(live, 'two'), 2 * MiB);
    await a.chain.takeReplicationSnapshot('fwd', 'e0000001-00000002');
    await ship(a, b, 'fwd', 'e0000001-00000002', 'e0000001-00000001');

    const forwarded = await ship(b, c, 'fwd', 'e0000001-00000002', 'e0000001-00000001');
    expect(forwarded.bytes).to.be.below(3 * MiB);
    const atA = a.backend.layout.replicaPath('fwd', 'e0000001-00000002');
    const atC = c.backend.layout.replicaPath('fwd', 'e0000001-00000002');
    expect(await treeDigest(atC)).to.deep.equal(await treeDigest(atA));
    // C can take A's next increment directly, wherever it got its parent from.
    await fixture.checkForwarded?.(atA, atC);
    await writeFile(join(live, 'three'), 'three');
    await a.chain.takeReplicationSnapshot('fwd', 'e0000001-00000003');
    await ship(a, c, 'fwd', 'e0000001-00000003', 'e0000001-00000002');
    expect(await readFile(join(c.backend.layout.replicaPath('fwd', 'e0000001-00000003'), 'three'), 'utf8')).to.equal('three');
  });

  it('promotes a replica and ships its new snapshots back to the demoted owner relative to their last common snapshot', async () => {
    const [a, b] = [await host('a'), await host('b')];
    const live = await a.backend.create('promo', {});
    await writeRandomFile(join(live, 'base'), 4 * MiB);
    await a.chain.takeReplicationSnapshot('promo', 'e0000001-00000001');
    await ship(a, b, 'promo', 'e0000001-00000001');
    await writeFile(join(live, 'second'), 'second');
    await a.chain.takeReplicationSnapshot('promo', 'e0000001-00000002');
    await ship(a, b, 'promo', 'e0000001-00000002', 'e0000001-00000001');
    // Written on A after B's last copy: lost by the failover.
    await writeFile(join(live, 'diverged'), 'diverged');
    await a.chain.takeReplicationSnapshot('promo', 'e0000001-00000003');
    await a.backend.createSnapshot('promo', 'user-snapshot');

    const promoted = await b.chain.materializeReplicationSnapshot('promo', 'e0000001-00000002', {});
    expect(await readFile(join(promoted, 'second'), 'utf8')).to.equal('second');
    await writeFile(join(promoted, 'after-promotion'), 'on b');
    await writeRandomFile(join(promoted, 'more'), 1 * MiB);
    await b.chain.takeReplicationSnapshot('promo', 'e0000002-00000001');

    await a.chain.dropLiveData('promo');
    await a.chain.dropLiveData('promo');
    expect(await a.backend.exists('promo')).to.equal(false);
    expect(await a.backend.snapshotNames('promo')).to.deep.equal([]);
    expect(await a.chain.replicationSnapshots('promo')).to.deep.equal(['e0000001-00000001', 'e0000001-00000002', 'e0000001-00000003']);
    await a.chain.deleteReplicationSnapshot('promo', 'e0000001-00000003');

    const back = await ship(b, a, 'promo', 'e0000002-00000001', 'e0000001-00000002');
    expect(back.bytes).to.be.below(2 * MiB);
    await a.chain.materializeReplicationSnapshot('promo', 'e0000002-00000001', {});
    expect(await treeDigest(a.backend.path('promo'))).to.deep.equal(await treeDigest(promoted));
    expect(await a.chain.replicationSnapshots('promo')).to.deep.equal(['e0000001-00000001', 'e0000001-00000002', 'e0000002-00000001']);
  });

  it('receives nothing from a truncated stream, a stream with trailing bytes or one of another snapshot', async () => {
    const [a, b] = [await host('a'), await host('b')];
    await volumeWithSnapshot(a, 'cut', 4 * MiB);
    const whole = await collect(a.chain.sendReplicationSnapshot('cut', 'e0000001-00000001'));
    const cases: Array<[string, Buffer, RegExp]> = [
      ['cut in the middle', whole.subarray(0, whole.length >> 1), /truncated/],
      // Cut at a record boundary: a receiver that trusted the stream would finish this as a complete snapshot.
      ['cut before the end marker', whole.subarray(0, whole.length - 10), /truncated/],
      ['trailing bytes', Buffer.concat([whole, Buffer.from('x')]), /after its end marker/],
    ];
    for (const [label, data, message] of cases) {
      const error = await expectBerthError(b.chain.receiveReplicationSnapshot('cut', 'e0000001-00000001', pieces(data, 64 * KiB)), 'ERR_REPLICATION');
      expect(error.message, label).to.match(message).and.include('cut');
      await expectNothingReceived(b, 'cut');
    }
    await expectBerthError(b.chain.receiveReplicationSnapshot('cut', 'e0000009-00000009', pieces(whole, 64 * KiB)), 'ERR_REPLICATION', /holds snapshot "e0000001-00000001"/);
    await expectNothingReceived(b, 'cut');

    await b.chain.receiveReplicationSnapshot('cut', 'e0000001-00000001', pieces(whole, 64 * KiB));
    expect(await b.chain.replicationSnapshots('cut')).to.deep.equal(['e0000001-00000001']);
    await expectBerthError(b.chain.receiveReplicationSnapshot('cut', 'e0000001-00000001', pieces(whole, 64 * KiB)), 'ERR_SNAPSHOT_EXISTS');
  });

  it('keeps nothing when verify rejects, and rethrows its error as it is', async () => {
    const [a, b] = [await host('a'), await host('b')];
    await volumeWithSnapshot(a, 'verify', 2 * MiB);
    const whole = await collect(a.chain.sendReplicationSnapshot('verify', 'e0000001-00000001'));
    let consumed = false;
    const source = async function* (): AsyncGenerator<Buffer> {
      yield* pieces(whole, 64 * KiB);
      consumed = true;
    };
    const mismatch = new Error('checksum mismatch');
    let consumedAtVerify: boolean | undefined;
    const rejected = await b.chain
      .receiveReplicationSnapshot('verify', 'e0000001-00000001', source(), async () => {
        consumedAtVerify = consumed;
        throw mismatch;
      })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(rejected).to.equal(mismatch);
    expect(consumedAtVerify).to.equal(true);
    await expectNothingReceived(b, 'verify');
  });

  it('refuses ids and volume names that could leave the layout', async () => {
    const a = await host('a');
    await a.backend.create('names', {});
    await a.chain.takeReplicationSnapshot('names', 'e0000001-00000001');
    const empty = (async function* (): AsyncGenerator<Buffer> {})();
    for (const id of ['../e1', 'a/b', '..', '.', '', '.receiving-x', 'E1', 'x'.repeat(129)]) {
      await expectBerthError(a.chain.takeReplicationSnapshot('names', id), 'ERR_INVALID_NAME');
      await expectBerthError(a.chain.deleteReplicationSnapshot('names', id), 'ERR_INVALID_NAME');
      await expectBerthError(a.chain.receiveReplicationSnapshot('names', id, empty), 'ERR_INVALID_NAME');
      await expectBerthError(a.chain.materializeReplicationSnapshot('names', id, {}), 'ERR_INVALID_NAME');
      await expectBerthError(a.chain.changedBytesSince('names', id), 'ERR_INVALID_NAME');
      expectThrows(() => a.chain.sendReplicationSnapshot('names', id), 'ERR_INVALID_NAME');
      expectThrows(() => a.chain.sendReplicationSnapshot('names', 'e0000001-00000001', id), 'ERR_INVALID_NAME');
    }
    for (const volume of ['../names', 'a/b', '..', '']) {
      await expectBerthError(a.chain.takeReplicationSnapshot(volume, 'e0000001-00000001'), 'ERR_INVALID_NAME');
      await expectBerthError(a.chain.replicationSnapshots(volume), 'ERR_INVALID_NAME');
      await expectBerthError(a.chain.removeReplication(volume), 'ERR_INVALID_NAME');
      await expectBerthError(a.chain.dropLiveData(volume), 'ERR_INVALID_NAME');
      await expectBerthError(a.chain.receiveReplicationSnapshot(volume, 'e0000001-00000001', empty), 'ERR_INVALID_NAME');
      expectThrows(() => a.chain.sendReplicationSnapshot(volume, 'e0000001-00000001'), 'ERR_INVALID_NAME');
    }
    expect(await a.chain.replicationSnapshots('names')).to.deep.equal(['e0000001-00000001']);
  });
}
