import { expect } from 'chai';
import { join } from 'node:path';
import { startCluster, type Cluster, type Host } from '../helpers/cluster.js';
import { ensureBusyboxImage } from '../helpers/test-images.js';
import { waitUntil } from '../helpers/wait-until.js';

const IMAGE = 'berth-test/busybox:latest';

interface SnapshotJson {
  name: string;
  origin: string;
}

/** Snapshots, restore, clones, size limits and schedules, on a btrfs pool, through a real engine. */
describe('snapshots on the btrfs backend through a real Docker Engine', function () {
  this.timeout(180_000);
  let cluster: Cluster;
  let host: Host;
  const docker = (...args: string[]) => host.dockerOk(args);
  const berth = async (...args: string[]) => {
    const result = await host.berth(args);
    if (result.code !== 0) throw new Error(`berth ${args.join(' ')} failed: ${result.stderr}`);
    return result.stdout;
  };
  const read = async (volume: string, file: string) => (await docker('run', '--rm', '-v', `${volume}:/data`, IMAGE, 'cat', `/data/${file}`)).stdout;

  before(async () => {
    cluster = await startCluster({ hosts: 1 });
    host = cluster.hosts[0]!;
    await ensureBusyboxImage(host);
    await host.startAgent({ args: ['--btrfs-pool', join(host.dir, 'pool.img'), '--pool-size', '2G'] });
  });
  after(async () => cluster?.dispose());

  it('serves volumes from btrfs subvolumes in the pool', async () => {
    const status = JSON.parse(await berth('status', '--json')) as { backend: string };
    expect(status.backend).to.equal('btrfs');
    await docker('volume', 'create', '-d', 'berth', 'subvol');
    const [inspect] = JSON.parse((await docker('volume', 'inspect', 'subvol')).stdout) as Array<{ Mountpoint: string; Status: { backend: string } }>;
    expect(inspect?.Status.backend).to.equal('btrfs');
    const show = await host.inNamespaces(['btrfs', 'subvolume', 'show', inspect!.Mountpoint]);
    expect(show.code, show.stderr).to.equal(0);
    await docker('volume', 'rm', 'subvol');
  });

  it('snapshots, restores in place (refused while in use unless forced) and keeps the replaced data', async () => {
    await docker('volume', 'create', '-d', 'berth', 'app');
    await docker('run', '--rm', '-v', 'app:/data', IMAGE, 'sh', '-c', 'echo good > /data/state && sync');
    expect((await berth('snapshot', 'create', 'app', 'before-upgrade')).trim()).to.equal('app@before-upgrade');
    await docker('run', '--rm', '-v', 'app:/data', IMAGE, 'sh', '-c', 'echo broken > /data/state && echo junk > /data/junk && sync');

    await docker('run', '-d', '--name', 'app-user', '-v', 'app:/data', IMAGE, 'sh', '-c', 'trap "exit 0" TERM; while true; do sleep 1; done');
    const refused = await host.berth(['snapshot', 'restore', 'app@before-upgrade']);
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.contain('volume app is mounted (1 mount); stop its containers or force the restore');
    expect((await docker('exec', 'app-user', 'cat', '/data/state')).stdout).to.equal('broken\n');

    const restored = JSON.parse(await berth('snapshot', 'restore', 'app@before-upgrade', '--force', '--json')) as { safetySnapshot: string; restartedContainers: string[] };
    expect(restored.restartedContainers).to.have.length(1);
    const state = JSON.parse((await docker('inspect', 'app-user')).stdout) as Array<{ State: { Running: boolean } }>;
    expect(state[0]?.State.Running, 'the stopped container is running again').to.equal(true);
    expect((await docker('exec', 'app-user', 'cat', '/data/state')).stdout).to.equal('good\n');
    expect((await docker('exec', 'app-user', 'ls', '/data')).stdout).to.equal('state\n');
    await docker('rm', '-f', 'app-user');

    const snapshots = JSON.parse(await berth('snapshot', 'ls', 'app', '--json')) as SnapshotJson[];
    expect(snapshots.map((snapshot) => snapshot.name)).to.include.members(['before-upgrade', restored.safetySnapshot]);
    await docker('volume', 'create', '-d', 'berth', '-o', `from-snapshot=app@${restored.safetySnapshot}`, 'app-forensics');
    expect(await read('app-forensics', 'state')).to.equal('broken\n');
  });

  it('clones a snapshot with from-snapshot into an independent volume', async () => {
    await docker('volume', 'create', '-d', 'berth', 'source');
    await docker('run', '--rm', '-v', 'source:/data', IMAGE, 'sh', '-c', 'echo v1 > /data/f && sync');
    await berth('snapshot', 'create', 'source', 's1');
    const [inspect] = JSON.parse((await docker('volume', 'inspect', 'source')).stdout) as Array<{ Status: { snapshots: number } }>;
    expect(inspect?.Status.snapshots, 'docker volume inspect shows the snapshot count').to.equal(1);
    await docker('volume', 'create', '-d', 'berth', '-o', 'from-snapshot=source@s1', 'clone');
    await docker('run', '--rm', '-v', 'clone:/data', IMAGE, 'sh', '-c', 'echo clone > /data/f && sync');
    expect(await read('source', 'f')).to.equal('v1\n');
    expect(await read('clone', 'f')).to.equal('clone\n');
    const missing = await host.docker(['volume', 'create', '-d', 'berth', '-o', 'from-snapshot=source@nope', 'clone2']);
    expect(missing.stderr).to.contain('option from-snapshot names snapshot source@nope, which does not exist');
    expect((await docker('volume', 'ls', '-q')).stdout).to.not.contain('clone2');
    const removeSnapshot = await berth('snapshot', 'rm', 'source@s1');
    expect(removeSnapshot.trim()).to.equal('removed source@s1');
    expect(await read('clone', 'f'), 'a clone outlives its snapshot').to.equal('clone\n');
  });

  it('enforces size= with quota groups', async () => {
    await docker('volume', 'create', '-d', 'berth', '-o', 'size=32M', 'capped');
    const [inspect] = JSON.parse((await docker('volume', 'inspect', 'capped')).stdout) as Array<{ Status: { sizeLimit: string } }>;
    expect(inspect?.Status.sizeLimit).to.equal('32M');
    const overflow = await host.docker(['run', '--rm', '-v', 'capped:/data', IMAGE, 'sh', '-c', 'dd if=/dev/zero of=/data/big bs=1M count=64 && sync']);
    expect(overflow.code).to.not.equal(0);
    expect(overflow.stderr).to.match(/quota exceeded|No space left/i);
    const fits = await host.docker(['run', '--rm', '-v', 'capped:/data', IMAGE, 'sh', '-c', 'rm -f /data/big; dd if=/dev/zero of=/data/small bs=1M count=8 && sync']);
    expect(fits.code, fits.stderr).to.equal(0);
  });

  it('takes scheduled snapshots and keeps only snapshot-keep of them', async () => {
    await docker('volume', 'create', '-d', 'berth', '-o', 'snapshot-every=10s', '-o', 'snapshot-keep=2', 'scheduled');
    await berth('snapshot', 'create', 'scheduled', 'mine');
    const scheduled = async () => (JSON.parse(await berth('snapshot', 'ls', 'scheduled', '--json')) as SnapshotJson[]).filter((snapshot) => snapshot.origin === 'scheduled');
    // First one at once, then one every 10 s: after ~25 s three were taken and one pruned.
    const first = await waitUntil(async () => ((await scheduled()).length >= 1 ? await scheduled() : undefined), { description: 'first scheduled snapshot', timeoutMs: 20_000, intervalMs: 1000 });
    const firstName = first[0]!.name;
    await waitUntil(async () => !(await scheduled()).some((snapshot) => snapshot.name === firstName), { description: 'the oldest scheduled snapshot to be pruned', timeoutMs: 60_000, intervalMs: 1000 });
    expect(await scheduled()).to.have.length(2);
    const all = JSON.parse(await berth('snapshot', 'ls', 'scheduled', '--json')) as SnapshotJson[];
    expect(all.map((snapshot) => snapshot.name)).to.include('mine');
  });

  it('quiesce=pause freezes the using container for the snapshot only', async () => {
    await docker('volume', 'create', '-d', 'berth', '-o', 'quiesce=pause', 'paused');
    await docker('run', '-d', '--name', 'pause-user', '-v', 'paused:/data', IMAGE, 'sh', '-c', 'trap "exit 0" TERM; while true; do date >> /data/log; sleep 0.2; done');
    const since = Math.floor(Date.now() / 1000) - 1;
    await berth('snapshot', 'create', 'paused', 'frozen');
    const until = Math.floor(Date.now() / 1000) + 1;
    const events = await docker('events', '--since', String(since), '--until', String(until), '--filter', 'container=pause-user', '--format', '{{.Action}}');
    expect(events.stdout.split('\n').filter((line) => line === 'pause' || line === 'unpause')).to.deep.equal(['pause', 'unpause']);
    const state = JSON.parse((await docker('inspect', 'pause-user')).stdout) as Array<{ State: { Running: boolean; Paused: boolean } }>;
    expect(state[0]?.State).to.include({ Running: true, Paused: false });
    await docker('rm', '-f', 'pause-user');
  });

  it('quiesce=exec runs quiesce-pre before and quiesce-post after the snapshot, inside the container', async () => {
    await docker('volume', 'create', '-d', 'berth', '-o', 'quiesce=exec', '-o', 'quiesce-pre=echo checkpointed > /data/marker && sync', '-o', 'quiesce-post=rm /data/marker', 'hooked');
    await docker('run', '-d', '--name', 'hook-user', '-v', 'hooked:/data', IMAGE, 'sh', '-c', 'trap "exit 0" TERM; while true; do sleep 1; done');
    await berth('snapshot', 'create', 'hooked', 'consistent');
    await docker('volume', 'create', '-d', 'berth', '-o', 'from-snapshot=hooked@consistent', 'hooked-copy');
    expect(await read('hooked-copy', 'marker'), 'the pre command ran before the snapshot').to.equal('checkpointed\n');
    expect((await host.docker(['exec', 'hook-user', 'ls', '/data/marker'])).code, 'the post command ran after it').to.not.equal(0);
    await docker('rm', '-f', 'hook-user');
  });

  it('removes a volume together with its snapshots', async () => {
    await docker('volume', 'create', '-d', 'berth', 'doomed');
    await berth('snapshot', 'create', 'doomed', 'keepsake');
    await docker('volume', 'rm', 'doomed');
    const listed = await host.berth(['snapshot', 'ls', 'doomed']);
    expect(listed.stderr).to.contain('volume doomed does not exist');
    const leftovers = await host.inNamespaces(['btrfs', 'subvolume', 'list', '-o', join(host.berthRoot, 'pool')]);
    expect(leftovers.stdout).to.not.contain('doomed');
  });
});
