import { expect } from 'chai';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { createLogger } from '../../plugins/logging/logger.js';
import { FileStateStore } from '../../plugins/state/file-state-store.js';
import { ClusterVolumeRepository } from '../../volume-driver/replication/cluster-volume-repository.js';
import { ClusteredVolumes } from '../../volume-driver/replication/clustered-volumes.js';
import type { PeerLink, PeerRoute, PeerStreamReply } from '../../volume-driver/replication/peer-link.js';
import { createReplicationPeerRoutes } from '../../volume-driver/replication/replication-peer-routes.js';
import { ReplicationService } from '../../volume-driver/replication/replication-service.js';
import { DirBackend } from '../../volume-driver/storage/dir-backend.js';
import type { DirReplication } from '../../volume-driver/storage/dir-replication.js';
import { UsageTracker } from '../../volume-driver/usage-tracker.js';
import { VolumeRepository } from '../../volume-driver/volume-repository.js';
import { VolumeService } from '../../volume-driver/volume-service.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { FakeEngine } from '../helpers/fake-engine.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitUntil } from '../helpers/wait-until.js';

// The replication control plane of several hosts in one process, on one real file store (leases, watches,
// compare-and-swap as etcd has them) and the dir backend's real replication chain (copies and block-level
// diffs, see dir-replication.ts). The stand-in, said so: peers call each other's route handlers directly
// instead of over mutual TLS, which is tested in the integration and e2e tiers.

const log = createLogger((process.env.BERTH_TEST_LOG as 'debug' | undefined) ?? 'silent');

interface TestHost {
  readonly name: string;
  readonly root: string;
  readonly engine: FakeEngine;
  readonly volumes: VolumeService;
  readonly backend: DirBackend;
  readonly chain: DirReplication;
  service: ReplicationService;
  ops: ClusteredVolumes;
  routes: PeerRoute[];
  start(): Promise<void>;
  stop(): Promise<void>;
  live(volume: string, file?: string): Promise<string>;
}

class InProcessPeers implements PeerLink {
  /** Pause between chunks of every stream: a slow link. */
  static chunkDelayMs = 0;

  constructor(
    private readonly from: string,
    private readonly hosts: Map<string, TestHost>,
    private readonly reachable: () => ReadonlySet<string>,
  ) {}

  private route(host: string, method: string, path: string): { route: PeerRoute; params: Record<string, string>; query: URLSearchParams } {
    const target = this.hosts.get(host);
    if (!target || !this.reachable().has(host)) throw new BerthError('ERR_PEER_UNAVAILABLE', `peer host ${host} is unreachable`);
    const url = new URL(path, 'https://peer');
    for (const route of target.routes) {
      if (route.method !== method) continue;
      const pattern = new RegExp(`^${route.path.replace(/:(\w+)/g, '(?<$1>[^/]+)')}$`);
      const match = pattern.exec(url.pathname);
      if (match) return { route, params: Object.fromEntries(Object.entries(match.groups ?? {}).map(([key, value]) => [key, decodeURIComponent(value)])), query: url.searchParams };
    }
    throw new BerthError('ERR_UNKNOWN_METHOD', `no route ${method} ${path}`);
  }

  async json<T>(host: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const { route, params, query } = this.route(host, method, path);
    return (await route.handler({ peer: this.from, params, query, body })) as T;
  }

  async stream(host: string, path: string): Promise<{ body: Readable; verified: Promise<void> }> {
    const { route, params, query } = this.route(host, 'GET', path);
    const reply = (await route.handler({ peer: this.from, params, query, body: undefined })) as PeerStreamReply;
    const delay = InProcessPeers.chunkDelayMs;
    const source = reply.stream;
    const body = Readable.from(
      delay === 0
        ? source
        : (async function* () {
            for await (const chunk of source) {
              await new Promise((resolve) => setTimeout(resolve, delay));
              yield chunk;
            }
          })(),
    );
    const verified = new Promise<void>((resolve, reject) => {
      body.on('end', resolve);
      body.on('error', reject);
    });
    return { body, verified };
  }
}

