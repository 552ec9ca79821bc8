import { randomUUID } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { expect } from 'chai';
import { isBerthError, type BerthError } from '../../plugins/errors/berth-error.js';
import { EtcdStateStore, type EtcdStateStoreOptions } from '../../plugins/state/etcd-state-store.js';
import type { StateStore, WatchEvent } from '../../plugins/state/state-store.js';
import { deadEndpoint, startEtcd, type EtcdServer } from '../helpers/etcd-server.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { sleep, waitUntil } from '../helpers/wait-until.js';

// etcd-specific behaviour the contract cannot show: a dead, restarted, unreachable or compacting etcd.
describe('EtcdStateStore with a real etcd', function () {
  this.timeout(90_000);

  let etcd: EtcdServer;
  let prefix: string;
  const opened: StateStore[] = [];
  const proxies: TcpProxy[] = [];

  const open = async (endpoints: readonly string[], options: EtcdStateStoreOptions = {}): Promise<EtcdStateStore> => {
    const store = await EtcdStateStore.open(endpoints, { prefix, requestTimeoutMs: 2_000, dialTimeoutMs: 2_000, ...options });
    opened.push(store);
    return store;
  };

  before(async () => {
    etcd = await startEtcd();
  });

  after(async () => {
    await etcd?.stop();
  });

  beforeEach(() => {
    prefix = `berth-it/${randomUUID()}/`;
  });

  afterEach(async () => {
    for (const store of opened.splice(0)) await store.close();
    for (const proxy of proxies.splice(0)) await proxy.close();
  });

  it('refuses to open against an endpoint where nothing listens, naming it', async () => {
    const dead = await deadEndpoint();
    const error = await expectBerthError(EtcdStateStore.open([dead], { dialTimeoutMs: 2_000 }), 'ERR_STATE_UNAVAILABLE');
    expect(error.message).to.include(dead);
  });

  it('fails fast with ERR_STATE_UNAVAILABLE naming the endpoint while etcd is down, and the same store works after a restart', async () => {
    const store = await open([etcd.endpoint]);
    await store.put('k', 'before');
    const lease = await store.grantLease(60);
    await etcd.kill();
    try {
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['get', () => store.get('k')],
        ['put', () => store.put('k', 'during')],
        ['compare-and-swap put', () => store.put('k', 'during', { expectRevision: 1 })],
        ['delete', () => store.delete('k')],
        ['list', () => store.list('')],
        ['revision', () => store.revision()],
        ['watch', () => store.watch('', () => undefined)],
        ['grantLease', () => store.grantLease(10)],
        ['keepAlive', () => lease.keepAlive()],
        ['revoke', () => lease.revoke()],
      ];
      for (const [what, call] of calls) {
        const error = await expectBerthError(call(), 'ERR_STATE_UNAVAILABLE').catch((failure: unknown) => {
          throw new Error(`${what}: ${(failure as Error).message}`, { cause: failure });
        });
        expect(error.message, what).to.include(etcd.endpoint);
      }
    } finally {
      await etcd.restart();
    }
    const entry = await waitUntil(() => store.get('k').catch(() => undefined), { description: 'the store to answer after the restart', timeoutMs: 20_000 });
    expect(entry).to.deep.include({ value: 'before' });
    const written = await store.put('k', 'after');
    expect(await store.get('k')).to.deep.include({ value: 'after', modRevision: written, version: 2 });
    await lease.keepAlive();
    await lease.revoke();
  });

  it('resumes a watch across an etcd restart without losing or repeating events, and reports the interruption', async () => {
    const problems: BerthError[] = [];
    const store = await open([etcd.endpoint], { onWatchError: (error) => problems.push(error as BerthError) });
    const events: WatchEvent[] = [];
    await store.watch('w/', (event) => events.push(event));
    await store.put('w/a', '1');
    await waitUntil(() => events.length === 1, { description: 'the first event', timeoutMs: 5_000 });

    await etcd.kill();
    await waitUntil(() => problems.length > 0, { description: 'the watch to report its interruption', timeoutMs: 10_000 });
    expect(problems[0]?.code).to.equal('ERR_STATE_UNAVAILABLE');
    expect(problems[0]?.message).to.include('w/').and.include(etcd.endpoint);
    await etcd.restart();

    // Written by another client, possibly before the watch is back: it must be replayed.
    await etcd.etcdctl(['put', `${prefix}w/b`, '2']);
    await waitUntil(() => store.revision().catch(() => undefined), { description: 'the store to answer after the restart', timeoutMs: 20_000 });
    await store.put('w/c', '3');
    await waitUntil(() => events.length >= 3, { description: 'the events written around the restart', timeoutMs: 20_000 });
    await sleep(200);
    expect(events.map((event) => (event.type === 'put' ? [event.entry.key, event.entry.value] : [event.key]))).to.deep.equal([
      ['w/a', '1'],
      ['w/b', '2'],
      ['w/c', '3'],
    ]);
    const revisions = events.map((event) => event.revision);
    expect(revisions).to.deep.equal([...revisions].sort((a, b) => a - b));
    expect(problems.map((problem) => problem.code)).to.deep.equal(['ERR_STATE_UNAVAILABLE']);
  });

  it('refuses a watch from a compacted revision with ERR_STATE_COMPACTED, and replays from the compaction point', async () => {
    const store = await open([etcd.endpoint]);
    const first = await store.put('c/a', '1');
    await store.put('c/a', '2');
    const third = await store.put('c/a', '3');
    await etcd.etcdctl(['compaction', String(third)]);
    const error = await expectBerthError(store.watch('c/', () => undefined, { fromRevision: first }), 'ERR_STATE_COMPACTED');
    expect(error.message).to.include(String(first)).and.include('c/');
    const events: WatchEvent[] = [];
    await store.watch('c/', (event) => events.push(event), { fromRevision: third });
    await waitUntil(() => events.length === 1, { description: 'the event at the compaction revision', timeoutMs: 5_000 });
    expect(events[0]).to.deep.include({ type: 'put', revision: third });
  });

  it('resumes a watch whose connection broke from the next revision, replaying what it missed', async () => {
    const proxy = await startProxy(etcd.endpoint);
    proxies.push(proxy);
    const problems: unknown[] = [];
    const store = await open([proxy.endpoint], { onWatchError: (error) => problems.push(error) });
    const events: WatchEvent[] = [];
    await store.watch('r/', (event) => events.push(event));
    await store.put('r/a', '1');
    await waitUntil(() => events.length === 1, { description: 'the first event', timeoutMs: 5_000 });

    proxy.cut();
    await waitUntil(() => problems.length > 0, { description: 'the interruption to be reported', timeoutMs: 10_000 });
    await etcd.etcdctl(['put', `${prefix}r/b`, '2']);
    await etcd.etcdctl(['del', `${prefix}r/a`]);
    await etcd.etcdctl(['put', `${prefix}r/c`, '3']);
    proxy.heal();
    await waitUntil(() => events.length >= 4, { description: 'the missed events', timeoutMs: 15_000 });
    await sleep(200);
    expect(events.map((event) => [event.type, event.type === 'put' ? event.entry.key : event.key])).to.deep.equal([
      ['put', 'r/a'],
      ['put', 'r/b'],
      ['delete', 'r/a'],
      ['put', 'r/c'],
    ]);
  });

  it('stops a broken watch whose missed revisions were compacted and reports ERR_STATE_COMPACTED', async () => {
    const proxy = await startProxy(etcd.endpoint);
    proxies.push(proxy);
    const problems: unknown[] = [];
    const store = await open([proxy.endpoint], { onWatchError: (error) => problems.push(error) });
    const events: WatchEvent[] = [];
    await store.watch('x/', (event) => events.push(event));
    proxy.cut();
    await waitUntil(() => problems.length > 0, { description: 'the interruption to be reported', timeoutMs: 10_000 });
    await etcd.etcdctl(['put', `${prefix}x/a`, '1']);
    const put = await etcd.etcdctl(['put', `${prefix}x/b`, '2', '-w', 'json']);
    const revision = (JSON.parse(put.stdout) as { header: { revision: number } }).header.revision;
    await etcd.etcdctl(['compaction', String(revision)]);
    proxy.heal();
    const compacted = await waitUntil(() => problems.find((problem) => isBerthError(problem, 'ERR_STATE_COMPACTED')), {
      description: 'the compaction to be reported',
      timeoutMs: 15_000,
    });
    expect((compacted as BerthError).message).to.include('x/');
    await store.put('x/c', '3');
    await sleep(300);
    expect(events).to.deep.equal([]);
  });

  it('bounds a request that gets no answer by the request timeout', async () => {
    const proxy = await startProxy(etcd.endpoint);
    proxies.push(proxy);
    const store = await open([proxy.endpoint], { requestTimeoutMs: 1_000 });
    await store.put('t', '1');
    proxy.blackhole();
    for (const call of [() => store.get('t'), () => store.put('t', '2'), () => store.watch('', () => undefined), () => store.grantLease(5)]) {
      const error = await expectBerthError(call(), 'ERR_STATE_UNAVAILABLE');
      expect(error.message).to.include(proxy.endpoint);
    }
    proxy.heal();
    await waitUntil(() => store.get('t').catch(() => undefined), { description: 'the store to answer again', timeoutMs: 15_000 });
  });

  it('uses the live endpoint when another one is down', async () => {
    const dead = await deadEndpoint();
    const store = await open([dead, etcd.endpoint]);
    expect(store.description).to.include(dead).and.include(etcd.endpoint);
    for (let round = 0; round < 10; round++) {
      const events: WatchEvent[] = [];
      const watch = await store.watch(`f${round}/`, (event) => events.push(event));
      const written = await store.put(`f${round}/k`, String(round));
      expect(await store.get(`f${round}/k`)).to.deep.include({ modRevision: written });
      const lease = await store.grantLease(30);
      await lease.keepAlive();
      await lease.revoke();
      await waitUntil(() => events.length === 1, { description: 'the event', timeoutMs: 5_000 });
      await watch.cancel();
    }
  });
});


