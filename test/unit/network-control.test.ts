import { expect } from 'chai';
import { join } from 'node:path';
import { createLogger } from '../../plugins/logging/logger.js';
import { FileStateStore } from '../../plugins/state/file-state-store.js';
import { KeyedMutex } from '../../plugins/util/keyed-mutex.js';
import { ClusterView } from '../../network-driver/control/cluster-view.js';
import { EngineNetworkSync, NETWORK_LABEL } from '../../network-driver/control/engine-network-sync.js';
import { HostRegistry } from '../../network-driver/control/host-registry.js';
import { NetworkRepository } from '../../network-driver/control/network-repository.js';
import { OverlayReconciler } from '../../network-driver/control/overlay-reconciler.js';
import { IpamService, ATTACH_OPTION } from '../../network-driver/ipam-service.js';
import { parseSubnet } from '../../network-driver/ipam/ipv4.js';
import { NetworkService } from '../../network-driver/network-service.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { FakeEngineNetworks } from '../helpers/fake-engine-networks.js';
import { RecordingDataplane } from '../helpers/recording-dataplane.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitUntil } from '../helpers/wait-until.js';

const silent = createLogger('silent');

/** One simulated host: its own view, services and (recorded) kernel, over a store shared with the other hosts. */
interface SimHost {
  name: string;
  view: ClusterView;
  ipam: IpamService;
  networks: NetworkService;
  dataplane: RecordingDataplane;
  overlay: OverlayReconciler;
  registry: HostRegistry;
  engine: FakeEngineNetworks;
  sync: EngineNetworkSync;
}

