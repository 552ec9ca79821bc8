import { expect } from 'chai';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { startCluster, type Cluster, type Host } from '../helpers/cluster.js';
import { ensureBusyboxImage } from '../helpers/test-images.js';
import { repoRoot } from '../helpers/repo-root.js';
import { waitUntil } from '../helpers/wait-until.js';

const IMAGE = 'berth-test/busybox:latest';

interface BerthStatus {
  backend: string;
  mountCount: number;
  usedBytes: number | null;
}

/** Everything a user does with `docker` and `docker-compose` against Berth, through a real engine. */
describe('volume driver through a real Docker Engine', function () {
  this.timeout(180_000);
  let cluster: Cluster;
  let host: Host;
  const docker = (...args: string[]) => host.dockerOk(args);
  const berthStatus = async (name: string): Promise<BerthStatus> => {
    const [inspect] = JSON.parse((await docker('volume', 'inspect', name)).stdout) as Array<{ Status: BerthStatus }>;
    if (!inspect) throw new Error(`no inspect output for ${name}`);
    return inspect.Status;
  };

  before(async () => {
    cluster = await startCluster({ hosts: 1 });
    host = cluster.hosts[0]!;
    await ensureBusyboxImage(host);
    await host.startAgent();
  });
  after(async () => cluster?.dispose());

  it('creates, inspects, lists and removes with the docker CLI', async () => {
    await docker('volume', 'create', '-d', 'berth', '-o', 'mode=0700', 'cli-vol');
    const [inspect] = JSON.parse((await docker('volume', 'inspect', 'cli-vol')).stdout) as Array<Record<string, unknown>>;
    expect(inspect).to.include({ Name: 'cli-vol', Driver: 'berth', Scope: 'local', Mountpoint: join(host.berthRoot, 'volumes', 'cli-vol') });
    expect(String(inspect?.CreatedAt)).to.match(/^\d{4}-\d{2}-\d{2}T/);
    expect(inspect?.Options).to.deep.equal({ mode: '0700' });
    expect(inspect?.Status).to.include({ backend: 'dir', mountCount: 0 });
    expect((await docker('volume', 'ls', '--filter', 'driver=berth', '--format', '{{.Driver}} {{.Name}}')).stdout.trim().split('\n')).to.include('berth cli-vol');
    await docker('volume', 'rm', 'cli-vol');
    expect((await docker('volume', 'ls', '-q')).stdout).to.not.contain('cli-vol');
    expect((await host.docker(['volume', 'inspect', 'cli-vol'])).code).to.not.equal(0);
  });

  it('creates and inspects through the engine API (dockerode)', async () => {
    const created = await host.dockerode.createVolume({ Name: 'api-vol', Driver: 'berth', DriverOpts: { uid: '70', gid: '70', mode: '0750' } });
    expect(created.name).to.equal('api-vol');
    const inspected = (await host.dockerode.getVolume('api-vol').inspect()) as unknown as { Driver: string; Status: BerthStatus; Mountpoint: string };
    expect(inspected.Driver).to.equal('berth');
    expect(inspected.Status.backend).to.equal('dir');
    const info = await stat(inspected.Mountpoint);
    expect([info.uid, info.gid, info.mode & 0o777]).to.deep.equal([70, 70, 0o750]);
    await host.dockerode.getVolume('api-vol').remove();
  });

  it('keeps what one container wrote for the next container', async () => {
    await docker('volume', 'create', '-d', 'berth', 'handoff');
    await docker('run', '--rm', '-v', 'handoff:/data', IMAGE, 'sh', '-c', 'echo "written by the first" > /data/note && sync');
    const read = await docker('run', '--rm', '-v', 'handoff:/data', IMAGE, 'cat', '/data/note');
    expect(read.stdout).to.equal('written by the first\n');
    expect((await berthStatus('handoff')).mountCount).to.equal(0);
    const usage = await waitUntil(async () => {
      const status = await berthStatus('handoff');
      return status.usedBytes !== null && status.usedBytes > 0 ? status.usedBytes : undefined;
    }, { description: 'usage to be measured', timeoutMs: 20_000, intervalMs: 500 });
    expect(usage).to.be.greaterThan(0);
    await docker('volume', 'rm', 'handoff');
  });

  it('counts docker cp into a running container and returns to zero mounts when it stops', async () => {
    await docker('volume', 'create', '-d', 'berth', 'cp-vol');
    await docker('run', '-d', '--name', 'cp-target', '-v', 'cp-vol:/data', IMAGE, 'sleep', '600');
    expect((await berthStatus('cp-vol')).mountCount).to.equal(1);
    const source = join(host.logDir, 'cp-source.txt');
    await host.writeFile(source, 'copied in\n');
    await docker('cp', source, 'cp-target:/data/copied.txt');
    expect((await docker('exec', 'cp-target', 'cat', '/data/copied.txt')).stdout).to.equal('copied in\n');
    expect((await berthStatus('cp-vol')).mountCount, 'docker cp mounted and unmounted the same ID').to.equal(1);
    await docker('stop', '-t', '1', 'cp-target');
    expect((await berthStatus('cp-vol')).mountCount).to.equal(0);
    await docker('rm', 'cp-target');
    await docker('volume', 'rm', 'cp-vol');
  });

  it('survives kill -9 of the agent while a container uses a volume', async () => {
    await docker('volume', 'create', '-d', 'berth', 'crash-vol');
    await docker('run', '-d', '--name', 'crash-user', '-v', 'crash-vol:/data', IMAGE, 'sh', '-c', 'echo before-crash > /data/state; sync; sleep 600');
    await waitUntil(async () => (await docker('exec', 'crash-user', 'cat', '/data/state')).stdout === 'before-crash\n', { description: 'container to write', timeoutMs: 10_000 });
    await host.agent!.kill();
    // The container keeps its bind mount while the agent is gone.
    await docker('exec', 'crash-user', 'sh', '-c', 'echo during-outage >> /data/state');
    await host.startAgent();
    expect((await berthStatus('crash-vol')).mountCount, 'recorded mount survives the crash').to.equal(1);
    expect((await docker('exec', 'crash-user', 'cat', '/data/state')).stdout).to.equal('before-crash\nduring-outage\n');
    await docker('stop', '-t', '1', 'crash-user');
    expect((await berthStatus('crash-vol')).mountCount).to.equal(0);
    await docker('rm', 'crash-user');
    await docker('volume', 'rm', 'crash-vol');
    expect((await host.docker(['volume', 'inspect', 'crash-vol'])).code).to.not.equal(0);
  });

  it('releases a mount whose Unmount was lost while the agent was down', async () => {
    await docker('volume', 'create', '-d', 'berth', 'lost-unmount');
    await docker('run', '-d', '--name', 'lost-user', '-v', 'lost-unmount:/data', IMAGE, 'sleep', '600');
    await host.agent!.kill();
    // The engine's Unmount fails while the agent is down (it retries ~15 s, then gives up).
    await host.docker(['stop', '-t', '1', 'lost-user'], { timeoutMs: 90_000 });
    await docker('rm', '-f', 'lost-user');
    await host.startAgent();
    await waitUntil(async () => (await berthStatus('lost-unmount')).mountCount === 0, { description: 'reconciliation to release the lost mount', timeoutMs: 20_000, intervalMs: 500 });
    await docker('volume', 'rm', 'lost-unmount');
  });

  it('keeps volumes listed and usable across an engine restart', async () => {
    await docker('volume', 'create', '-d', 'berth', 'engine-restart');
    await docker('run', '--rm', '-v', 'engine-restart:/data', IMAGE, 'sh', '-c', 'echo persisted > /data/f && sync');
    await docker('run', '-d', '--name', 'during-restart', '-v', 'engine-restart:/data', IMAGE, 'sleep', '600');
    await host.restartEngine();
    expect((await docker('volume', 'ls', '--format', '{{.Driver}}/{{.Name}}')).stdout).to.contain('berth/engine-restart');
    expect((await docker('run', '--rm', '-v', 'engine-restart:/data', IMAGE, 'cat', '/data/f')).stdout).to.equal('persisted\n');
    // The engine killed the container without an Unmount; removal must not be stuck "in use".
    await docker('rm', '-f', 'during-restart');
    await docker('volume', 'rm', 'engine-restart');
  });

  it('runs a Compose v1 file with driver: berth and driver_opts: up, down, up with the data kept', async () => {
    const project = 'berthe2e';
    const cwd = join(repoRoot, 'test', 'fixtures', 'compose-volume');
    const counter = async () => (await docker('exec', `${project}_app_1`, 'cat', '/srv/app/counter')).stdout.trim();
    await host.compose(['up', '-d'], { cwd, projectName: project });
    await waitUntil(async () => (await counter()) === '1', { description: 'first run to count', timeoutMs: 20_000 });
    const [inspect] = JSON.parse((await docker('volume', 'inspect', `${project}_appdata`)).stdout) as Array<{ Driver: string; Options: Record<string, string>; Mountpoint: string }>;
    expect(inspect?.Driver).to.equal('berth');
    expect(inspect?.Options).to.deep.equal({ mode: '0770', uid: '1234' });
    const info = await stat(inspect!.Mountpoint);
    expect([info.uid, info.mode & 0o777]).to.deep.equal([1234, 0o770]);
    await host.compose(['down'], { cwd, projectName: project });
    expect((await berthStatus(`${project}_appdata`)).mountCount).to.equal(0);
    await host.compose(['up', '-d'], { cwd, projectName: project });
    await waitUntil(async () => (await counter()) === '2', { description: 'second run to find the first count', timeoutMs: 20_000 });
    await host.compose(['down', '--volumes'], { cwd, projectName: project });
    expect((await docker('volume', 'ls', '-q')).stdout).to.not.contain(`${project}_appdata`);
  });

  it('refuses bad names and options with clear errors and leaves nothing behind', async () => {
    const before = (await docker('volume', 'ls', '-q')).stdout;
    const badName = await host.docker(['volume', 'create', '-d', 'berth', 'bad..name/../x']);
    expect(badName.code).to.not.equal(0);
    expect(badName.stderr).to.contain('VolumeDriver.Create: volume name "bad..name/../x" is invalid');
    const unknownOption = await host.docker(['volume', 'create', '-d', 'berth', '-o', 'colour=blue', 'opt-vol']);
    expect(unknownOption.stderr).to.contain('VolumeDriver.Create: unknown option colour; known options: backup-key, failover, from-backup, from-snapshot, gid, mode, quiesce, quiesce-post, quiesce-pre, replica-hosts, replicas, replicate-every, size, snapshot-every, snapshot-keep, uid');
    const badValue = await host.docker(['volume', 'create', '-d', 'berth', '-o', 'uid=root', 'opt-vol']);
    expect(badValue.stderr).to.contain('option uid="root" must be a numeric id');
    expect((await docker('volume', 'ls', '-q')).stdout).to.equal(before);
    const listed = JSON.parse((await host.berth(['volume', 'ls', '--json'])).stdout) as Array<{ name: string }>;
    expect(listed.map((volume) => volume.name)).to.not.include('opt-vol');
    expect(await host.listDir(join(host.berthRoot, 'volumes'))).to.not.include('opt-vol');
    expect(await host.listDir(join(host.berthRoot, 'staging'))).to.deep.equal([]);
  });

  it('refuses to remove a volume a running container uses', async () => {
    await docker('volume', 'create', '-d', 'berth', 'busy');
    await docker('run', '-d', '--name', 'busy-user', '-v', 'busy:/data', IMAGE, 'sleep', '600');
    const refused = await host.docker(['volume', 'rm', 'busy']);
    expect(refused.code).to.not.equal(0);
    expect(refused.stderr).to.match(/volume is in use|in use/);
    await docker('rm', '-f', 'busy-user');
    await docker('volume', 'rm', 'busy');
  });

  it('operator CLI: status, volume ls and inspect, doctor', async () => {
    await docker('volume', 'create', '-d', 'berth', 'cli-check');
    const status = JSON.parse((await host.berth(['status', '--json'])).stdout) as { engine: { reachable: boolean }; volumes: { total: number } };
    expect(status.engine.reachable).to.equal(true);
    expect(status.volumes.total).to.be.greaterThan(0);
    const inspect = JSON.parse((await host.berth(['volume', 'inspect', 'cli-check', '--json'])).stdout) as Array<{ name: string; mountCount: number }>;
    expect(inspect[0]).to.include({ name: 'cli-check', mountCount: 0 });
    const doctor = await host.berth(['doctor', '--json']);
    const checks = JSON.parse(doctor.stdout) as Array<{ name: string; status: string }>;
    expect(checks.find((check) => check.name === 'engine')?.status).to.equal('ok');
    expect(checks.filter((check) => check.status === 'fail'), doctor.stdout).to.deep.equal([]);
    await docker('volume', 'rm', 'cli-check');
    expect(await readFile(host.agent!.logPath, 'utf8')).to.contain('"msg":"volume created"');
  });
});