describe('replication control plane: ownership, handoff, failover, fencing', function () {
  this.timeout(30_000);
  let temp: { path: string; dispose(): Promise<void> };
  let store: FileStateStore;
  const hosts = new Map<string, TestHost>();
  const alive = new Set<string>();

  async function makeHost(name: string, catchUpBudgetMs = 10_000, replaceReplicasAfterMs = 60_000): Promise<TestHost> {
    const root = join(temp.path, name);
    const backend = new DirBackend(root);
    const engine = new FakeEngine();
    const volumes = new VolumeService({ repository: new VolumeRepository(store, `hosts/${name}/`), backend, usage: new UsageTracker(backend, log), log });
    await volumes.recover();
    const chain = backend.replication;
    const host: TestHost = {
      name,
      root,
      engine,
      volumes,
      backend,
      chain,
      service: undefined as unknown as ReplicationService,
      ops: undefined as unknown as ClusteredVolumes,
      routes: [],
      async start() {
        const live = { liveHostNames: () => new Set(alive) };
        host.service = new ReplicationService({
          repo: new ClusterVolumeRepository(store),
          volumes,
          chain,
          backendKind: 'dir',
          peers: new InProcessPeers(name, hosts, () => alive),
          live,
          engine,
          driverName: 'berth',
          log,
          settings: { hostName: name, leaseTtlSeconds: 1, catchUpBudgetMs, finalShipWaitMs: 5000, defaultIntervalMs: 200, handoffHoldMs: 10_000, replaceReplicasAfterMs },
        });
        host.routes = createReplicationPeerRoutes(host.service);
        host.ops = new ClusteredVolumes(volumes, host.service, backend, live, name, log);
        await host.service.start();
        alive.add(name);
      },
      async stop() {
        alive.delete(name);
        await host.service.stop();
      },
      live: (volume, file = 'data') => readFile(join(backend.path(volume), file), 'utf8'),
    };
    hosts.set(name, host);
    await host.start();
    return host;
  }

  const write = (host: TestHost, volume: string, content: string, file = 'data') => writeFile(join(host.root, 'volumes', volume, file), content);
  const record = async (name: string) => (await new ClusterVolumeRepository(store).get(name))!.value;
  const replicaHolds = (host: TestHost, volume: string, content: string) =>
    waitUntil(async () => {
      const ids = await host.chain.replicationSnapshots(volume);
      const newest = ids.filter((id) => id.startsWith('e')).at(-1);
      return newest !== undefined && (await readFile(join(host.backend.layout.replicaPath(volume, newest), 'data'), 'utf8').catch(() => '')) === content;
    }, { timeoutMs: 10_000, description: `${host.name} to hold ${volume} with ${content}` });

  beforeEach(async () => {
    InProcessPeers.chunkDelayMs = 0;
    temp = await makeTempDir('berth-repl-');
    store = await FileStateStore.open(join(temp.path, 'state.db'));
    alive.clear();
    hosts.clear();
  });

  afterEach(async () => {
    for (const host of hosts.values()) await host.service.stop().catch(() => undefined);
    await store.close();
    await temp.dispose();
  });

  it('creates one volume cluster-wide, visible on every host, and keeps a copy on the chosen replica', async () => {
    const a = await makeHost('hA');
    const b = await makeHost('hB');
    await a.ops.create('db', { replicas: '2', 'replicate-every': '1s' });
    expect(await record('db')).to.include({ owner: 'hA', epoch: 1, mounted: false });
    expect((await record('db')).replicaHosts).to.deep.equal(['hB']);
    // Another host re-running the same create (as Compose does) is fine; different options are not.
    await b.ops.create('db', { replicas: '2', 'replicate-every': '1s' });
    await expectBerthError(b.ops.create('db', { replicas: '3' }), 'ERR_VOLUME_EXISTS', /owned by host hA/);
    expect((await b.ops.listMountpoints()).map((volume) => volume.name)).to.deep.equal(['db']);
    await write(a, 'db', 'v1');
    await replicaHolds(b, 'db', 'v1');
    const view = await a.ops.inspect('db');
    const replicas = (view.replication as { replicas: { host: string; state: string }[] }).replicas;
    expect(replicas.map((replica) => [replica.host, replica.state])).to.deep.equal([['hB', 'in-sync']]);
  });

  it('rebuilds a replica that lost its copy from a whole copy while the owner keeps writing', async () => {
    const a = await makeHost('hA');
    const b = await makeHost('hB');
    await a.ops.create('db', { replicas: '2', 'replicate-every': '1s' });
    await a.ops.mount('db', 'm1');
    await write(a, 'db', 'v1');
    await replicaHolds(b, 'db', 'v1');
    await b.chain.removeReplication('db'); // the replica host's disk was replaced
    await write(a, 'db', 'v2');
    await replicaHolds(b, 'db', 'v2');
    expect(await a.live('db')).to.equal('v2');
    expect(await a.volumes.localMountCount('db')).to.equal(1);
  });

  it('replaces a replica host gone longer than the setting: the copy is rebuilt elsewhere while the owner writes, the returning host drops its own', async () => {
    const a = await makeHost('hA', 10_000, 500);
    const b = await makeHost('hB');
    await a.ops.create('db', { replicas: '2', 'replicate-every': '1s' });
    await a.ops.mount('db', 'm1');
    await write(a, 'db', 'v1');
    await replicaHolds(b, 'db', 'v1');
    const c = await makeHost('hC');
    await b.stop(); // hB dies and stays away
    await write(a, 'db', 'v2');
    await waitUntil(async () => (await record('db')).replicaHosts.join() === 'hC', { timeoutMs: 10_000, description: 'hC to replace hB' });
    await replicaHolds(c, 'db', 'v2');
    expect(await a.live('db')).to.equal('v2');
    expect(await a.volumes.localMountCount('db'), 'the owner kept the volume mounted throughout').to.equal(1);
    await b.start();
    await waitUntil(async () => (await b.chain.replicationSnapshots('db')).length === 0, { timeoutMs: 10_000, description: 'hB to drop its stale copy' });
    const view = await a.ops.inspect('db');
    expect((view.replication as { replicas: { host: string }[] }).replicas.map((replica) => replica.host)).to.deep.equal(['hC']);
  });

  it('ships continuously while the replica keeps up, well inside a long replicate-every', async () => {
    const a = await makeHost('hA');
    const b = await makeHost('hB');
    await a.ops.create('db', { replicas: '2', 'replicate-every': '60s' });
    await a.ops.mount('db', 'm1');
    await write(a, 'db', 'v0');
    await replicaHolds(b, 'db', 'v0'); // the first look ships at once
    // A steady writer: with a 60 s interval alone, nothing more would reach hB during this loop.
    let version = 0;
    await waitUntil(async () => {
      version += 1;
      await write(a, 'db', `v${version}`);
      const held = (await b.chain.replicationSnapshots('db')).filter((id) => id.startsWith('e'));
      return held.length > 0 && Number(/-(\d+)$/.exec(held.at(-1)!)?.[1]) >= 3;
    }, { timeoutMs: 10_000, intervalMs: 100, description: 'hB to hold a third snapshot while hA keeps writing' });
  });

  // A type, not an interface: inspect's record (an index signature) converts only to a type literal.
  type LagView = { head: string | null; replicas: { lagSeconds: number | null; snapshot: string | null; snapshotTakenAt: string }[] };

  /** `db` on hA (replicate-every 1s) held in sync by hB; returns hA's view of its replication. */
  async function volumeInSync(): Promise<{ a: TestHost; b: TestHost; view: () => Promise<LagView> }> {
    const a = await makeHost('hA');
    const b = await makeHost('hB');
    await a.ops.create('db', { replicas: '2', 'replicate-every': '1s' });
    await write(a, 'db', 'v1');
    await replicaHolds(b, 'db', 'v1');
    const view = async (): Promise<LagView> => (await a.ops.inspect('db')).replication as LagView;
    await waitUntil(async () => (await view()).replicas[0]!.lagSeconds === 0, { timeoutMs: 10_000, description: 'hB to be in sync' });
    return { a, b, view };
  }

  it('counts lag from the owner\'s last look that found nothing new, not from the age of an old snapshot', async () => {
    const { a, view: replication } = await volumeInSync();
    await new Promise((resolve) => setTimeout(resolve, 4000)); // idle: the owner looks every second and finds nothing
    await write(a, 'db', 'v2');
    const view = (await replication()).replicas[0]!;
    const snapshotAge = (Date.now() - Date.parse(view.snapshotTakenAt)) / 1000;
    expect(snapshotAge).to.be.greaterThan(4);
    // Behind, but only since the owner's last look (at most one interval ago), not for the snapshot's whole age.
    expect(view.lagSeconds).to.be.a('number').and.greaterThan(0).and.lessThan(snapshotAge - 1.5);
  });

  it('keeps counting lag from that look after the owner took newer snapshots the replica lacks', async () => {
    const { a, b, view } = await volumeInSync();
    await b.stop(); // hB receives nothing more
    await new Promise((resolve) => setTimeout(resolve, 4000)); // idle: the owner looks every second and finds nothing
    const written = Date.now();
    await write(a, 'db', 'v2');
    const seen = await waitUntil(async () => {
      const current = await view();
      return current.head !== null && current.head !== current.replicas[0]!.snapshot ? current : undefined;
    }, { timeoutMs: 10_000, intervalMs: 50, description: 'hA to take a snapshot hB does not hold' });
    const replica = seen.replicas[0]!;
    const snapshotAge = (Date.now() - Date.parse(replica.snapshotTakenAt)) / 1000;
    expect(snapshotAge).to.be.greaterThan(4);
    // The change hB lacks is younger than the owner's last look before it, at most one interval before the write.
    expect(replica.lagSeconds).to.be.a('number').and.lessThan((Date.now() - written) / 1000 + 1.5);
  });

  it('refuses replicas it cannot place, naming the live hosts', async () => {
    const a = await makeHost('hA');
    await expectBerthError(a.ops.create('db', { replicas: '2' }), 'ERR_INVALID_OPTION', /needs 1 other live host\(s\); live hosts besides this one: none/);
    expect(await new ClusterVolumeRepository(store).get('db')).to.equal(undefined);
  });

  it('refuses a Mount on a second host while the owner has it mounted, naming the owner', async () => {
    const a = await makeHost('hA');
    const b = await makeHost('hB');
    await a.ops.create('db', { replicas: '2' });
    await a.ops.mount('db', 'm1');
    await expectBerthError(b.ops.mount('db', 'm2'), 'ERR_VOLUME_MOUNTED_ELSEWHERE', /in use on host hA/);
    expect(await b.volumes.hasLiveCopy('db')).to.equal(false);
  });

  it('hands a volume off with zero loss: the last Unmount ships the final state, a Mount elsewhere takes it', async () => {
    const a = await makeHost('hA');
    const b = await makeHost('hB');
    await a.ops.create('db', { replicas: '2', 'replicate-every': '30s' });
    await a.ops.mount('db', 'm1');
    await write(a, 'db', 'committed-before-stop');
    await a.ops.unmount('db', 'm1');
    const path = await b.ops.mount('db', 'm2');
    expect(await readFile(join(path, 'data'), 'utf8')).to.equal('committed-before-stop');
    expect(await record('db')).to.include({ owner: 'hB', epoch: 2, mounted: true });
    expect((await record('db')).replicaHosts).to.deep.equal(['hA']);
    // The former owner gives its live copy up and follows the new owner as a replica.
    await waitUntil(async () => !(await a.volumes.hasLiveCopy('db')), { timeoutMs: 10_000, description: 'hA to give up its live copy' });
    await write(b, 'db', 'written-on-hB');
    await b.ops.unmount('db', 'm2');
    await replicaHolds(a, 'db', 'written-on-hB');
    // Moving back works the same way.
    const back = await a.ops.mount('db', 'm3');
    expect(await readFile(join(back, 'data'), 'utf8')).to.equal('written-on-hB');
    expect((await record('db')).epoch).to.equal(3);
  });

  it('moves a volume without replicas by copying it whole, and the old host drops its copy', async () => {
    const a = await makeHost('hA');
    const b = await makeHost('hB');
    await a.ops.create('solo', {});
    await write(a, 'solo', 'only-copy');
    const path = await b.ops.mount('solo', 'm1');
    expect(await readFile(join(path, 'data'), 'utf8')).to.equal('only-copy');
    expect((await record('solo')).replicaHosts).to.deep.equal([]);
    await waitUntil(async () => !(await a.volumes.hasLiveCopy('solo')) && (await a.chain.replicationSnapshots('solo')).length === 0, { timeoutMs: 10_000, description: 'hA to drop its copy' });
  });

  it('with failover=manual refuses a Mount after the owner is gone, and promote takes over from the newest copy', async () => {
    const a = await makeHost('hA');
    const b = await makeHost('hB');
    await a.ops.create('db', { replicas: '2', 'replicate-every': '1s' });
    await a.ops.mount('db', 'm1');
    await write(a, 'db', 'replicated');
    await replicaHolds(b, 'db', 'replicated');
    await a.stop(); // host A dies: its lease expires after the TTL
    await waitUntil(async () => !(await b.service.ownerAlive(await record('db'))), { timeoutMs: 10_000, description: 'hA lease to expire' });
    const refused = await expectBerthError(b.ops.mount('db', 'm2'), 'ERR_OWNER_UNAVAILABLE');
    expect(refused.message).to.contain('berth volume promote db');
    const promoted = await b.service.promote('db', log);
    expect(promoted).to.include({ owner: 'hB', epoch: 2 });
    const path = await b.ops.mount('db', 'm2');
    expect(await readFile(join(path, 'data'), 'utf8')).to.equal('replicated');
  });

  it('with failover=auto a Mount takes over from the most up-to-date live replica; a returning owner is fenced', async () => {
    const a = await makeHost('hA');
    const b = await makeHost('hB');
    const c = await makeHost('hC');
    await a.ops.create('db', { replicas: '3', failover: 'auto', 'replicate-every': '1s' });
    await a.ops.mount('db', 'm1');
    a.engine.containers = [{ id: 'pg-a', name: 'pg-a', state: 'running', mounts: [{ name: 'db', driver: 'berth' }] }];
    await write(a, 'db', 'before-cut');
    await replicaHolds(b, 'db', 'before-cut');
    await replicaHolds(c, 'db', 'before-cut');
    // hA is cut off: its agent stops renewing (no store, no peers) while its container keeps writing.
    await a.stop();
    await write(a, 'db', 'after-cut-on-hA');
    await waitUntil(async () => !(await b.service.ownerAlive(await record('db'))), { timeoutMs: 10_000, description: 'hA lease to expire' });
    const path = await b.ops.mount('db', 'm2');
    expect(await readFile(join(path, 'data'), 'utf8')).to.equal('before-cut');
    expect(await record('db')).to.include({ owner: 'hB', epoch: 2, base: (await record('db')).base });
    await write(b, 'db', 'new-owner-data');
    // The partition heals: hA's agent runs again, sees epoch 2, stops its container and rejoins as a replica.
    a.engine.onStop = async () => a.ops.unmount('db', 'm1');
    await a.start();
    await waitUntil(async () => !(await a.volumes.hasLiveCopy('db')), { timeoutMs: 15_000, description: 'hA to give the volume up' });
    expect(a.engine.stopped).to.deep.equal(['pg-a']);
    const kept = (await a.chain.replicationSnapshots('db')).filter((id) => id.startsWith('diverged-'));
    expect(kept).to.have.length(1);
    expect(await readFile(join(a.backend.layout.replicaPath('db', kept[0]!), 'data'), 'utf8')).to.equal('after-cut-on-hA');
    await replicaHolds(a, 'db', 'new-owner-data');
    await replicaHolds(c, 'db', 'new-owner-data');
    expect(await b.live('db')).to.equal('new-owner-data');
    // The old owner never serves what it wrote after the cut.
    const diverged = (await record('db')).base!.replace(/-(\d+)$/, (_, seq: string) => `-${String(Number(seq) + 1).padStart(8, '0')}`);
    await expectBerthError(a.service.serveSnapshot('db', diverged, undefined, 'hB'), 'ERR_VOLUME_FENCED');
  });

  it('gives up a Mount whose copy takes longer than its budget, cleanly, and leaves the owner as it was', async () => {
    const a = await makeHost('hA');
    const b = await makeHost('hB', 300);
    await a.ops.create('solo', {});
    await write(a, 'solo', 'x'.repeat(1024));
    InProcessPeers.chunkDelayMs = 1000; // the whole copy cannot arrive within 300 ms
    await expectBerthError(b.ops.mount('solo', 'm1'), 'ERR_CATCH_UP_INCOMPLETE', /did not finish in time .*nothing was kept/);
    expect(await b.chain.replicationSnapshots('solo')).to.deep.equal([]);
    expect(await b.volumes.hasLiveCopy('solo')).to.equal(false);
    expect(await record('solo')).to.include({ owner: 'hA', epoch: 1 });
    expect((await record('solo')).handoff, 'the owner may mount it again at once').to.equal(undefined);
    InProcessPeers.chunkDelayMs = 0;
    const path = await b.ops.mount('solo', 'm1');
    expect(await readFile(join(path, 'data'), 'utf8')).to.equal('x'.repeat(1024));
  });

  it('removes the volume cluster-wide: owner data and every replica go, the name is free again', async () => {
    const a = await makeHost('hA');
    const b = await makeHost('hB');
    await a.ops.create('db', { replicas: '2', 'replicate-every': '1s' });
    await write(a, 'db', 'x');
    await replicaHolds(b, 'db', 'x');
    await b.ops.remove('db');
    expect(await new ClusterVolumeRepository(store).get('db')).to.equal(undefined);
    await waitUntil(async () => !(await a.volumes.hasLiveCopy('db')) && (await b.chain.replicationSnapshots('db')).length === 0 && (await a.chain.replicationSnapshots('db')).length === 0, {
      timeoutMs: 10_000,
      description: 'copies removed',
    });
    await b.ops.create('db', {});
  });
});
