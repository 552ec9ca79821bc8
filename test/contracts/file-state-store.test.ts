import { spawn } from 'node:child_process';
import { appendFile, copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import { FileStateStore, type FileStateStoreOptions } from '../../plugins/state/file-state-store.js';
import type { WatchEvent } from '../../plugins/state/state-store.js';
import { describeStateStoreContract } from './state-store-contract.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';

describeStateStoreContract('FileStateStore', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-state-contract-'));
  const path = join(dir, 'state.db');
  const opened: FileStateStore[] = [];
  const open = async (): Promise<FileStateStore> => {
    // Handler failures are part of the contract tests; keep them out of the output.
    const store = await FileStateStore.open(path, { onWatchError: () => undefined });
    opened.push(store);
    return store;
  };
  return {
    store: await open(),
    reopen: open,
    dispose: async () => {
      for (const store of opened) await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

describe('FileStateStore', function () {
  this.timeout(20_000);

  let dir: string;
  let path: string;
  const opened: FileStateStore[] = [];
  const open = async (options?: FileStateStoreOptions, file = path): Promise<FileStateStore> => {
    const store = await FileStateStore.open(file, options);
    opened.push(store);
    return store;
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-file-state-'));
    path = join(dir, 'state.db');
  });

  afterEach(async () => {
    for (const store of opened.splice(0)) await store.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('describes itself by its file and creates missing directories', async () => {
    const nested = join(dir, 'a', 'b', 'state.db');
    const store = await open({}, nested);
    expect(store.description).to.equal(`file ${nested}`);
    await store.put('/k', 'v');
    expect((await stat(nested)).isFile()).to.equal(true);
  });

  it('refuses a second open of the same file while it is open, and holds a lock file until close', async () => {
    const store = await open();
    const lock = JSON.parse(await readFile(`${path}.lock`, 'utf8')) as { pid: number };
    expect(lock.pid).to.equal(process.pid);
    const error = await expectBerthError(FileStateStore.open(path), 'ERR_STATE_UNAVAILABLE');
    expect(error.message).to.include(path).and.include(String(process.pid));
    await store.close();
    await expectMissing(`${path}.lock`);
    const again = await open();
    expect(await again.revision()).to.equal(0);
  });

  it('takes over the lock of a process that is gone', async () => {
    const pid = await deadPid();
    await writeFile(`${path}.lock`, JSON.stringify({ pid, token: 'stale', startTime: '1' }));
    const store = await open();
    const lock = JSON.parse(await readFile(`${path}.lock`, 'utf8')) as { pid: number };
    expect(lock.pid).to.equal(process.pid);
    expect(await store.put('/k', 'v')).to.equal(1);
  });

  it('keeps the exact revision when the newest entries were deleted', async () => {
    let store = await open();
    await store.put('/a', '1');
    await store.put('/b', '2');
    await store.delete('/b');
    await store.delete('/a');
    expect(await store.revision()).to.equal(4);
    await store.close();
    store = await open();
    expect(await store.revision()).to.equal(4);
    expect(await store.put('/c', '3')).to.equal(5);
    const lease = await store.grantLease(60);
    await store.put('/d', '4', { lease: lease.id });
    await lease.revoke();
    expect(await store.revision()).to.equal(7);
    await store.close();
    store = await open();
    expect(await store.revision()).to.equal(7);
    expect((await store.list('/')).entries.map((entry) => entry.key)).to.deep.equal(['/c']);
  });

  it('recovers the revision from a crash image taken right after deletions and a revoke', async () => {
    // Every acknowledged write is in the file, so a copy taken now is what a kill -9 would leave behind.
    const store = await open();
    await store.put('/a', '1');
    await store.put('/b', '2');
    await store.delete('/b');
    await store.delete('/a');
    const afterDeletes = join(dir, 'after-deletes.db');
    await copyFile(path, afterDeletes);
    const lease = await store.grantLease(60);
    await store.put('/c', '3');
    await store.put('/d', '4', { lease: lease.id });
    await lease.revoke();
    const afterRevoke = join(dir, 'after-revoke.db');
    await copyFile(path, afterRevoke);

    const first = await open({}, afterDeletes);
    expect(await first.revision()).to.equal(4);
    expect((await first.list('/')).entries).to.deep.equal([]);
    const second = await open({}, afterRevoke);
    expect(await second.revision()).to.equal(7);
    expect((await second.list('/')).entries.map((entry) => entry.key)).to.deep.equal(['/c']);
    expect(await second.put('/e', '5')).to.equal(8);
  });

  it('finishes an interrupted revocation and drops keys of vanished leases at open', async () => {
    const exp = Date.now() + 60_000;
    const docs = [
      { _id: 'l:half', t: 'l', id: 'half', ttl: 60, exp, revoked: true },
      { _id: 'l:live', t: 'l', id: 'live', ttl: 60, exp },
      { _id: 'e:/half', t: 'e', key: '/half', value: 'v', cr: 1, mr: 1, ver: 1, lease: 'half' },
      { _id: 'e:/orphan', t: 'e', key: '/orphan', value: 'v', cr: 2, mr: 2, ver: 1, lease: 'vanished' },
      { _id: 'e:/live', t: 'e', key: '/live', value: 'v', cr: 3, mr: 3, ver: 1, lease: 'live' },
      { _id: 'e:/free', t: 'e', key: '/free', value: 'v', cr: 4, mr: 5, ver: 2 },
    ];
    await writeFile(path, docs.map((doc) => `${JSON.stringify(doc)}\n`).join(''));
    const store = await open();
    expect((await store.list('/')).entries.map((entry) => entry.key)).to.deep.equal(['/free', '/live']);
    expect(await store.revision()).to.be.greaterThan(5);
    await store.put('/x', 'y', { lease: 'live' });
    await expectBerthError(store.put('/y', 'y', { lease: 'half' }), 'ERR_LEASE_NOT_FOUND');
  });

  it('reports a corrupt file with its path and line, and leaves it untouched', async () => {
    const store = await open();
    await store.put('/a', '1');
    await store.put('/b', '2');
    await store.close();
    const lines = (await readFile(path, 'utf8')).split('\n');
    lines.splice(1, 0, '{"_id":"e:/c","t":"e",garbage');
    const corrupted = lines.join('\n');
    await writeFile(path, corrupted);
    const error = await expectBerthError(FileStateStore.open(path), 'ERR_STATE_CORRUPT');
    expect(error.message).to.include(path).and.include('line 2');
    expect(await readFile(path, 'utf8')).to.equal(corrupted);
    await expectMissing(`${path}.lock`);
  });

  it('reports documents of the wrong shape as corruption', async () => {
    await writeFile(path, '{"_id":"e:/k","t":"e","key":"/k","cr":1,"mr":1,"ver":1}\n');
    const error = await expectBerthError(FileStateStore.open(path), 'ERR_STATE_CORRUPT');
    expect(error.message).to.include(path).and.include('e:/k');
    await writeFile(path, '{"_id":"meta","t":"m","format":99,"rev":3}\n');
    expect((await expectBerthError(FileStateStore.open(path), 'ERR_STATE_CORRUPT')).message).to.include('format 99');
  });

  it('drops a torn last line left by a crash and keeps everything before it', async () => {
    let store = await open();
    await store.put('/a', '1');
    const last = await store.put('/b', '2');
    await store.close();
    await appendFile(path, '{"_id":"e:/c","t":"e","key":"/c","value":"3","cr":3,"m');
    store = await open();
    expect((await store.list('/')).entries.map((entry) => [entry.key, entry.value])).to.deep.equal([
      ['/a', '1'],
      ['/b', '2'],
    ]);
    expect(await store.revision()).to.equal(last);
    expect(await store.put('/c', 'again')).to.equal(last + 1);
    await store.close();
    store = await open();
    expect(await store.get('/c')).to.deep.include({ value: 'again', modRevision: last + 1 });
  });

  it('escapes the line separators that nedb would split on', async () => {
    let store = await open();
    const value = 'nel\u0085 ls\u2028 ps\u2029';
    await store.put('/k', value);
    const raw = await readFile(path, 'utf8');
    expect(raw).to.not.match(/[\u0085\u2028\u2029]/);
    await store.close();
    store = await open();
    expect((await store.get('/k'))?.value).to.equal(value);
  });

  it('expires the leases of a previous run at open', async () => {
    let store = await open();
    const lease = await store.grantLease(1);
    await store.put('/leased', 'x', { lease: lease.id });
    await store.put('/free', 'y');
    const before = await store.revision();
    await store.close();
    await sleep(1100);
    store = await open();
    expect(await store.get('/leased')).to.equal(undefined);
    expect(await store.get('/free')).to.deep.include({ value: 'y' });
    expect(await store.revision()).to.equal(before + 1);
    await expectBerthError(store.put('/again', 'z', { lease: lease.id }), 'ERR_LEASE_NOT_FOUND');
  });

  it('refuses to replay watches from before its history window', async () => {
    let store = await open({ watchHistory: 5 });
    const revisions: number[] = [];
    for (let index = 0; index < 20; index++) revisions.push(await store.put(`/h/${index % 3}`, String(index)));
    const error = await expectBerthError(store.watch('/h/', () => undefined, { fromRevision: revisions[0] ?? 1 }), 'ERR_STATE_COMPACTED');
    expect(error.message).to.include(String(revisions[0]));
    const events: WatchEvent[] = [];
    await store.watch('/h/', (event) => events.push(event), { fromRevision: revisions[17] ?? 0 });
    await waitUntil(() => events.length === 3, 'three replayed events');
    expect(events.map((event) => event.revision)).to.deep.equal(revisions.slice(17));

    const current = await store.revision();
    await store.close();
    store = await open();
    await expectBerthError(store.watch('/h/', () => undefined, { fromRevision: current }), 'ERR_STATE_COMPACTED');
    const live: WatchEvent[] = [];
    await store.watch('/h/', (event) => live.push(event), { fromRevision: current + 1 });
    const next = await store.put('/h/x', 'x');
    await waitUntil(() => live.length === 1, 'the live event');
    expect(live[0]?.revision).to.equal(next);
  });

  it('compacts the data file while running and at close', async () => {
    const store = await open({ compactionIntervalMs: 50 });
    for (let index = 0; index < 300; index++) await store.put('/hot', String(index));
    await store.put('/gone', 'x');
    await store.delete('/gone');
    await waitUntil(async () => (await lineCount(path)) <= 2, 'the data file to be compacted');
    await store.put('/hot', 'final');
    await store.close();
    expect(await lineCount(path)).to.be.at.most(2);
    const reopened = await open();
    expect(await reopened.get('/hot')).to.deep.include({ value: 'final', version: 301 });
    expect(await reopened.revision()).to.equal(303);
  });

  it('reports watch handler failures to onWatchError and keeps delivering', async () => {
    const failures: Array<[unknown, WatchEvent]> = [];
    const store = await open({ onWatchError: (error, event) => failures.push([error, event]) });
    let calls = 0;
    await store.watch('/w/', () => {
      calls++;
      throw new Error('boom');
    });
    await store.put('/w/a', '1');
    await store.put('/w/b', '2');
    await waitUntil(() => failures.length === 2, 'two reported failures');
    expect(calls).to.equal(2);
    expect((failures[0]?.[0] as Error).message).to.equal('boom');
    expect(failures.map(([, event]) => event.revision)).to.deep.equal([1, 2]);
  });

  it('rejects invalid arguments', async () => {
    const store = await open();
    await expectBerthError(store.put('/k', 'v', { expectRevision: -1 }), 'ERR_INVALID_REQUEST');
    await expectBerthError(store.grantLease(0), 'ERR_INVALID_REQUEST');
    await expectBerthError(store.grantLease(1.5), 'ERR_INVALID_REQUEST');
    await expectBerthError(FileStateStore.open(join(dir, 'other.db'), { watchHistory: -1 }), 'ERR_INVALID_CONFIG');
    expect(await store.revision()).to.equal(0);
  });
});


async function waitUntil(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

async function expectMissing(file: string): Promise<void> {
  try {
    await stat(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  throw new Error(`expected ${file} not to exist`);
}

async function lineCount(file: string): Promise<number> {
  return (await readFile(file, 'utf8')).split('\n').filter((line) => line !== '').length;
}

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  const pid = child.pid;
  await new Promise((resolve) => child.once('exit', resolve));
  if (pid === undefined) throw new Error('could not spawn a short-lived process');
  return pid;
}
