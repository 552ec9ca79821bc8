import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import { updateEntry, type StateStore, type WatchEvent } from '../../plugins/state/state-store.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';

export interface StateStoreFixture {
  /** A store no one else writes to during the test. */
  store: StateStore;
  /** Opens a new store on the same backing data; the suite closes the previous store first. */
  reopen?: () => Promise<StateStore>;
  /** Releases everything the fixture made, including reopened stores; stores may already be closed. */
  dispose: () => Promise<void>;
}

/**
 * The behaviour every StateStore implementation must show (file and etcd alike). Each test works under its
 * own random prefix. Lease tests use short TTLs and wait with bounds derived from the granted TTL.
 */
export function describeStateStoreContract(label: string, factory: () => Promise<StateStoreFixture>): void {
  describe(`StateStore contract: ${label}`, function () {
    this.timeout(30_000);

    let fixture: StateStoreFixture;
    let store: StateStore;
    let ns: string;

    beforeEach(async () => {
      fixture = await factory();
      store = fixture.store;
      ns = `/contract-${randomUUID()}/`;
    });

    afterEach(async () => {
      await fixture.dispose();
    });

    describe('get, put and delete', () => {
      it('returns undefined for a missing key', async () => {
        expect(await store.get(`${ns}missing`)).to.equal(undefined);
      });

      it('stores a value and reports its revisions', async () => {
        const revision = await store.put(`${ns}a`, 'one');
        expect(revision).to.be.a('number').and.to.be.greaterThan(0);
        const entry = await store.get(`${ns}a`);
        expect(entry).to.deep.equal({ key: `${ns}a`, value: 'one', createRevision: revision, modRevision: revision, version: 1 });
        expect(entry?.lease).to.equal(undefined);
      });

      it('keeps createRevision and bumps modRevision and version on overwrite', async () => {
        const first = await store.put(`${ns}a`, 'one');
        const second = await store.put(`${ns}a`, 'two');
        const third = await store.put(`${ns}a`, 'three');
        expect(second).to.be.greaterThan(first);
        expect(third).to.be.greaterThan(second);
        expect(await store.get(`${ns}a`)).to.deep.equal({
          key: `${ns}a`,
          value: 'three',
          createRevision: first,
          modRevision: third,
          version: 3,
        });
      });

      it('round-trips awkward keys and values exactly', async () => {
        const samples = awkwardSamples(ns);
        for (const [key, value] of samples) await store.put(key, value);
        for (const [key, value] of samples) expect((await store.get(key))?.value, JSON.stringify(key)).to.equal(value);
      });

      it('deletes a key, and deleting it again reports false', async () => {
        await store.put(`${ns}a`, 'one');
        expect(await store.delete(`${ns}a`)).to.equal(true);
        expect(await store.get(`${ns}a`)).to.equal(undefined);
        expect(await store.delete(`${ns}a`)).to.equal(false);
      });

      it('starts a new life for a key recreated after deletion', async () => {
        await store.put(`${ns}a`, 'one');
        const last = await store.put(`${ns}a`, 'two');
        await store.delete(`${ns}a`);
        const again = await store.put(`${ns}a`, 'three');
        expect(again).to.be.greaterThan(last);
        expect(await store.get(`${ns}a`)).to.deep.equal({ key: `${ns}a`, value: 'three', createRevision: again, modRevision: again, version: 1 });
      });

      it('rejects an empty key', async () => {
        await expectBerthError(store.put('', 'x'), 'ERR_INVALID_REQUEST');
      });
    });

    describe('revisions', () => {
      it('gives every write a strictly higher revision, across keys and deletions', async () => {
        let previous = await store.revision();
        for (let index = 0; index < 10; index++) {
          const revision = await store.put(`${ns}k${index % 3}`, String(index));
          expect(revision).to.be.greaterThan(previous);
          previous = revision;
          if (index % 4 === 3) {
            expect(await store.delete(`${ns}k${index % 3}`)).to.equal(true);
            const afterDelete = await store.revision();
            expect(afterDelete).to.be.greaterThan(previous);
            previous = afterDelete;
          }
        }
        expect(await store.revision()).to.be.at.least(previous);
      });

      it('changes nothing on a failed compare-and-swap or a delete of a missing key', async () => {
        const written = await store.put(`${ns}a`, 'one');
        const before = await store.revision();
        await expectBerthError(store.put(`${ns}a`, 'two', { expectRevision: written + 1000 }), 'ERR_STATE_CONFLICT');
        await expectBerthError(store.delete(`${ns}a`, { expectRevision: written + 1000 }), 'ERR_STATE_CONFLICT');
        expect(await store.delete(`${ns}missing`)).to.equal(false);
        expect(await store.revision()).to.equal(before);
        expect(await store.get(`${ns}a`)).to.deep.include({ value: 'one', modRevision: written, version: 1 });
      });
    });

    describe('compare-and-swap', () => {
      it('creates a key with expectRevision 0 only if it does not exist', async () => {
        const created = await store.put(`${ns}a`, 'one', { expectRevision: 0 });
        const error = await expectBerthError(store.put(`${ns}a`, 'two', { expectRevision: 0 }), 'ERR_STATE_CONFLICT');
        expect(error.message).to.include(`${ns}a`);
        expect(await store.get(`${ns}a`)).to.deep.include({ value: 'one', modRevision: created });
      });

      it('overwrites with the current modRevision and refuses a stale one', async () => {
        const first = await store.put(`${ns}a`, 'one');
        const second = await store.put(`${ns}a`, 'two', { expectRevision: first });
        const error = await expectBerthError(store.put(`${ns}a`, 'three', { expectRevision: first }), 'ERR_STATE_CONFLICT');
        expect(error.message).to.include(`${ns}a`);
        expect(await store.get(`${ns}a`)).to.deep.include({ value: 'two', modRevision: second, version: 2 });
      });

      it('refuses to write a missing key when expecting a revision', async () => {
        const other = await store.put(`${ns}other`, 'x');
        await expectBerthError(store.put(`${ns}a`, 'one', { expectRevision: other }), 'ERR_STATE_CONFLICT');
        expect(await store.get(`${ns}a`)).to.equal(undefined);
      });

      it('deletes only with the current modRevision', async () => {
        const first = await store.put(`${ns}a`, 'one');
        const second = await store.put(`${ns}a`, 'two');
        const error = await expectBerthError(store.delete(`${ns}a`, { expectRevision: first }), 'ERR_STATE_CONFLICT');
        expect(error.message).to.include(`${ns}a`);
        await expectBerthError(store.delete(`${ns}a`, { expectRevision: 0 }), 'ERR_STATE_CONFLICT');
        expect(await store.get(`${ns}a`)).to.deep.include({ value: 'two' });
        expect(await store.delete(`${ns}a`, { expectRevision: second })).to.equal(true);
        expect(await store.get(`${ns}a`)).to.equal(undefined);
      });

      it('treats a delete expecting 0 on a missing key as a no-op, and any other revision as a conflict', async () => {
        expect(await store.delete(`${ns}missing`, { expectRevision: 0 })).to.equal(false);
        const other = await store.put(`${ns}other`, 'x');
        await expectBerthError(store.delete(`${ns}missing`, { expectRevision: other }), 'ERR_STATE_CONFLICT');
      });
    });

    describe('list', () => {
      it('lists one prefix sorted by key, without siblings sharing leading characters', async () => {
        const revisions = new Map<string, number>();
        for (const key of ['vol/b', 'volumes/z', 'vol/c/x', 'vol', 'vol/A', 'vo/a', 'vol/c', 'vol/a', 'vol-x/a']) {
          revisions.set(`${ns}${key}`, await store.put(`${ns}${key}`, `value of ${key}`));
        }
        const listing = await store.list(`${ns}vol/`);
        expect(listing.entries.map((entry) => entry.key)).to.deep.equal(['vol/A', 'vol/a', 'vol/b', 'vol/c', 'vol/c/x'].map((key) => `${ns}${key}`));
        for (const entry of listing.entries) {
          expect(entry.value).to.equal(`value of ${entry.key.slice(ns.length)}`);
          expect(entry.modRevision).to.equal(revisions.get(entry.key));
          expect(entry.createRevision).to.equal(revisions.get(entry.key));
          expect(entry.version).to.equal(1);
        }
        expect(listing.revision).to.be.at.least(Math.max(...revisions.values()));
      });

      it('sorts by UTF-8 byte order, as etcd does', async () => {
        const keys = ['😀', '～', 'é', 'z', 'a'].map((suffix) => `${ns}u/${suffix}`);
        for (const key of keys) await store.put(key, 'x');
        const listed = (await store.list(`${ns}u/`)).entries.map((entry) => entry.key);
        const byBytes = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
        expect(listed).to.deep.equal(byBytes);
      });

      it('returns no entries for an unused prefix, with the store revision', async () => {
        const written = await store.put(`${ns}a`, 'x');
        const listing = await store.list(`${ns}nothing/`);
        expect(listing.entries).to.deep.equal([]);
        expect(listing.revision).to.be.at.least(written);
      });

      it('reflects overwrites and deletions', async () => {
        await store.put(`${ns}d/a`, 'one');
        await store.put(`${ns}d/b`, 'one');
        const overwritten = await store.put(`${ns}d/a`, 'two');
        await store.delete(`${ns}d/b`);
        const listing = await store.list(`${ns}d/`);
        expect(listing.entries.map((entry) => [entry.key, entry.value, entry.modRevision, entry.version])).to.deep.equal([
          [`${ns}d/a`, 'two', overwritten, 2],
        ]);
        expect(listing.revision).to.be.greaterThan(overwritten);
      });
    });

    describe('watch', () => {
      it('delivers puts and deletes under the prefix with their revisions', async () => {
        const log = new EventLog();
        const watch = await store.watch(`${ns}w/`, log.handler);
        const first = await store.put(`${ns}w/a`, 'one');
        const second = await store.put(`${ns}w/a`, 'two');
        await store.delete(`${ns}w/a`);
        const afterDelete = await store.revision();
        await log.waitForCount(3);
        await watch.cancel();
        const [put1, put2, deletion] = log.events;
        expect(put1).to.deep.equal({
          type: 'put',
          revision: first,
          entry: { key: `${ns}w/a`, value: 'one', createRevision: first, modRevision: first, version: 1 },
        });
        expect(put2).to.deep.equal({
          type: 'put',
          revision: second,
          entry: { key: `${ns}w/a`, value: 'two', createRevision: first, modRevision: second, version: 2 },
        });
        expect(deletion?.type).to.equal('delete');
        expect(keyOf(deletion)).to.equal(`${ns}w/a`);
        expect(deletion?.revision).to.be.greaterThan(second).and.at.most(afterDelete);
      });

      it('delivers only keys under the prefix', async () => {
        const log = new EventLog();
        await store.watch(`${ns}app/`, log.handler);
        await store.put(`${ns}apple/x`, '1');
        await store.put(`${ns}app`, '1');
        await store.put(`${ns}app/x`, '1');
        await store.put(`${ns}other/app/y`, '1');
        await store.put(`${ns}app-x/y`, '1');
        await store.put(`${ns}app/zz`, 'sentinel');
        await log.waitFor((events) => events.some((event) => keyOf(event) === `${ns}app/zz`), 'the sentinel event');
        expect(log.events.map(keyOf)).to.deep.equal([`${ns}app/x`, `${ns}app/zz`]);
      });

      it('delivers sequential and concurrent writes in revision order', async () => {
        const log = new EventLog();
        await store.watch(`${ns}o/`, log.handler);
        const expected: number[] = [];
        for (let index = 0; index < 30; index++) {
          expected.push(await store.put(`${ns}o/k${index % 5}`, String(index)));
          if (index % 7 === 6) {
            await store.delete(`${ns}o/k${index % 5}`);
            expected.push(-1); // a deletion: its revision is only known from the event
          }
        }
        const concurrent = await Promise.all(Array.from({ length: 20 }, (_, index) => store.put(`${ns}o/c${index}`, 'x')));
        await log.waitForCount(expected.length + concurrent.length);
        const revisions = log.events.map((event) => event.revision);
        for (let index = 1; index < revisions.length; index++) {
          expect(revisions[index], `event ${index}`).to.be.greaterThan(revisions[index - 1] ?? 0);
        }
        expected.forEach((revision, index) => {
          if (revision === -1) expect(log.events[index]?.type).to.equal('delete');
          else expect(log.events[index]?.revision).to.equal(revision);
        });
        expect(revisions.slice(expected.length)).to.deep.equal([...concurrent].sort((a, b) => a - b));
      });

      it('replays from an earlier revision, then continues live', async () => {
        await store.put(`${ns}r/a`, 'a');
        const b = await store.put(`${ns}r/b`, 'b');
        await store.delete(`${ns}r/a`);
        const c = await store.put(`${ns}r/c`, 'c');
        const log = new EventLog();
        await store.watch(`${ns}r/`, log.handler, { fromRevision: b });
        await log.waitForCount(3);
        const d = await store.put(`${ns}r/d`, 'd');
        await log.waitForCount(4);
        expect(log.events.map((event) => [event.type, keyOf(event)])).to.deep.equal([
          ['put', `${ns}r/b`],
          ['delete', `${ns}r/a`],
          ['put', `${ns}r/c`],
          ['put', `${ns}r/d`],
        ]);
        expect(log.events[0]?.revision).to.equal(b);
        expect(log.events[1]?.revision).to.be.greaterThan(b).and.lessThan(c);
        expect(log.events[2]?.revision).to.equal(c);
        expect(log.events[3]?.revision).to.equal(d);
      });

      it('stops delivery on cancel, and cancel is idempotent', async () => {
        const cancelled = new EventLog();
        const kept = new EventLog();
        const watch = await store.watch(`${ns}c/`, cancelled.handler);
        await store.watch(`${ns}c/`, kept.handler);
        await store.put(`${ns}c/a`, '1');
        await cancelled.waitForCount(1);
        await kept.waitForCount(1);
        await watch.cancel();
        await store.put(`${ns}c/b`, '2');
        await store.put(`${ns}c/c`, '3');
        await kept.waitForCount(3);
        await sleep(100);
        expect(cancelled.events.map(keyOf)).to.deep.equal([`${ns}c/a`]);
        await watch.cancel();
      });

      it('survives handlers that throw or reject', async () => {
        let thrown = 0;
        let rejected = 0;
        const good = new EventLog();
        await store.watch(`${ns}t/`, () => {
          thrown++;
          throw new Error('handler failure (expected by the test)');
        });
        await store.watch(`${ns}t/`, (() => {
          rejected++;
          return Promise.reject(new Error('async handler failure (expected by the test)'));
        }) as () => void);
        await store.watch(`${ns}t/`, good.handler);
        for (const key of ['a', 'b', 'c']) await store.put(`${ns}t/${key}`, key);
        await good.waitForCount(3);
        await waitUntil(async () => thrown === 3 && rejected === 3, 5000, 'every handler to see every event');
        const next = await store.put(`${ns}t/d`, 'd');
        await good.waitForCount(4);
        expect(good.events.map((event) => event.revision).at(-1)).to.equal(next);
        expect(await store.get(`${ns}t/a`)).to.deep.include({ value: 'a' });
      });
    });

    describe('leases', () => {
      it('attaches keys to a lease', async () => {
        const lease = await store.grantLease(60);
        expect(lease.id).to.be.a('string').and.not.equal('');
        expect(lease.ttlSeconds).to.be.at.least(60);
        await store.put(`${ns}l/a`, 'one', { lease: lease.id });
        expect(await store.get(`${ns}l/a`)).to.deep.include({ value: 'one', lease: lease.id });
        expect((await store.list(`${ns}l/`)).entries[0]?.lease).to.equal(lease.id);
        await lease.revoke();
      });

      it('deletes attached keys with delete events when the lease expires', async () => {
        const log = new EventLog();
        await store.watch(`${ns}x/`, log.handler);
        const granted = Date.now();
        const lease = await store.grantLease(1);
        const putA = await store.put(`${ns}x/a`, 'a', { lease: lease.id });
        const putB = await store.put(`${ns}x/b`, 'b', { lease: lease.id });
        await store.put(`${ns}x/free`, 'free');
        expect(await store.get(`${ns}x/a`)).to.not.equal(undefined);

        const ttlMs = lease.ttlSeconds * 1000;
        await waitUntil(async () => (await store.get(`${ns}x/a`)) === undefined, ttlMs + 5000, 'the leased key to expire');
        expect(Date.now() - granted, 'expired before its TTL').to.be.at.least(ttlMs - 250);
        expect(await store.get(`${ns}x/b`)).to.equal(undefined);
        expect(await store.get(`${ns}x/free`)).to.deep.include({ value: 'free' });
        await log.waitFor((events) => events.filter((event) => event.type === 'delete').length === 2, 'two delete events');
        const deletions = log.events.filter((event) => event.type === 'delete');
        expect(deletions.map(keyOf).sort()).to.deep.equal([`${ns}x/a`, `${ns}x/b`]);
        for (const event of deletions) expect(event.revision).to.be.greaterThan(Math.max(putA, putB));

        await expectBerthError(store.put(`${ns}x/c`, 'c', { lease: lease.id }), 'ERR_LEASE_NOT_FOUND');
        await expectBerthError(lease.keepAlive(), 'ERR_LEASE_NOT_FOUND');
        expect(await store.get(`${ns}x/c`)).to.equal(undefined);
      });

      it('deletes attached keys at once, at one revision, on revoke; revoke is idempotent', async () => {
        const log = new EventLog();
        await store.watch(`${ns}v/`, log.handler);
        const lease = await store.grantLease(60);
        const last = Math.max(await store.put(`${ns}v/a`, 'a', { lease: lease.id }), await store.put(`${ns}v/b`, 'b', { lease: lease.id }));
        await store.put(`${ns}v/free`, 'free');
        await lease.revoke();
        expect(await store.get(`${ns}v/a`)).to.equal(undefined);
        expect(await store.get(`${ns}v/b`)).to.equal(undefined);
        expect(await store.get(`${ns}v/free`)).to.deep.include({ value: 'free' });
        await log.waitFor((events) => events.filter((event) => event.type === 'delete').length === 2, 'two delete events');
        const deletions = log.events.filter((event) => event.type === 'delete');
        expect(deletions.map(keyOf).sort()).to.deep.equal([`${ns}v/a`, `${ns}v/b`]);
        expect(deletions[0]?.revision).to.be.greaterThan(last).and.equal(deletions[1]?.revision);

        await lease.revoke();
        await expectBerthError(store.put(`${ns}v/c`, 'c', { lease: lease.id }), 'ERR_LEASE_NOT_FOUND');
        await expectBerthError(lease.keepAlive(), 'ERR_LEASE_NOT_FOUND');
      });

      it('keeps the keys past the TTL while kept alive, and expires them after', async () => {
        const lease = await store.grantLease(1);
        await store.put(`${ns}k/a`, 'a', { lease: lease.id });
        const ttlMs = lease.ttlSeconds * 1000;
        const until = Date.now() + 2.5 * ttlMs;
        while (Date.now() < until) {
          await lease.keepAlive();
          expect(await store.get(`${ns}k/a`), 'kept-alive key').to.deep.include({ value: 'a', lease: lease.id });
          await sleep(ttlMs / 4);
        }
        await lease.keepAlive();
        expect(await store.get(`${ns}k/a`)).to.deep.include({ value: 'a' });
        await waitUntil(async () => (await store.get(`${ns}k/a`)) === undefined, ttlMs + 5000, 'the key to expire without keep-alives');
      });

      it('detaches a key put without the lease; updateEntry keeps the lease', async () => {
        const lease = await store.grantLease(60);
        await store.put(`${ns}d/detached`, 'one', { lease: lease.id });
        await store.put(`${ns}d/detached`, 'two');
        expect((await store.get(`${ns}d/detached`))?.lease).to.equal(undefined);
        await store.put(`${ns}d/updated`, '1', { lease: lease.id });
        await updateEntry(store, `${ns}d/updated`, (current) => ({ value: `${current?.value ?? ''}!`, result: undefined }));
        expect(await store.get(`${ns}d/updated`)).to.deep.include({ value: '1!', lease: lease.id, version: 2 });
        await lease.revoke();
        expect(await store.get(`${ns}d/detached`)).to.deep.include({ value: 'two' });
        expect(await store.get(`${ns}d/updated`)).to.equal(undefined);
      });

      it('refuses a revoked lease, but reports a failed compare first', async () => {
        const lease = await store.grantLease(60);
        await lease.revoke();
        await expectBerthError(store.put(`${ns}a`, 'x', { lease: lease.id }), 'ERR_LEASE_NOT_FOUND');
        expect(await store.get(`${ns}a`)).to.equal(undefined);
        const written = await store.put(`${ns}b`, 'x');
        await expectBerthError(store.put(`${ns}b`, 'y', { expectRevision: written + 1000, lease: lease.id }), 'ERR_STATE_CONFLICT');
      });
    });

    describe('updateEntry', () => {
      it('ends at exactly 20 after 20 concurrent increments', async () => {
        const key = `${ns}counter`;
        const results = await Promise.all(
          Array.from({ length: 20 }, () =>
            updateEntry(store, key, (current) => {
              const next = Number(current?.value ?? '0') + 1;
              return { value: String(next), result: next };
            }),
          ),
        );
        expect(await store.get(key)).to.deep.include({ value: '20', version: 20 });
        expect([...results].sort((a, b) => a - b)).to.deep.equal(Array.from({ length: 20 }, (_, index) => index + 1));
      });

      it('writes nothing for a result-only mutation and deletes for a delete outcome', async () => {
        const key = `${ns}a`;
        const written = await store.put(key, 'one');
        const seen = await updateEntry(store, key, (current) => ({ result: current?.value }));
        expect(seen).to.equal('one');
        expect(await store.get(key)).to.deep.include({ modRevision: written, version: 1 });
        expect(await updateEntry(store, key, () => ({ delete: true as const, result: 'gone' }))).to.equal('gone');
        expect(await store.get(key)).to.equal(undefined);
        expect(await updateEntry(store, key, () => ({ delete: true as const, result: 'already gone' }))).to.equal('already gone');
      });
    });

    describe('close', () => {
      it('is idempotent, and every later call fails with ERR_STATE_UNAVAILABLE', async () => {
        await store.put(`${ns}a`, 'one');
        await store.close();
        await store.close();
        await expectBerthError(store.get(`${ns}a`), 'ERR_STATE_UNAVAILABLE');
        await expectBerthError(store.put(`${ns}a`, 'two'), 'ERR_STATE_UNAVAILABLE');
        await expectBerthError(store.delete(`${ns}a`), 'ERR_STATE_UNAVAILABLE');
        await expectBerthError(store.list(ns), 'ERR_STATE_UNAVAILABLE');
        await expectBerthError(store.watch(ns, () => undefined), 'ERR_STATE_UNAVAILABLE');
        await expectBerthError(store.grantLease(10), 'ERR_STATE_UNAVAILABLE');
        await expectBerthError(store.revision(), 'ERR_STATE_UNAVAILABLE');
      });
    });

    describe('persistence across reopen', () => {
      it('keeps entries, revisions, versions, leases and deletions', async function () {
        if (fixture.reopen === undefined) this.skip();
        const lease = await store.grantLease(600);
        await store.put(`${ns}p/a`, 'one');
        await store.put(`${ns}p/a`, 'two');
        await store.put(`${ns}p/leased`, 'leased', { lease: lease.id });
        await store.put(`${ns}p/gone`, 'gone');
        await store.delete(`${ns}p/gone`);
        const samples = awkwardSamples(`${ns}p/`);
        for (const [key, value] of samples) await store.put(key, value);
        const before = await store.list(`${ns}p/`);
        const revision = await store.revision();
        await store.close();

        const reopened = await fixture.reopen();
        expect(await reopened.list(`${ns}p/`)).to.deep.include({ entries: before.entries });
        expect(await reopened.get(`${ns}p/a`)).to.deep.include({ value: 'two', version: 2 });
        expect(await reopened.get(`${ns}p/gone`)).to.equal(undefined);
        expect(await reopened.get(`${ns}p/leased`)).to.deep.include({ lease: lease.id });
        for (const [key, value] of samples) expect((await reopened.get(key))?.value, JSON.stringify(key)).to.equal(value);
        expect(await reopened.revision()).to.be.at.least(revision);
        expect(await reopened.put(`${ns}p/new`, 'new')).to.be.greaterThan(revision);
        await expectBerthError(store.get(`${ns}p/a`), 'ERR_STATE_UNAVAILABLE');
      });

      it('expires a lease that nobody keeps alive after reopen', async function () {
        if (fixture.reopen === undefined) this.skip();
        const lease = await store.grantLease(1);
        await store.put(`${ns}e/a`, 'a', { lease: lease.id });
        await store.close();
        const reopened = await fixture.reopen();
        await waitUntil(async () => (await reopened.get(`${ns}e/a`)) === undefined, lease.ttlSeconds * 1000 + 5000, 'the leased key to expire');
        await expectBerthError(reopened.put(`${ns}e/b`, 'b', { lease: lease.id }), 'ERR_LEASE_NOT_FOUND');
      });
    });
  });
}

