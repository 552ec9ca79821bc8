// NetlinkDataplane against the real kernel. Layout, all in namespaces made here:
//
//   cA (10.77.0.2) --veth-- hA [bbr4097 + bvx4097] --ul0 198.19.77.1--+
//                                                                     switch (bridge, MTU 1460)
//   cB (10.77.0.3) --veth-- hB [bbr4097 + bvx4097] --ul0 198.19.77.2--+
//
// A dataplane server runs in hA and in hB (a Dataplane programs its own process's namespace); the
// test moves each container end into cA/cB and renames it eth0, as the engine does. The kernel
// state is observed with `ip` and `bridge`, and traffic flows only between these namespaces.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'chai';
import type { Dataplane, OverlaySpec } from '../../network-driver/dataplane/dataplane.js';
import { overlayMtu } from '../../network-driver/dataplane/overlay-mtu.js';
import { DataplaneProcess } from '../helpers/dataplane-process.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { NetnsSet } from '../helpers/netns-set.js';
import { requirePrerequisites } from '../helpers/prerequisites.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const UNDERLAY_MTU = 1460;
const VNI = 4097;
const BRIDGE = `bbr${VNI}`;
const VXLAN = `bvx${VNI}`;

interface SimHost {
  readonly ns: 'hA' | 'hB';
  readonly container: 'cA' | 'cB';
  readonly vtep: string;
  readonly ip: string;
  readonly mac: string;
  readonly hostIf: string;
  readonly containerIf: string;
}

const HOSTS: readonly SimHost[] = [
  { ns: 'hA', container: 'cA', vtep: '198.19.77.1', ip: '10.77.0.2', mac: '02:42:0a:4d:00:02', hostIf: 'bveA', containerIf: 'bvcA' },
  { ns: 'hB', container: 'cB', vtep: '198.19.77.2', ip: '10.77.0.3', mac: '02:42:0a:4d:00:03', hostIf: 'bveB', containerIf: 'bvcB' },
];
const [A, B] = HOSTS as [SimHost, SimHost];