interface TcpProxy {
  readonly endpoint: string;
  /** Drops every connection and resets new ones at once (etcd looks down). */
  cut(): void;
  /** Drops every connection and holds new ones without an answer (etcd looks unreachable). */
  blackhole(): void;
  heal(): void;
  close(): Promise<void>;
}

/** A loopback TCP proxy in front of etcd, so a test can break the store's connections while etcd stays up. */
async function startProxy(target: string): Promise<TcpProxy> {
  const [host, port] = splitEndpoint(target);
  let mode: 'forward' | 'cut' | 'blackhole' = 'forward';
  const sockets = new Set<Socket>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  };
  const server: Server = createServer((client) => {
    track(client);
    if (mode === 'cut') return void client.resetAndDestroy();
    if (mode === 'blackhole') return;
    const upstream = connect(port, host);
    track(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('proxy has no port');
  const dropAll = (): void => {
    for (const socket of sockets) socket.resetAndDestroy();
  };
  return {
    endpoint: `127.0.0.1:${address.port}`,
    cut: () => {
      mode = 'cut';
      dropAll();
    },
    blackhole: () => {
      mode = 'blackhole';
      dropAll();
    },
    heal: () => {
      mode = 'forward';
      // Held connections never got an answer; drop them so the client reconnects.
      dropAll();
    },
    close: async () => {
      dropAll();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function splitEndpoint(endpoint: string): [string, number] {
  const index = endpoint.lastIndexOf(':');
  return [endpoint.slice(0, index).replace(/^\[|\]$/g, ''), Number(endpoint.slice(index + 1))];
}