/** Keys and values that break naive serializations (line breaks, JSON syntax, separators, astral characters). */
function awkwardSamples(prefix: string): Array<[string, string]> {
  return [
    [`${prefix}empty`, ''],
    [`${prefix}lines`, 'line 1\nline 2\r\nline 3\rend\v\f'],
    [`${prefix}json`, '{"_id":"e:/x","t":"e"}\n"quoted" \\ backslash $$deleted'],
    [`${prefix}separators`, 'nel\u0085 ls\u2028 ps\u2029 nul\u0000 end'],
    [`${prefix}ünï cødé 😀/$key.with.dots`, 'unicode ✓ 😀 \uFEFF'],
    [`${prefix}large`, 'x'.repeat(100_000)],
  ];
}

function keyOf(event: WatchEvent | undefined): string | undefined {
  if (event === undefined) return undefined;
  return event.type === 'put' ? event.entry.key : event.key;
}

class EventLog {
  readonly events: WatchEvent[] = [];
  readonly handler = (event: WatchEvent): void => {
    this.events.push(event);
  };

  waitForCount(count: number, timeoutMs = 5000): Promise<void> {
    return this.waitFor((events) => events.length >= count, `${count} watch events`, timeoutMs);
  }

  async waitFor(predicate: (events: readonly WatchEvent[]) => boolean, what: string, timeoutMs = 5000): Promise<void> {
    await waitUntil(async () => predicate(this.events), timeoutMs, () => `${what} (got ${JSON.stringify(this.events)})`);
  }
}

async function waitUntil(condition: () => Promise<boolean>, timeoutMs: number, what: string | (() => string)): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await sleep(20);
  }
}

