import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCluster, type Cluster, type Host } from '../helpers/cluster.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd-server.js';
import { checkCommand, runCommand } from '../helpers/run-command.js';
import { BUSYBOX_IMAGE, ensureBusyboxImage } from '../helpers/test-images.js';
import { waitUntil } from '../helpers/wait-until.js';

// Three namespaced hosts, each a real engine plus a Berth agent, sharing one etcd (run inside hA's
// namespace, on its underlay address). Everything a user would observe: networks appearing on every
// engine, containers on different hosts talking, isolation, broadcast, unique addresses, restarts.
describe('multi-host overlay networks (3 engines, 3 agents, etcd)', function () {
  this.timeout(300_000);
  let cluster: Cluster;
  let etcd: EtcdServer;
  // Long enough for a killed agent to be restarted within it (as systemd would), short enough for the purge test.
  const HOST_TTL = '6s';

  const agentArgs = (host: Host): string[] => ['--store', `etcd://${etcd.endpoint}`, '--host-name', host.name, '--advertise-addr', host.address, '--host-ttl', HOST_TTL, '--log-level', 'debug'];

  before(async function () {
    this.timeout(600_000);
    cluster = await startCluster({ hosts: 3, prefix: 'bnet' });
    const hostA = cluster.host('hA');
    etcd = await startEtcd({ listenAddress: hostA.address, clientPort: 2379, peerPort: 2380, commandPrefix: ['nsenter', `--net=${hostA.netnsPath}`] });
    await Promise.all(cluster.hosts.map(async (host) => {
      await ensureBusyboxImage(host);
      await host.startAgent({ args: agentArgs(host) });
    }));
  });

  after(async function () {
    this.timeout(300_000);
    await cluster?.dispose();
    await etcd?.stop();
  });

  it('creates a network once and it appears under the same name and subnet on every engine', async () => {
    await cluster.host('hA').dockerOk(['network', 'create', '-d', 'berth', '--ipam-driver', 'berth', '--subnet', '10.77.0.0/24', 'blue']);
    for (const host of cluster.hosts) {
      const subnet = await waitUntil(async () => {
        const inspected = await host.docker(['network', 'inspect', '--format', '{{(index .IPAM.Config 0).Subnet}} {{.Driver}}', 'blue']);
        return inspected.code === 0 ? inspected.stdout.trim() : undefined;
      }, { timeoutMs: 20_000, description: `network blue on ${host.name}` });
      expect(subnet).to.equal('10.77.0.0/24 berth');
    }
    const listed = JSON.parse((await cluster.host('hB').berth(['network', 'ls', '--json'])).stdout) as { name: string; subnet: string; vni: number }[];
    expect(listed.map((network) => [network.name, network.subnet])).to.deep.include(['blue', '10.77.0.0/24']);
    const hosts = JSON.parse((await cluster.host('hC').berth(['host', 'ls', '--json'])).stdout) as { name: string; alive: boolean; address: string }[];
    expect(hosts.filter((host) => host.alive).map((host) => host.address).sort()).to.deep.equal(cluster.hosts.map((host) => host.address).sort());
  });

  it('connects containers on different hosts: ping and TCP data both ways', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    await run(a, 'blue-a', 'blue');
    await run(b, 'blue-b', 'blue');
    const ipB = await containerIp(b, 'blue-b', 'blue');
    const ipA = await containerIp(a, 'blue-a', 'blue');
    await a.dockerOk(['exec', 'blue-a', 'ping', '-c', '3', '-W', '2', ipB]);
    await b.dockerOk(['exec', 'blue-b', 'ping', '-c', '3', '-W', '2', ipA]);
    // The underlay's MTU (1500) minus the 50 bytes VXLAN adds; a full-size unfragmented packet crosses.
    expect((await a.dockerOk(['exec', 'blue-a', 'cat', '/sys/class/net/eth0/mtu'])).stdout.trim()).to.equal('1450');
    await a.dockerOk(['exec', 'blue-a', 'ping', '-c', '1', '-W', '2', '-s', '1422', ipB]);
    // TCP: a listener on hB receives a message sent from hA.
    await b.dockerOk(['exec', '-d', 'blue-b', 'sh', '-c', 'nc -l -p 5000 > /tmp/received']);
    await waitUntil(async () => (await a.docker(['exec', 'blue-a', 'sh', '-c', `echo hello-over-vxlan | nc -w 2 ${ipB} 5000`])).code === 0, { timeoutMs: 30_000, description: 'tcp send' });
    const received = await waitUntil(async () => (await b.docker(['exec', 'blue-b', 'cat', '/tmp/received'])).stdout.trim() || undefined, { timeoutMs: 30_000, description: 'tcp data' });
    expect(received).to.equal('hello-over-vxlan');
  });

  it('keeps two networks isolated from each other', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    // Made with the berth command on hB, with an MTU of its own.
    const made = await b.berth(['network', 'create', 'green', '--subnet', '10.78.0.0/24', '-o', 'mtu=1400']);
    expect(made.code, made.stderr).to.equal(0);
    await waitUntil(async () => (await a.docker(['network', 'inspect', 'green'])).code === 0, { timeoutMs: 20_000, description: 'green on hA' });
    await run(b, 'green-b', 'green');
    await run(a, 'green-a', 'green');
    const ipGreenB = await containerIp(b, 'green-b', 'green');
    expect((await a.dockerOk(['exec', 'green-a', 'cat', '/sys/class/net/eth0/mtu'])).stdout.trim()).to.equal('1400');
    await a.dockerOk(['exec', 'green-a', 'ping', '-c', '2', '-W', '2', ipGreenB]); // same network: reachable
    // blue-a does reach its own network (so the refusal below is isolation, not a broken container).
    await a.dockerOk(['exec', 'blue-a', 'ping', '-c', '1', '-W', '2', await containerIp(b, 'blue-b', 'blue')]);
    const crossed = await a.docker(['exec', 'blue-a', 'ping', '-c', '2', '-W', '1', ipGreenB]);
    expect(crossed.code, 'blue container reaches a green one').to.not.equal(0);
  });

  it('carries broadcast across hosts (head-end replication)', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    const pidA = await containerPid(a, 'blue-a');
    const pidB = await containerPid(b, 'blue-b');
    // A UDP receiver in blue-b's namespace, then a broadcast to 10.77.0.255 from blue-a's namespace.
    const receiver = runCommand(['nsenter', '-t', pidB, '-n', 'python3', '-c', UDP_RECEIVER], { timeoutMs: 20_000 });
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (let attempt = 0; attempt < 5; attempt++) {
      await checkCommand(['nsenter', '-t', pidA, '-n', 'python3', '-c', UDP_BROADCAST]);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const result = await receiver;
    expect(result.stdout.trim()).to.equal('broadcast-from-hA');
  });

  it('gives unique addresses to 30 containers started at once across the hosts', async () => {
    const starts = cluster.hosts.flatMap((host) => Array.from({ length: 10 }, (_, i) => run(host, `many-${host.name}-${i}`, 'blue')));
    await Promise.all(starts);
    const addresses: string[] = [];
    for (const host of cluster.hosts) for (let i = 0; i < 10; i++) addresses.push(await containerIp(host, `many-${host.name}-${i}`, 'blue'));
    expect(new Set(addresses).size).to.equal(30);
    const inspected = JSON.parse((await cluster.host('hA').berth(['network', 'inspect', 'blue', '--json'])).stdout) as { addresses: { ip: string; host: string; state: string }[] }[];
    const active = inspected[0]!.addresses.filter((address) => address.state === 'active');
    expect(active.length).to.equal(32); // the 30 plus blue-a and blue-b
    await Promise.all(cluster.hosts.map((host) => host.dockerOk(['rm', '-f', ...Array.from({ length: 10 }, (_, i) => `many-${host.name}-${i}`)])));
    await waitUntil(async () => {
      const after = JSON.parse((await cluster.host('hA').berth(['network', 'inspect', 'blue', '--json'])).stdout) as { addresses: unknown[] }[];
      return after[0]!.addresses.length === 2;
    }, { timeoutMs: 20_000, description: 'addresses released' });
  });

  it('keeps established traffic flowing while an agent is killed with SIGKILL, and the new agent duplicates nothing', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    const ipB = await containerIp(b, 'blue-b', 'blue');
    const fdbBefore = await forwardingEntries(a, 'blue');
    const ping = a.docker(['exec', 'blue-a', 'ping', '-c', '40', '-i', '0.1', '-W', '1', ipB], { timeoutMs: 60_000 });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await a.stopAgents(0); // SIGKILL at once
    await new Promise((resolve) => setTimeout(resolve, 500));
    await a.startAgent({ args: agentArgs(a) });
    const result = await ping;
    expect(result.stdout, result.stdout).to.match(/40 packets transmitted, 40 packets received/);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(await forwardingEntries(a, 'blue')).to.deep.equal(fdbBefore);
  });

  it('brings containers back on the network after an engine restart', async () => {
    const [a, c] = [cluster.host('hA'), cluster.host('hC')];
    await run(c, 'restart-c', 'blue', ['--restart', 'always']);
    await c.restartEngine();
    const ipC = await waitUntil(async () => {
      const state = await c.docker(['inspect', '--format', '{{.State.Running}}', 'restart-c']);
      return state.stdout.trim() === 'true' ? containerIp(c, 'restart-c', 'blue') : undefined;
    }, { timeoutMs: 60_000, description: 'restart-c running again' });
    await waitUntil(async () => (await a.docker(['exec', 'blue-a', 'ping', '-c', '1', '-W', '1', ipC])).code === 0, { timeoutMs: 20_000, description: 'hA reaches restart-c' });
  });

  it('gives egress through the engine\'s gateway bridge, and none on --internal networks', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    await a.dockerOk(['network', 'create', '-d', 'berth', '--ipam-driver', 'berth', '--internal', '--subnet', '10.79.0.0/24', 'sealed']);
    await run(a, 'sealed-a', 'sealed');
    // hB's underlay address stands for "outside": it is not on any Berth network.
    await a.dockerOk(['exec', 'blue-a', 'ping', '-c', '2', '-W', '2', b.address]);
    const leaked = await a.docker(['exec', 'sealed-a', 'ping', '-c', '2', '-W', '1', b.address]);
    expect(leaked.code, 'internal network reached the outside').to.not.equal(0);
  });

  it('works from a Compose v1 file declaring a Berth network', async () => {
    const a = cluster.host('hA');
    const dir = await mkdtemp(join(tmpdir(), 'berth-compose-net-'));
    try {
      await writeFile(join(dir, 'docker-compose.yml'), COMPOSE_FILE);
      await checkOk(a.compose(['up', '-d'], { cwd: dir, projectName: 'netdemo', env: { IMAGE: BUSYBOX_IMAGE } }));
      const ip = await waitUntil(async () => {
        const out = await a.docker(['inspect', '--format', '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}', 'netdemo_app_1']);
        return out.stdout.includes('10.81.') ? out.stdout.trim() : undefined;
      }, { timeoutMs: 30_000, description: 'compose container on the berth network' });
      expect(ip).to.match(/10\.81\.0\.\d+/);
      await waitUntil(async () => (await cluster.host('hB').docker(['network', 'inspect', 'netdemo_backplane'])).code === 0, { timeoutMs: 20_000, description: 'compose network on hB' });
      await checkOk(a.compose(['down'], { cwd: dir, projectName: 'netdemo', env: { IMAGE: BUSYBOX_IMAGE } }));
      await waitUntil(async () => (await cluster.host('hB').docker(['network', 'inspect', 'netdemo_backplane'])).code !== 0, { timeoutMs: 20_000, description: 'compose network removed on hB' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('removes a network cluster-wide, keeping it on hosts whose containers still use it until they stop', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    await a.dockerOk(['network', 'create', '-d', 'berth', '--ipam-driver', 'berth', '--subnet', '10.83.0.0/24', 'brief']);
    await waitUntil(async () => (await b.docker(['network', 'inspect', 'brief'])).code === 0, { timeoutMs: 20_000, description: 'brief on hB' });
    await run(b, 'brief-b', 'brief');
    await a.dockerOk(['network', 'rm', 'brief']);
    const listed = async (): Promise<{ name: string; state: string }[]> => JSON.parse((await a.berth(['network', 'ls', '--json'])).stdout) as { name: string; state: string }[];
    await waitUntil(async () => (await listed()).find((network) => network.name === 'brief')?.state === 'removing', { timeoutMs: 10_000, description: 'brief removing' });
    expect((await b.docker(['network', 'inspect', 'brief'])).code, 'hB keeps the network its container uses').to.equal(0);
    await b.dockerOk(['rm', '-f', 'brief-b']);
    await waitUntil(async () => (await b.docker(['network', 'inspect', 'brief'])).code !== 0, { timeoutMs: 30_000, description: 'brief gone from hB' });
    await waitUntil(async () => !(await listed()).some((network) => network.name === 'brief'), { timeoutMs: 30_000, description: 'brief gone from the cluster' });
  });

  it('keeps traffic flowing while etcd is down, fails cluster operations fast, and catches up when etcd returns', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    const ipB = await containerIp(b, 'blue-b', 'blue');
    await etcd.kill();
    try {
      await a.dockerOk(['exec', 'blue-a', 'ping', '-c', '5', '-i', '0.2', '-W', '1', ipB]);
      const started = Date.now();
      const refused = await a.docker(['network', 'create', '-d', 'berth', '--ipam-driver', 'berth', '--subnet', '10.82.0.0/24', 'during-outage'], { timeoutMs: 60_000 });
      expect(refused.code).to.not.equal(0);
      expect(refused.stderr).to.match(/etcd/i);
      expect(Date.now() - started, 'create failed fast').to.be.below(20_000);
    } finally {
      await etcd.restart();
    }
    // Changes made after etcd returns reach every host: the agents' watches resumed.
    await run(b, 'after-outage-b', 'blue');
    const ip = await containerIp(b, 'after-outage-b', 'blue');
    await waitUntil(async () => (await a.docker(['exec', 'blue-a', 'ping', '-c', '1', '-W', '1', ip])).code === 0, { timeoutMs: 30_000, description: 'hA reaches a container started after the outage' });
    const hosts = JSON.parse((await a.berth(['host', 'ls', '--json'])).stdout) as { alive: boolean }[];
    expect(hosts.filter((host) => host.alive).length).to.equal(3);
  });

  it('purges a torn-down host\'s entries on the others after its lease expires', async () => {
    const [a, c] = [cluster.host('hA'), cluster.host('hC')];
    await waitUntil(async () => (await forwardingEntries(a, 'blue')).some((entry) => entry.includes(c.address)), { timeoutMs: 10_000, description: 'hC in hA tables' });
    await c.stopAgents(0);
    await c.killEngine();
    await waitUntil(async () => !(await forwardingEntries(a, 'blue')).some((entry) => entry.includes(c.address)), { timeoutMs: 20_000, description: 'hC purged from hA' });
    const hosts = JSON.parse((await a.berth(['host', 'ls', '--json'])).stdout) as { name: string; alive: boolean }[];
    expect(hosts.find((host) => host.name === c.name)?.alive).to.equal(false);
  });
});

describe('overlay network on a single host with the embedded file store', function () {
  this.timeout(300_000);
  let cluster: Cluster;

  before(async function () {
    this.timeout(600_000);
    cluster = await startCluster({ hosts: 1, prefix: 'bnet1' });
    await ensureBusyboxImage(cluster.host('hA'));
    await cluster.host('hA').startAgent();
  });

  after(async function () {
    this.timeout(300_000);
    await cluster?.dispose();
  });

  it('creates a network without --subnet, connects two containers, and removes it', async () => {
    const a = cluster.host('hA');
    await a.dockerOk(['network', 'create', '-d', 'berth', '--ipam-driver', 'berth', 'solo']);
    const subnet = (await a.dockerOk(['network', 'inspect', '--format', '{{(index .IPAM.Config 0).Subnet}}', 'solo'])).stdout.trim();
    expect(subnet).to.match(/^10\.210\.\d+\.0\/24$/);
    await run(a, 'solo-1', 'solo');
    await run(a, 'solo-2', 'solo');
    await a.dockerOk(['exec', 'solo-1', 'ping', '-c', '2', '-W', '2', await containerIp(a, 'solo-2', 'solo')]);
    await a.dockerOk(['rm', '-f', 'solo-1', 'solo-2']);
    await a.dockerOk(['network', 'rm', 'solo']);
    await waitUntil(async () => {
      const listed = JSON.parse((await a.berth(['network', 'ls', '--json'])).stdout) as unknown[];
      return listed.length === 0;
    }, { timeoutMs: 20_000, description: 'network gone from the store' });
    const links = (await a.inNamespaces(['ip', '-o', 'link', 'show'])).stdout;
    expect(links).to.not.match(/\b(bbr|bvx|bve)\d*/);
  });

  it('refuses bad options with a clear error and leaves nothing behind', async () => {
    const a = cluster.host('hA');
    const bad = await a.docker(['network', 'create', '-d', 'berth', '--ipam-driver', 'berth', '-o', 'colour=blue', 'bad']);
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.match(/unknown network option "colour"/);
    const overlap = await a.docker(['network', 'create', '-d', 'berth', '--ipam-driver', 'berth', '--ipv6', 'bad6']);
    expect(overlap.stderr).to.match(/IPv6 is not supported/);
    const listed = JSON.parse((await a.berth(['network', 'ls', '--json'])).stdout) as unknown[];
    expect(listed).to.deep.equal([]);
  });
});

const UDP_RECEIVER = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('', 6000))
s.settimeout(15)
print(s.recvfrom(100)[0].decode())
`;

const UDP_BROADCAST = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.sendto(b'broadcast-from-hA', ('10.77.0.255', 6000))
`;