describe('network control plane (shared store, simulated hosts, recorded kernel)', function () {
  let dir: { path: string; dispose(): Promise<void> };
  let store: FileStateStore;
  const hosts: SimHost[] = [];

  async function addHost(name: string, address: string, ttlSeconds = 30, reclaimAfterMs = 3_600_000): Promise<SimHost> {
    const view = new ClusterView(new NetworkRepository(store, name), silent);
    await view.start();
    const locks = new KeyedMutex();
    const ipam = new IpamService(view, locks, { defaultPool: parseSubnet('10.210.0.0/16'), defaultPrefix: 24 });
    const dataplane = new RecordingDataplane();
    const networks = new NetworkService(view, ipam, dataplane, locks, { driverName: 'berth', vxlanPort: 4789, localVtep: address, underlayMtu: 1500 }, () => undefined);
    const overlay = new OverlayReconciler(view, dataplane, (network) => networks.overlaySpec(network), silent);
    view.onChange((key) => overlay.request(key));
    const registry = new HostRegistry(view, { ttlSeconds, address, version: 'test' }, silent);
    await registry.start();
    const engine = new FakeEngineNetworks();
    // Grace periods of zero: the tests stage the engine's view before asking for a check.
    const sync = new EngineNetworkSync(view, engine, dataplane, { driverName: 'berth', reclaimAfterMs, endpointGraceMs: 0, allocationGraceMs: 0 }, silent);
    const host = { name, view, ipam, networks, dataplane, overlay, registry, engine, sync };
    hosts.push(host);
    return host;
  }

  /** What an engine does for `docker network create` on a host (docker-plugin-protocol.md §3.2, §4.3). */
  async function engineCreateNetwork(host: SimHost, engineId: string, request: { pool?: string; options?: Record<string, string>; attach?: string; internal?: boolean }): Promise<string> {
    const grant = await host.ipam.requestPool({ pool: request.pool ?? '', subPool: '', options: request.attach ? { [ATTACH_OPTION]: request.attach } : {}, v6: false }, silent);
    await host.networks.createNetwork({ engineNetworkId: engineId, options: request.options ?? {}, internal: request.internal ?? false, ipv6: false, pool: grant.pool, gateway: grant.data['com.docker.network.gateway']! }, silent);
    return grant.poolId;
  }

  /** What an engine does to start a container on a network. */
  async function engineStartContainer(host: SimHost, engineNetworkId: string, poolId: string, endpointId: string): Promise<{ ip: string; mac: string }> {
    const address = await host.ipam.requestAddress(poolId, '', {}, silent);
    const { mac } = await host.networks.createEndpoint(engineNetworkId, endpointId, address, '', silent);
    await host.networks.join(engineNetworkId, endpointId);
    return { ip: address.split('/')[0]!, mac };
  }

  beforeEach(async () => {
    dir = await makeTempDir('berth-net-');
    store = await FileStateStore.open(join(dir.path, 'state.db'));
  });

  afterEach(async () => {
    for (const host of hosts.splice(0)) {
      host.overlay.stop();
      host.sync.stop();
      await host.registry.stop({ revoke: false });
      await host.view.stop();
    }
    await store.close();
    await dir.dispose();
  });

  it('reserves non-overlapping subnets cluster-wide and frees pools released before their network exists', async () => {
    const a = await addHost('hA', '198.18.0.1');
    const b = await addHost('hB', '198.18.0.2');
    const grant = await a.ipam.requestPool({ pool: '10.50.0.0/16', subPool: '', options: {}, v6: false }, silent);
    expect(grant.pool).to.equal('10.50.0.0/16');
    expect(grant.data['com.docker.network.gateway']).to.equal('10.50.0.1/16');
    await expectBerthError(b.ipam.requestPool({ pool: '10.50.7.0/24', subPool: '', options: {}, v6: false }, silent), 'ERR_SUBNET_OVERLAP', /10\.50\.7\.0\/24 overlaps/);
    await a.ipam.releasePool(grant.poolId, silent);
    const again = await b.ipam.requestPool({ pool: '10.50.7.0/24', subPool: '', options: {}, v6: false }, silent);
    expect(again.pool).to.equal('10.50.7.0/24');
  });

  it('hands out a different default subnet on each request, as the engine needs when it probes for overlaps', async () => {
    const a = await addHost('hA', '198.18.0.1');
    const pools = new Set<string>();
    for (let i = 0; i < 4; i++) pools.add((await a.ipam.requestPool({ pool: '', subPool: '', options: {}, v6: false }, silent)).pool);
    expect([...pools]).to.deep.equal(['10.210.0.0/24', '10.210.1.0/24', '10.210.2.0/24', '10.210.3.0/24']);
  });

  it('refuses IPv6, unknown options, ranges outside the subnet and a taken VNI, naming the problem', async () => {
    const a = await addHost('hA', '198.18.0.1');
    await expectBerthError(a.ipam.requestPool({ pool: '', subPool: '', options: {}, v6: true }, silent), 'ERR_INVALID_OPTION', /IPv6/);
    await expectBerthError(a.ipam.requestPool({ pool: '10.1.0.0/24', subPool: '10.2.0.0/25', options: {}, v6: false }, silent), 'ERR_INVALID_OPTION', /not inside subnet/);
    await expectBerthError(a.ipam.requestPool({ pool: '10.1.0.5/24', subPool: '', options: {}, v6: false }, silent), 'ERR_INVALID_OPTION', /host bits set/);
    await expectBerthError(engineCreateNetwork(a, 'e1', { pool: '10.1.0.0/24', options: { colour: 'blue' } }), 'ERR_INVALID_OPTION', /unknown network option "colour"; known options: mtu, vni/);
    await engineCreateNetwork(a, 'e2', { pool: '10.3.0.0/24', options: { vni: '4242' } });
    await expectBerthError(engineCreateNetwork(a, 'e3', { pool: '10.4.0.0/24', options: { vni: '4242' } }), 'ERR_INVALID_OPTION', /vni 4242 is already used/);
  });

  it('gives unique addresses to containers started at the same moment on several hosts, from per-host blocks', async () => {
    const a = await addHost('hA', '198.18.0.1');
    const b = await addHost('hB', '198.18.0.2');
    const c = await addHost('hC', '198.18.0.3');
    const poolId = await engineCreateNetwork(a, 'net-a', { pool: '10.60.0.0/24' });
    await engineCreateNetwork(b, 'net-b', { attach: poolId, pool: '10.60.0.0/24' });
    await engineCreateNetwork(c, 'net-c', { attach: poolId, pool: '10.60.0.0/24' });
    const starts = [a, b, c].flatMap((host) =>
      Array.from({ length: 10 }, (_, i) => engineStartContainer(host, `net-${host.name.slice(1).toLowerCase()}`, poolId, `${host.name}-ep${i}`.padEnd(16, '0'))),
    );
    const addresses = (await Promise.all(starts)).map((endpoint) => endpoint.ip);
    expect(new Set(addresses).size).to.equal(30);
    expect(addresses).to.not.include('10.60.0.1'); // the gateway
    expect(addresses).to.not.include('10.60.0.0');
    const blocks = a.view.blocks(poolId);
    const owners = new Set(blocks.map((block) => block.host));
    expect([...owners].sort()).to.deep.equal(['hA', 'hB', 'hC']);
    // each host's addresses lie in its own blocks
    for (const endpoint of a.view.endpoints(poolId)) {
      const block = blocks.find((candidate) => candidate.host === endpoint.host && ipValue(endpoint.ip) >= ipValue(candidate.start) && ipValue(endpoint.ip) < ipValue(candidate.start) + candidate.size);
      expect(block, `${endpoint.ip} of ${endpoint.host}`).to.not.equal(undefined);
    }
  });

  it('borrows from other hosts\' blocks when every block is held, and reports exhaustion by name', async () => {
    const a = await addHost('hA', '198.18.0.1');
    const b = await addHost('hB', '198.18.0.2');
    const poolId = await engineCreateNetwork(a, 'na', { pool: '10.70.0.0/29' }); // 6 usable, 5 without the gateway
    await engineCreateNetwork(b, 'nb', { attach: poolId });
    const first = await engineStartContainer(a, 'na', poolId, 'a1');
    const taken = [first.ip];
    for (let i = 0; i < 4; i++) taken.push((await engineStartContainer(b, 'nb', poolId, `b${i}`)).ip);
    expect(new Set(taken).size).to.equal(5);
    await expectBerthError(b.ipam.requestAddress(poolId, '', {}, silent), 'ERR_ADDRESS_EXHAUSTED', /has no free address/);
  });

  it('never takes an address from the endpoint that won it when the loser is rolled back (agent restarted between)', async () => {
    const a = await addHost('hA', '198.18.0.1');
    const poolId = await engineCreateNetwork(a, 'na', { pool: '10.85.0.0/24' });
    const first = await a.ipam.requestAddress(poolId, '', {}, silent);
    // The agent restarts: what it had handed out but not yet recorded is forgotten, so the address goes out again.
    const restarted = new IpamService(a.view, new KeyedMutex(), { defaultPool: parseSubnet('10.210.0.0/16'), defaultPrefix: 24 });
    const second = await restarted.requestAddress(poolId, '', {}, silent);
    expect(second).to.equal(first);
    await a.networks.createEndpoint('na', 'winner0000000', first, '', silent);
    await expectBerthError(a.networks.createEndpoint('na', 'loser00000000', second, '', silent), 'ERR_ADDRESS_IN_USE', /in use by endpoint winner0000000/);
    await restarted.releaseAddress(poolId, second.split('/')[0]!, silent); // the engine's rollback of the loser
    const record = (await a.view.repository.endpoint(poolId, first.split('/')[0]!))?.record;
    expect(record).to.deep.include({ state: 'active', endpointId: 'winner0000000' });
  });

  it('claims a chosen address in the store at once and refuses it on another host', async () => {
    const a = await addHost('hA', '198.18.0.1');
    const b = await addHost('hB', '198.18.0.2');
    const poolId = await engineCreateNetwork(a, 'na', { pool: '10.80.0.0/24' });
    await engineCreateNetwork(b, 'nb', { attach: poolId });
    expect(await a.ipam.requestAddress(poolId, '10.80.0.77', {}, silent)).to.equal('10.80.0.77/24');
    await expectBerthError(b.ipam.requestAddress(poolId, '10.80.0.77', {}, silent), 'ERR_ADDRESS_IN_USE', /10\.80\.0\.77 .* in use on host hA/);
    await expectBerthError(b.ipam.requestAddress(poolId, '10.80.0.1', {}, silent), 'ERR_INVALID_OPTION', /not a usable address/);
    await a.ipam.releaseAddress(poolId, '10.80.0.77', silent);
    expect(await b.ipam.requestAddress(poolId, '10.80.0.77', {}, silent)).to.equal('10.80.0.77/24');
  });

  it('programs remote endpoints and flood entries on every host of the network, and removes them when endpoints go', async () => {
    const a = await addHost('hA', '198.18.0.1');
    const b = await addHost('hB', '198.18.0.2');
    const poolId = await engineCreateNetwork(a, 'na', { pool: '10.90.0.0/24' });
    await engineCreateNetwork(b, 'nb', { attach: poolId });
    const onA = await engineStartContainer(a, 'na', poolId, 'epa0000000000');
    const onB = await engineStartContainer(b, 'nb', poolId, 'epb0000000000');
    const vxlan = b.networks.overlaySpec(b.view.network(poolId)!).vxlanName;
    await waitUntil(async () => b.dataplane.neighbours.get(vxlan)?.get(onA.ip) === onA.mac, { timeoutMs: 5000, description: 'hB programs hA endpoint' });
    expect(b.dataplane.fdb.get(vxlan)?.get(onA.mac)).to.equal('198.18.0.1');
    expect([...(b.dataplane.flood.get(vxlan) ?? [])]).to.deep.equal(['198.18.0.1']);
    await waitUntil(async () => a.dataplane.neighbours.get(vxlan)?.get(onB.ip) === onB.mac, { timeoutMs: 5000, description: 'hA programs hB endpoint' });
    // its own endpoints are local (a veth on the bridge), never a remote entry
    expect(a.dataplane.neighbours.get(vxlan)?.has(onA.ip)).to.equal(false);
    expect([...a.dataplane.endpoints.values()].map((endpoint) => endpoint.mac)).to.deep.equal([onA.mac]);

    await a.networks.leave('epa0000000000');
    await a.networks.deleteEndpoint('na', 'epa0000000000', silent);
    await waitUntil(async () => !b.dataplane.neighbours.get(vxlan)?.has(onA.ip), { timeoutMs: 5000, description: 'hB drops the deleted endpoint' });
    expect(b.dataplane.fdb.get(vxlan)?.has(onA.mac)).to.equal(false);
    // the address stays held until ReleaseAddress
    expect(a.view.endpoints(poolId).find((endpoint) => endpoint.ip === onA.ip)?.state).to.equal('allocated');
    await a.ipam.releaseAddress(poolId, onA.ip, silent);
    expect(a.view.endpoints(poolId).some((endpoint) => endpoint.ip === onA.ip)).to.equal(false);
  });

  it('purges a host\'s entries from the others once its lease expires, and keeps its addresses reserved', async () => {
    const a = await addHost('hA', '198.18.0.1');
    const b = await addHost('hB', '198.18.0.2', 2);
    const poolId = await engineCreateNetwork(a, 'na', { pool: '10.91.0.0/24' });
    await engineCreateNetwork(b, 'nb', { attach: poolId });
    const onB = await engineStartContainer(b, 'nb', poolId, 'epb0000000000');
    const vxlan = a.networks.overlaySpec(a.view.network(poolId)!).vxlanName;
    await waitUntil(async () => a.dataplane.neighbours.get(vxlan)?.has(onB.ip) === true, { timeoutMs: 5000, description: 'hA programs hB endpoint' });
    await b.registry.stop({ revoke: false }); // hB's agent dies: no more renewals
    await waitUntil(async () => a.dataplane.neighbours.get(vxlan)?.has(onB.ip) === false, { timeoutMs: 10_000, description: 'hA purges hB after its lease' });
    expect(a.dataplane.fdb.get(vxlan)?.size ?? 0).to.equal(0);
    expect(a.dataplane.flood.get(vxlan)?.size ?? 0).to.equal(0);
    expect(a.view.endpoints(poolId).some((endpoint) => endpoint.ip === onB.ip)).to.equal(true);
  });

  it('a full pass corrects kernel state changed behind its back and removes overlays of networks gone from this host', async () => {
    const a = await addHost('hA', '198.18.0.1');
    const b = await addHost('hB', '198.18.0.2');
    const poolId = await engineCreateNetwork(a, 'na', { pool: '10.92.0.0/24' });
    await engineCreateNetwork(b, 'nb', { attach: poolId });
    const onB = await engineStartContainer(b, 'nb', poolId, 'epb0000000000');
    const vxlan = a.networks.overlaySpec(a.view.network(poolId)!).vxlanName;
    await waitUntil(async () => a.dataplane.neighbours.get(vxlan)?.has(onB.ip) === true, { timeoutMs: 5000, description: 'programmed' });
    a.dataplane.fdb.get(vxlan)!.set(onB.mac, '198.18.0.99'); // wrong VTEP
    a.dataplane.neighbours.get(vxlan)!.set('10.92.0.200', '02:00:00:00:00:01'); // stale entry
    a.dataplane.overlays.set('bvx777', { bridgeName: 'bbr777', vxlanName: 'bvx777', vni: 777, port: 4789, mtu: 1450 });
    a.overlay.requestFull();
    await waitUntil(async () => a.dataplane.fdb.get(vxlan)?.get(onB.mac) === '198.18.0.2', { timeoutMs: 5000, description: 'VTEP corrected' });
    await a.overlay.idle();
    expect(a.dataplane.neighbours.get(vxlan)?.has('10.92.0.200')).to.equal(false);
    expect(a.dataplane.overlays.has('bvx777')).to.equal(false);
  });

  it('marks a network removed on one host as removing for the cluster and refuses new addresses in it', async () => {
    const a = await addHost('hA', '198.18.0.1');
    const b = await addHost('hB', '198.18.0.2');
    const poolId = await engineCreateNetwork(a, 'na', { pool: '10.93.0.0/24' });
    await engineCreateNetwork(b, 'nb', { attach: poolId });
    await a.ipam.releasePool(poolId, silent); // the engine releases the pool first: an active network stays
    expect(a.view.network(poolId)?.state).to.equal('active');
    await a.networks.deleteNetwork('na', silent);
    await waitUntil(() => b.view.network(poolId)?.state === 'removing', { timeoutMs: 5000, description: 'hB sees the removal' });
    await expectBerthError(b.ipam.requestAddress(poolId, '', {}, silent), 'ERR_NETWORK_NOT_FOUND', /being removed/);
  });

  describe('engine sync', () => {
    it('publishes the name read from the creating engine, and the other hosts create the network on theirs', async () => {
      const a = await addHost('hA', '198.18.0.1');
      const b = await addHost('hB', '198.18.0.2');
      const poolId = await engineCreateNetwork(a, 'engine-a-id', { pool: '10.94.0.0/24', options: { mtu: '1400' } });
      a.engine.add({ id: 'engine-a-id', name: 'orders', endpoints: [] });
      a.sync.request();
      await waitUntil(() => b.view.network(poolId)?.name === 'orders', { timeoutMs: 5000, description: 'name published' });
      // hB's engine calls back into hB's driver with the attach option, as the real engine would.
      b.engine.onCreate = async (spec, engineId) => {
        const grant = await b.ipam.requestPool({ pool: spec.subnet ?? '', subPool: '', options: spec.ipamOptions, v6: false }, silent);
        await b.networks.createNetwork({ engineNetworkId: engineId, options: spec.options, internal: spec.internal, ipv6: false, pool: grant.pool }, silent);
      };
      b.sync.request();
      await waitUntil(() => b.engine.created.length === 1, { timeoutMs: 5000, description: 'hB creates the network' });
      expect(b.engine.created[0]).to.deep.include({ name: 'orders', driver: 'berth', ipamDriver: 'berth', subnet: '10.94.0.0/24', gateway: '10.94.0.1', internal: false });
      expect(b.engine.created[0]!.ipamOptions).to.deep.equal({ [ATTACH_OPTION]: poolId });
      expect(b.engine.created[0]!.options).to.deep.equal({ mtu: '1400' });
      expect(b.engine.created[0]!.labels).to.deep.equal({ [NETWORK_LABEL]: poolId });
      await waitUntil(() => [...b.view.localNetworks().values()].some((local) => local.network === poolId), { timeoutMs: 5000, description: 'hB maps the network' });
      expect(b.dataplane.overlays.get(`bvx${b.view.network(poolId)!.vni}`)?.mtu).to.equal(1400);
    });

    it('removes the later of two networks created with one name at the same moment, and reports it', async () => {
      const a = await addHost('hA', '198.18.0.1');
      const b = await addHost('hB', '198.18.0.2');
      const first = await engineCreateNetwork(a, 'ea', { pool: '10.95.0.0/24' });
      const second = await engineCreateNetwork(b, 'eb', { pool: '10.96.0.0/24' });
      a.engine.add({ id: 'ea', name: 'web', endpoints: [] });
      b.engine.add({ id: 'eb', name: 'web', endpoints: [] });
      a.sync.request();
      await waitUntil(() => a.view.network(first)?.name === 'web', { timeoutMs: 5000, description: 'first name' });
      b.sync.request();
      await waitUntil(() => b.engine.removed.includes('eb'), { timeoutMs: 5000, description: 'the second is removed from its engine' });
      // No endpoint uses it: once off its engine, its record goes too.
      await waitUntil(() => b.view.network(second) === undefined, { timeoutMs: 5000, description: 'the second network record removed' });
      expect(b.sync.issues().join(' ')).to.match(/network web was created on host hB while a berth network of that name already exists/);
      expect(b.view.network(first)?.state).to.equal('active');
    });

    it('releases addresses the engine no longer has and records endpoints the store lost', async () => {
      const a = await addHost('hA', '198.18.0.1');
      const poolId = await engineCreateNetwork(a, 'na', { pool: '10.97.0.0/24' });
      const kept = await engineStartContainer(a, 'na', poolId, 'kept000000000');
      const lost = await engineStartContainer(a, 'na', poolId, 'lost000000000');
      // The engine crashed: only one container came back; and the store lost a record of another one.
      a.engine.add({
        id: 'na',
        name: 'n',
        endpoints: [
          { containerId: 'c1', endpointId: 'kept000000000', ipv4: kept.ip, mac: kept.mac },
          { containerId: 'c3', endpointId: 'orphan0000000', ipv4: '10.97.0.200', mac: '02:42:0a:61:00:c8' },
        ],
      });
      a.sync.requestEndpointCheck();
      await waitUntil(() => !a.view.endpoints(poolId).some((endpoint) => endpoint.ip === lost.ip), { timeoutMs: 5000, description: 'lost address released' });
      await a.sync.idle();
      const records = a.view.endpoints(poolId).map((endpoint) => [endpoint.ip, endpoint.endpointId, endpoint.state]);
      expect(records).to.have.deep.members([
        [kept.ip, 'kept000000000', 'active'],
        ['10.97.0.200', 'orphan0000000', 'active'],
      ]);
      expect([...a.dataplane.endpoints.keys()]).to.deep.equal(['bvekept0000000']); // the lost one's veth went too
    });

    it('frees the addresses and blocks of a host gone longer than reclaim-after, not before', async () => {
      const a = await addHost('hA', '198.18.0.1', 30, 5000);
      const b = await addHost('hB', '198.18.0.2', 2);
      const poolId = await engineCreateNetwork(a, 'na', { pool: '10.98.0.0/24' });
      await engineCreateNetwork(b, 'nb', { attach: poolId });
      const onB = await engineStartContainer(b, 'nb', poolId, 'epb0000000000');
      await b.registry.stop({ revoke: false });
      await waitUntil(() => !a.view.liveHosts().has('hB'), { timeoutMs: 10_000, description: 'hB lease expired' });
      a.sync.request();
      await a.sync.idle();
      expect(a.view.endpoints(poolId).some((endpoint) => endpoint.ip === onB.ip), 'kept while within reclaim-after').to.equal(true);
      await waitUntil(async () => {
        a.sync.request();
        await a.sync.idle();
        return !a.view.endpoints(poolId).some((endpoint) => endpoint.host === 'hB') && !a.view.blocks(poolId).some((block) => block.host === 'hB');
      }, { timeoutMs: 15_000, description: 'hB reclaimed' });
      expect(a.view.members().map((member) => member.name)).to.deep.equal(['hA']);
    });
  });
});

function ipValue(text: string): number {
  return text.split('.').reduce((value, part) => value * 256 + Number(part), 0);
}
