// The multi-host harness itself: real engines in network namespaces, isolated plugin directories,
// an underlay between hosts, engine restarts, and cleanup that leaves nothing behind.
import { expect } from 'chai';
import { existsSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { startCluster, type Cluster, type Host } from '../helpers/cluster.js';
import { readMounts } from '../helpers/mounts.js';
import { isProcessAlive } from '../helpers/processes.js';
import { requirePrerequisites } from '../helpers/prerequisites.js';
import { BUSYBOX_IMAGE, ensureBusyboxImage } from '../helpers/test-images.js';

/** A container that exits promptly on SIGTERM (a plain `sleep` as PID 1 ignores it for 10 s). */
const IDLE = ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 1; done'];

describe('cluster harness: engines in network namespaces', function () {
  this.timeout(300_000);
  let cluster: Cluster | undefined;
  let hostA: Host;
  let hostB: Host;

  before(async () => {
    requirePrerequisites(['ip', 'nsenter', 'unshare', 'dockerd', 'docker', 'busybox', 'ping']);
    cluster = await startCluster({ hosts: 2, prefix: 'berth' });
    hostA = cluster.host('hA');
    hostB = cluster.host('hB');
  });

  after(async () => {
    await cluster?.dispose();
  });

  it('starts one engine per host, each answering with its own data root', async () => {
    for (const host of [hostA, hostB]) {
      const version = await host.dockerOk(['version', '--format', '{{.Server.Version}}']);
      expect(version.stdout.trim()).to.match(/^\d+\.\d+/);
      expect(await host.dockerode.ping()).to.satisfy((pong: unknown) => String(pong) === 'OK');
    }
    const roots = await Promise.all([hostA, hostB].map(async (h) => (await h.dockerOk(['info', '--format', '{{.DockerRootDir}}'])).stdout.trim()));
    expect(roots).to.deep.equal([hostA.dataRoot, hostB.dataRoot]);
    expect(roots[0]).to.not.equal(roots[1]);
    const ids = await Promise.all([hostA, hostB].map(async (h) => (await h.dockerode.info() as { ID: string }).ID));
    expect(ids[0], 'engines must not share /etc/docker/key.json').to.not.equal(ids[1]);
  });

  it('imports the busybox test image into each engine', async () => {
    await Promise.all([hostA, hostB].map((h) => ensureBusyboxImage(h)));
    // A second call finds the image and does nothing.
    await ensureBusyboxImage(hostA);
    for (const host of [hostA, hostB]) {
      const images = await host.dockerOk(['image', 'ls', '--format', '{{.Repository}}:{{.Tag}}']);
      expect(images.stdout.split('\n')).to.include(BUSYBOX_IMAGE);
    }
  });

  it('runs a container on each host, each engine seeing only its own', async () => {
    await hostA.dockerOk(['run', '-d', '--name', 'on-a', BUSYBOX_IMAGE, ...IDLE]);
    await hostB.dockerOk(['run', '-d', '--name', 'on-b', BUSYBOX_IMAGE, ...IDLE]);
    expect((await hostA.dockerOk(['ps', '--format', '{{.Names}}'])).stdout.trim()).to.equal('on-a');
    expect((await hostB.dockerOk(['ps', '--format', '{{.Names}}'])).stdout.trim()).to.equal('on-b');
    const echoed = await hostB.dockerOk(['exec', 'on-b', 'sh', '-c', 'echo hello from $(hostname)']);
    expect(echoed.stdout).to.match(/^hello from \w+/);
  });

  it('connects the hosts through the underlay', async () => {
    const ping = await hostB.inNamespaces(['ping', '-c1', '-W2', hostA.address]);
    expect(ping.code, ping.stdout + ping.stderr).to.equal(0);
    const addresses = await hostA.inNamespaces(['ip', '-4', '-o', 'addr', 'show', 'dev', 'ul0']);
    expect(addresses.stdout).to.contain(`${hostA.address}/24`);
    // No default route: nothing a test sends can leave the machine.
    expect((await hostA.inNamespaces(['ip', 'route', 'show', 'default'])).stdout.trim()).to.equal('');
  });

  it('gives each host its own plugin directory', async () => {
    let server: Server | undefined;
    try {
      server = await listen(join(hostA.pluginDir, 'probe.sock'));
      const inA = await hostA.inNamespaces(['test', '-S', '/run/docker/plugins/probe.sock']);
      const inB = await hostB.inNamespaces(['test', '-e', '/run/docker/plugins/probe.sock']);
      expect(inA.code, 'visible on host A').to.equal(0);
      expect(inB.code, 'not visible on host B').to.not.equal(0);
      expect(readdirSync(hostB.pluginDir)).to.not.include('probe.sock');
    } finally {
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    }
  });

  it('restarts an engine and it answers again with its containers', async () => {
    const before = hostA.enginePid;
    await hostA.restartEngine();
    expect(hostA.enginePid).to.be.a('number').and.not.equal(before);
    expect((await hostA.dockerOk(['version', '--format', '{{.Server.Version}}'])).stdout.trim()).to.not.equal('');
    const names = await hostA.dockerOk(['ps', '--all', '--format', '{{.Names}}']);
    expect(names.stdout.trim()).to.equal('on-a');
    await hostA.dockerOk(['start', 'on-a']);
    expect((await hostA.dockerOk(['exec', 'on-a', 'true'])).code).to.equal(0);
  });

  it('starts again after dockerd is killed, with the container shim left behind', async () => {
    await hostB.killEngine();
    expect(hostB.enginePid).to.equal(undefined);
    await hostB.startEngine();
    const state = await hostB.dockerOk(['inspect', '--format', '{{.State.Running}}', 'on-b']);
    expect(state.stdout.trim(), 'without live-restore the engine stops what the dead one ran').to.equal('false');
  });

  it('removes everything on dispose', async () => {
    const current = cluster;
    if (current === undefined) throw new Error('no cluster');
    const pids = [hostA.enginePid, hostB.enginePid];
    await current.dispose();
    await current.dispose(); // idempotent
    const namespaces = existsSync('/run/netns') ? readdirSync('/run/netns') : [];
    expect(namespaces.filter((ns) => ns.startsWith(current.id))).to.deep.equal([]);
    for (const pid of pids) expect(pid !== undefined && isProcessAlive(pid), `engine ${pid} still alive`).to.equal(false);
    expect(readMounts().filter((m) => m.mountPoint.startsWith(current.runDir))).to.deep.equal([]);
    expect(existsSync(current.runDir)).to.equal(false);
  });
});

function listen(path: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => socket.end());
    server.once('error', reject);
    server.listen(path, () => resolve(server));
  });
}