const COMPOSE_FILE = `version: "2.4"
services:
  app:
    image: \${IMAGE}
    command: ["sleep", "3600"]
    networks: [backplane]
networks:
  backplane:
    driver: berth
    ipam:
      driver: berth
      config:
        - subnet: 10.81.0.0/24
`;

async function run(host: Host, name: string, network: string, extra: readonly string[] = []): Promise<void> {
  await host.dockerOk(['run', '-d', '--name', name, '--network', network, ...extra, BUSYBOX_IMAGE, 'sleep', '3600']);
}

async function containerIp(host: Host, name: string, network: string): Promise<string> {
  const out = await host.dockerOk(['inspect', '--format', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, name]);
  return out.stdout.trim();
}

async function containerPid(host: Host, name: string): Promise<string> {
  return (await host.dockerOk(['inspect', '--format', '{{.State.Pid}}', name])).stdout.trim();
}

/** Permanent FDB entries on the host's VXLAN device of a network (`bridge fdb show`), sorted. */
async function forwardingEntries(host: Host, network: string): Promise<string[]> {
  const listed = JSON.parse((await host.berth(['network', 'inspect', network, '--json'])).stdout) as { vni: number }[];
  const out = await host.inNamespaces(['bridge', 'fdb', 'show', 'dev', `bvx${listed[0]!.vni}`]);
  return out.stdout.split('\n').filter((line) => line.includes('dst')).sort();
}

async function checkOk(result: Promise<{ code: number | null; stdout: string; stderr: string }>): Promise<void> {
  const done = await result;
  if (done.code !== 0) throw new Error(`command failed (${done.code}): ${done.stderr || done.stdout}`);
}