describe('NetlinkDataplane in network namespaces', function () {
  this.timeout(60_000);

  const netns = new NetnsSet('bdp');
  const servers = new Map<string, DataplaneProcess>();
  let procSys: { path: string; dispose(): Promise<void> } | undefined;
  let mtu = 0;

  const server = (host: SimHost): DataplaneProcess => {
    const found = servers.get(host.ns);
    if (found === undefined) throw new Error(`no dataplane server in ${host.ns}`);
    return found;
  };
  const dp = (host: SimHost): Dataplane => server(host).dataplane;
  const spec = (host: SimHost, overrides: Partial<OverlaySpec> = {}): OverlaySpec => ({ bridgeName: BRIDGE, vxlanName: VXLAN, vni: VNI, port: 4789, localVtep: host.vtep, mtu, ...overrides });
  const peerOf = (host: SimHost): SimHost => (host === A ? B : A);
  const programPeer = (host: SimHost) => dp(host).ensureRemoteEndpoint(VXLAN, { ip: peerOf(host).ip, mac: peerOf(host).mac, vtep: peerOf(host).vtep });

  before(async () => {
    requirePrerequisites(['ip', 'bridge', 'nsenter', 'ping', 'sysctl']);
    await netns.add('sw');
    await netns.ip('sw', 'link', 'add', 'br0', 'mtu', String(UNDERLAY_MTU), 'type', 'bridge');
    await netns.ip('sw', 'link', 'set', 'br0', 'up');
    for (const host of HOSTS) {
      await netns.add(host.ns);
      await netns.add(host.container);
      const port = `p${host.ns}`;
      await netns.ip('sw', 'link', 'add', port, 'mtu', String(UNDERLAY_MTU), 'type', 'veth', 'peer', 'name', 'ul0', 'mtu', String(UNDERLAY_MTU), 'netns', netns.name(host.ns));
      await netns.ip('sw', 'link', 'set', port, 'master', 'br0', 'up');
      await netns.ip(host.ns, 'addr', 'add', `${host.vtep}/24`, 'dev', 'ul0');
      await netns.ip(host.ns, 'link', 'set', 'ul0', 'up');
    }
    // Only hA has a default route (to an address nobody holds): underlay() follows it there.
    await netns.ip(A.ns, 'route', 'add', 'default', 'via', '198.19.77.254');
    procSys = await makeTempDir('berth-procsys-');
    for (const host of HOSTS) {
      servers.set(host.ns, await DataplaneProcess.start((command) => netns.enter(host.ns, command), { procSysRoot: procSys.path }));
    }
  });

  after(async () => {
    await Promise.all([...servers.values()].map((server) => server.stop()));
    await netns.dispose();
    await procSys?.dispose();
  });

  it('finds the underlay device by address or default route; the overlay MTU is 50 below it', async () => {
    const byAddress = await dp(A).underlay(A.vtep);
    expect(byAddress).to.deep.equal({ device: 'ul0', mtu: UNDERLAY_MTU, address: A.vtep });
    expect(await dp(A).underlay()).to.deep.equal(byAddress);
    mtu = overlayMtu(byAddress.mtu);
    expect(mtu).to.equal(1410);

    const noRoute = await expectBerthError(dp(B).underlay(), 'ERR_DATAPLANE');
    expect(noRoute.message).to.match(/default route/);
    const foreign = await expectBerthError(dp(B).underlay('198.19.99.9'), 'ERR_DATAPLANE');
    expect(foreign.message).to.equal('underlay address 198.19.99.9 is not on any device');
  });

  it('creates the bridge and a VXLAN port with nolearning, proxy, port, local and the MTU', async () => {
    for (const host of HOSTS) await dp(host).ensureOverlay(spec(host));
    for (const host of HOSTS) {
      const vxlan = await linkDetails(host.ns, VXLAN);
      expect(vxlan.linkinfo?.info_kind).to.equal('vxlan');
      expect(vxlan.linkinfo?.info_data).to.include({ id: VNI, port: 4789, local: host.vtep, learning: false, proxy: true, ttl: 0 });
      expect(vxlan.linkinfo?.info_data).to.not.have.any.keys('group', 'remote', 'link', 'l2miss', 'l3miss');
      expect(vxlan).to.include({ mtu, master: BRIDGE });
      expect(vxlan.flags).to.include('UP');
      const bridge = await linkDetails(host.ns, BRIDGE);
      expect(bridge.linkinfo?.info_kind).to.equal('bridge');
      expect(bridge.mtu).to.equal(mtu);
      expect(bridge.flags).to.include('UP');
    }
  });

  it('creates veth endpoints: host end on the bridge and up, container end with its MAC and MTU, down, one queue each', async () => {
    for (const host of HOSTS) {
      await dp(host).ensureLocalEndpoint({ hostIfName: host.hostIf, containerIfName: host.containerIf, bridgeName: BRIDGE, mac: host.mac, mtu });
      const hostEnd = await linkDetails(host.ns, host.hostIf);
      expect(hostEnd).to.include({ mtu, master: BRIDGE, num_tx_queues: 1, num_rx_queues: 1 });
      expect(hostEnd.flags).to.include('UP');
      const containerEnd = await linkDetails(host.ns, host.containerIf);
      expect(containerEnd).to.include({ mtu, address: host.mac, num_tx_queues: 1, num_rx_queues: 1 });
      expect(containerEnd.flags).to.not.include('UP');
      expect(containerEnd.linkinfo?.info_kind).to.equal('veth');
      // What the engine does next: move the container end into the container and configure it.
      await netns.ip(host.ns, 'link', 'set', host.containerIf, 'netns', netns.name(host.container));
      await netns.ip(host.container, 'link', 'set', host.containerIf, 'name', 'eth0');
      await netns.ip(host.container, 'addr', 'add', `${host.ip}/24`, 'dev', 'eth0');
      await netns.ip(host.container, 'link', 'set', 'eth0', 'up');
    }
  });

  it('carries unicast between hosts once each side knows the other endpoint, at the full overlay MTU', async () => {
    for (const host of HOSTS) await programPeer(host);
    expect(await ping(A.container, B.ip)).to.equal(true);
    expect(await ping(B.container, A.ip)).to.equal(true);
    // Largest DF ping the overlay MTU allows: 1410 - 20 (IP) - 8 (ICMP).
    expect(await ping(A.container, B.ip, ['-M', 'do', '-s', String(mtu - 28)])).to.equal(true);
  });

  it('lists the permanent entries it programmed, as bridge and ip show them', async () => {
    await dp(A).ensureFloodTarget(VXLAN, B.vtep);
    const table = await dp(A).listForwarding(VXLAN);
    expect(sortBy(table.fdb)).to.deep.equal(sortBy([{ mac: B.mac, vtep: B.vtep }, { mac: '00:00:00:00:00:00', vtep: B.vtep }]));
    expect(table.neighbours).to.deep.equal([{ ip: B.ip, mac: B.mac }]);

    const shown = (await fdbShow(A.ns, VXLAN)).filter((entry) => entry.flags?.includes('self') === true && entry.state === 'permanent');
    expect(sortBy(shown.map((entry) => ({ mac: entry.mac, vtep: entry.dst ?? '' })))).to.deep.equal(sortBy(table.fdb));
    const neighbours = await neighShow(A.ns, VXLAN);
    expect(neighbours.map((entry) => ({ ip: entry.dst, mac: entry.lladdr, state: entry.state }))).to.deep.equal([{ ip: B.ip, mac: B.mac, state: ['PERMANENT'] }]);
    await dp(A).deleteFloodTarget(VXLAN, B.vtep);
  });

  it('changes nothing when every call is repeated', async () => {
    const before = await kernelState();
    for (let round = 0; round < 2; round++) {
      for (const host of HOSTS) {
        await dp(host).ensureOverlay(spec(host));
        await dp(host).ensureLocalEndpoint({ hostIfName: host.hostIf, containerIfName: host.containerIf, bridgeName: BRIDGE, mac: host.mac, mtu });
        await programPeer(host);
      }
    }
    expect(await kernelState()).to.deep.equal(before);
  });

  it('floods broadcasts to every flood target, once per target however often it is ensured', async () => {
    await netns.run(B.container, ['sysctl', '-q', '-w', 'net.ipv4.icmp_echo_ignore_broadcasts=0']);
    for (const host of HOSTS) {
      await dp(host).ensureFloodTarget(VXLAN, peerOf(host).vtep);
      await dp(host).ensureFloodTarget(VXLAN, peerOf(host).vtep);
    }
    const floods = (await fdbShow(A.ns, VXLAN)).filter((entry) => entry.mac === '00:00:00:00:00:00');
    expect(floods.map((entry) => entry.dst)).to.deep.equal([B.vtep]);

    const received = await rxPackets(B.ns, VXLAN);
    const reply = await netns.run(A.container, ['ping', '-b', '-c', '3', '-i', '0.2', '-W', '1', '10.77.0.255']);
    expect(reply.stdout, 'broadcast ping answered from the other host').to.include(`from ${B.ip}`);
    expect((await rxPackets(B.ns, VXLAN)) - received).to.be.at.least(3);

    await dp(A).deleteFloodTarget(VXLAN, B.vtep);
    await dp(A).deleteFloodTarget(VXLAN, B.vtep); // already gone
    const silent = await netns.run(A.container, ['ping', '-b', '-c', '2', '-i', '0.2', '-W', '1', '10.77.0.255']);
    expect(silent.stdout, 'broadcast ping after its flood target was removed').to.not.include(`from ${B.ip}`);
    await dp(B).deleteFloodTarget(VXLAN, A.vtep);
  });

  it('stops unicast once the remote endpoint is deleted, and deleting it again succeeds', async () => {
    expect(await ping(A.container, B.ip)).to.equal(true);
    await dp(A).deleteRemoteEndpoint(VXLAN, { ip: B.ip, mac: B.mac });
    await dp(A).deleteRemoteEndpoint(VXLAN, { ip: B.ip, mac: B.mac });
    expect(await dp(A).listForwarding(VXLAN)).to.deep.equal({ fdb: [], neighbours: [] });
    expect(await ping(A.container, B.ip)).to.equal(false);
    // Without an address only the FDB entry goes (a stale entry the reconciler finds alone).
    await programPeer(A);
    await dp(A).deleteRemoteEndpoint(VXLAN, { mac: B.mac });
    expect(await dp(A).listForwarding(VXLAN)).to.deep.equal({ fdb: [], neighbours: [{ ip: B.ip, mac: B.mac }] });
    await programPeer(A);
    expect(await ping(A.container, B.ip)).to.equal(true);
  });

  it('recreates a VXLAN device whose port differs, keeping the bridge and its ports', async () => {
    const old = await linkDetails(A.ns, VXLAN);
    await dp(A).ensureOverlay(spec(A, { port: 4790 }));
    const recreated = await linkDetails(A.ns, VXLAN);
    expect(recreated.ifindex).to.not.equal(old.ifindex);
    expect(recreated.linkinfo?.info_data).to.include({ port: 4790, id: VNI, local: A.vtep });
    expect(recreated).to.include({ master: BRIDGE, mtu });
    expect(await dp(A).listForwarding(VXLAN)).to.deep.equal({ fdb: [], neighbours: [] });
    expect((await linkDetails(A.ns, A.hostIf)).master).to.equal(BRIDGE);

    // Entries written right after the recreation use the new device (the cached ifindex is stale).
    await dp(A).ensureOverlay(spec(A));
    await programPeer(A);
    expect(await ping(A.container, B.ip)).to.equal(true);
  });

  it('binds the VXLAN device to an underlay device when one is named', async () => {
    const missing = await expectBerthError(dp(B).ensureOverlay(spec(B, { underlayDevice: 'nosuchdev' })), 'ERR_DATAPLANE');
    expect(missing.message).to.equal('underlay device nosuchdev does not exist');
    await dp(B).ensureOverlay(spec(B, { underlayDevice: 'ul0' }));
    const bound = await linkDetails(B.ns, VXLAN);
    expect(bound.linkinfo?.info_data).to.include({ link: 'ul0', local: B.vtep, port: 4789 });
    await dp(B).ensureOverlay(spec(B, { underlayDevice: 'ul0' }));
    expect((await linkDetails(B.ns, VXLAN)).ifindex, 'unchanged on the second call').to.equal(bound.ifindex);
    await programPeer(B);
    expect(await ping(B.container, A.ip)).to.equal(true);
  });

  it('corrects an endpoint whose MTU or MAC differ while its container end is still on the host', async () => {
    const endpoint = { hostIfName: 'bveT', containerIfName: 'bvcT', bridgeName: BRIDGE, mac: '02:42:0a:4d:00:09', mtu: 1400 };
    await dp(B).ensureLocalEndpoint(endpoint);
    const created = await linkDetails(B.ns, 'bveT');
    await dp(B).ensureLocalEndpoint({ ...endpoint, mac: '02:42:0a:4d:00:0a', mtu });
    const hostEnd = await linkDetails(B.ns, 'bveT');
    expect(hostEnd).to.include({ ifindex: created.ifindex, mtu, master: BRIDGE });
    expect(await linkDetails(B.ns, 'bvcT')).to.include({ mtu, address: '02:42:0a:4d:00:0a' });
    await dp(B).deleteLocalEndpoint('bveT');
    expect(await dp(B).listLinks('bv')).to.not.include.members(['bveT', 'bvcT']);
  });

  it('fails with ERR_DATAPLANE naming the object, keeping the errno', async () => {
    const clash = await expectBerthError(dp(A).ensureOverlay(spec(A, { bridgeName: A.hostIf })), 'ERR_DATAPLANE');
    expect(clash.message).to.equal(`${A.hostIf} exists and is a veth, not a bridge`);
    const sameVni = await expectBerthError(dp(A).ensureOverlay(spec(A, { vxlanName: 'bvxdup' })), 'ERR_DATAPLANE');
    expect(sameVni.message).to.equal('creating vxlan bvxdup: file already exists (EEXIST)');
    expect(sameVni.details).to.deep.equal({ errno: 'EEXIST' });
    const missing = await expectBerthError(dp(A).ensureRemoteEndpoint('bvx1', { ip: B.ip, mac: B.mac, vtep: B.vtep }), 'ERR_DATAPLANE');
    expect(missing.message).to.match(/^programming endpoint 10\.77\.0\.3 .* on vxlan bvx1: vxlan bvx1 does not exist$/);
    expect(missing.details).to.deep.equal({ errno: 'ENODEV' });
    const noBridge = await expectBerthError(
      dp(A).ensureLocalEndpoint({ hostIfName: 'bveX', containerIfName: 'bvcX', bridgeName: 'bbrnone', mac: A.mac, mtu }),
      'ERR_DATAPLANE',
    );
    expect(noBridge.message).to.equal('creating veth bveX (peer bvcX): bridge bbrnone does not exist');
    const invalid = await expectBerthError(dp(A).ensureOverlay(spec(A, { vni: 0 })), 'ERR_DATAPLANE');
    expect(invalid.message).to.match(/^invalid vni of vxlan bvx4097: 0 /);
    await expectBerthError(dp(A).ensureOverlay(spec(A, { vxlanName: 'bvx-name-too-long' })), 'ERR_DATAPLANE');
    await expectBerthError(dp(A).ensureFloodTarget(VXLAN, '10.0.0'), 'ERR_DATAPLANE');
    expect(await dp(A).listLinks('bvxdup')).to.deep.equal([]);
  });

  it('deletes endpoints and overlays with everything on them; deleting again succeeds', async () => {
    await dp(A).deleteLocalEndpoint(A.hostIf, A.containerIf);
    expect((await netns.run(A.container, ['ip', 'link', 'show', 'eth0'])).code, 'container end goes with the host end').to.not.equal(0);
    await dp(A).deleteLocalEndpoint(A.hostIf, A.containerIf);

    expect(await dp(A).listLinks('b')).to.deep.equal([BRIDGE, VXLAN]);
    await dp(A).deleteOverlay({ bridgeName: BRIDGE, vxlanName: VXLAN });
    expect(await dp(A).listLinks('b')).to.deep.equal([]);
    expect(await neighShow(A.ns)).to.deep.equal([]);
    await dp(A).deleteOverlay({ bridgeName: BRIDGE, vxlanName: VXLAN });
    await dp(A).deleteRemoteEndpoint(VXLAN, { ip: B.ip, mac: B.mac });
    await dp(A).deleteFloodTarget(VXLAN, B.vtep);
    await expectBerthError(dp(A).listForwarding(VXLAN), 'ERR_DATAPLANE');
  });

  it('programs 5000 remote endpoints and 20 flood targets, settling each request on its own', async () => {
    const scale = spec(A, { bridgeName: 'bbr4098', vxlanName: 'bvx4098', vni: 4098 });
    await dp(A).ensureOverlay(scale);
    const calls: { method: keyof Dataplane; args: unknown[] }[] = [];
    for (let i = 0; i < 5000; i++) {
      const [hi, lo] = [i >> 8, i & 255];
      const endpoint = { ip: `10.78.${hi}.${lo}`, mac: `02:42:0a:4e:${hex(hi)}:${hex(lo)}`, vtep: `198.19.77.${10 + (i % 20)}` };
      calls.push({ method: 'ensureRemoteEndpoint', args: ['bvx4098', endpoint] });
      // One write the kernel refuses (lo cannot be deleted), amid writes that share its ACK.
      if (i === 2500) calls.push({ method: 'deleteLocalEndpoint', args: ['lo'] });
    }
    for (let t = 0; t < 20; t++) calls.push({ method: 'ensureFloodTarget', args: ['bvx4098', `198.19.77.${10 + t}`] });
    // How long this takes is the scale benchmark's business (bench/network), not a test's.
    const { errors } = await server(A).batch(calls);
    expect(errors).to.deep.equal(['deleting veth lo: operation not supported (EOPNOTSUPP)']);
    const table = await dp(A).listForwarding('bvx4098');
    expect(table.fdb).to.have.length(5020);
    expect(table.neighbours).to.have.length(5000);
    expect(await neighShow(A.ns, 'bvx4098')).to.have.length(5000);
    await dp(A).deleteOverlay({ bridgeName: 'bbr4098', vxlanName: 'bvx4098' });
    expect(await neighShow(A.ns)).to.deep.equal([]);
  });

  it('raises the neighbour table thresholds, never lowering a higher one', async () => {
    if (procSys === undefined) throw new Error('no proc/sys stand-in');
    const dir = join(procSys.path, 'net/ipv4/neigh/default');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'gc_thresh1'), '128\n');
    await writeFile(join(dir, 'gc_thresh2'), '100000\n');
    const report = await dp(A).tuneHost();
    expect(report.raised).to.deep.equal(['net.ipv4.neigh.default.gc_thresh1 128 -> 8192']);
    expect(report.problems).to.have.length(1);
    expect(report.problems[0]).to.match(/^cannot raise net\.ipv4\.neigh\.default\.gc_thresh3 to 65536: /);
    expect(await readFile(join(dir, 'gc_thresh1'), 'utf8')).to.equal('8192\n');
    expect(await readFile(join(dir, 'gc_thresh2'), 'utf8')).to.equal('100000\n');
  });

  // --- observing the kernel -------------------------------------------------------------------

  interface LinkJson {
    ifindex: number;
    ifname: string;
    flags: string[];
    mtu: number;
    master?: string;
    address?: string;
    num_tx_queues?: number;
    num_rx_queues?: number;
    linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
  }

  async function linkDetails(ns: string, device: string): Promise<LinkJson> {
    const [link] = JSON.parse((await netns.ip(ns, '-d', '-j', 'link', 'show', 'dev', device)).stdout) as LinkJson[];
    if (link === undefined) throw new Error(`no link ${device} in ${ns}`);
    return link;
  }

  async function fdbShow(ns: string, device: string): Promise<{ mac: string; dst?: string; flags?: string[]; state?: string; master?: string }[]> {
    const result = await netns.run(ns, ['bridge', '-j', 'fdb', 'show', 'dev', device]);
    if (result.code !== 0) throw new Error(`bridge fdb show dev ${device} in ${ns} failed: ${result.stderr}`);
    return JSON.parse(result.stdout) as { mac: string; dst?: string; flags?: string[]; state?: string; master?: string }[];
  }

  async function neighShow(ns: string, device?: string): Promise<{ dst: string; lladdr?: string; state?: string[] }[]> {
    const entries = JSON.parse((await netns.ip(ns, '-j', 'neigh', 'show', ...(device === undefined ? [] : ['dev', device]))).stdout) as { dst: string; lladdr?: string; state?: string[]; dev?: string }[];
    // Without a device, only entries on overlay devices count (ul0 learns the other host's address).
    return device === undefined ? entries.filter((entry) => entry.dev !== 'ul0') : entries;
  }

  async function rxPackets(ns: string, device: string): Promise<number> {
    const [link] = JSON.parse((await netns.ip(ns, '-s', '-j', 'link', 'show', 'dev', device)).stdout) as { stats64: { rx: { packets: number } } }[];
    return link?.stats64.rx.packets ?? 0;
  }

  /** True when at least one of up to 3 echo requests is answered. */
  async function ping(from: string, to: string, extra: string[] = []): Promise<boolean> {
    const result = await netns.run(from, ['ping', '-c', '3', '-i', '0.2', '-W', '1', ...extra, to]);
    return result.code === 0;
  }

  /** Links (with their kind's settings), FDB and ARP entries of both hosts, minus the bridge's running timers. */
  async function kernelState(): Promise<unknown> {
    const state: Record<string, unknown> = {};
    for (const host of HOSTS) {
      for (const device of [BRIDGE, VXLAN, host.hostIf]) {
        const link = await linkDetails(host.ns, device);
        const data = Object.entries(link.linkinfo?.info_data ?? {}).filter(([key]) => !key.endsWith('_timer'));
        state[`${host.ns}/${device}`] = { ifindex: link.ifindex, flags: link.flags, mtu: link.mtu, master: link.master, address: link.address, kind: link.linkinfo?.info_kind, data };
      }
      state[`${host.ns}/fdb`] = sortBy(await fdbShow(host.ns, VXLAN));
      state[`${host.ns}/neigh`] = await neighShow(host.ns, VXLAN);
    }
    return state;
  }
});

function hex(byte: number): string {
  return byte.toString(16).padStart(2, '0');
}

function sortBy<T>(items: readonly T[]): T[] {
  return [...items].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
}
