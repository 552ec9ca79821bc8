import { expect } from 'chai';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { deadEndpoint, startEtcd, type EtcdServer } from '../helpers/etcd-server.js';
import { runBerthCli, startLocalAgent, type LocalAgent } from '../helpers/local-agent.js';
import { callPlugin, goJson } from '../helpers/plugin-client.js';
import { makeTempDir } from '../helpers/temp-dir.js';

// The real agent binary with `--store etcd://...`: volume records live in etcd, not in the data root.
describe('agent with the etcd state store', function () {
  this.timeout(90_000);
  let etcd: EtcdServer;
  let temp: Awaited<ReturnType<typeof makeTempDir>>;
  let agent: LocalAgent | undefined;

  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.stop();
  });
  beforeEach(async () => (temp = await makeTempDir('berth-ae-')));
  afterEach(async () => {
    await agent?.kill();
    agent = undefined;
    await temp.dispose();
  });

  it('creates, lists and gets volumes through the plugin socket with records in etcd, across an agent restart', async () => {
    const store = `etcd://${etcd.endpoint}`;
    agent = await startLocalAgent({ dir: temp.path, extraArgs: ['--store', store, '--host-name', 'host-a'] });
    const created = await callPlugin(agent.pluginSocket, 'VolumeDriver.Create', goJson({ Name: 'web', Opts: { mode: '0700' } }));
    expect(created.status, created.text).to.equal(200);
    expect(created.body).to.deep.equal({});

    const list = await callPlugin(agent.pluginSocket, 'VolumeDriver.List', goJson({}));
    expect((list.body.Volumes as Array<{ Name: string }>).map((volume) => volume.Name)).to.deep.equal(['web']);
    const keys = (await etcd.etcdctl(['get', '--prefix', '--keys-only', 'berth/'])).stdout.split('\n').filter((line) => line !== '');
    // The cluster-wide record and its owner claim, the owner's local record, and the host's registration.
    expect(keys).to.deep.equal(['berth/cluster/hosts/host-a', 'berth/cluster/members/host-a', 'berth/hosts/host-a/volumes/web', 'berth/vol/owners/web', 'berth/vol/records/web']);

    // Another host on the same etcd sees the same volume, owned by host-a; without the peer port (no
    // --pki-dir) it cannot take it over, and says so.
    const otherDir = `${temp.path}/host-b`;
    await mkdir(otherDir);
    const other = await startLocalAgent({ dir: otherDir, extraArgs: ['--store', store, '--host-name', 'host-b'] });
    try {
      const otherList = await callPlugin(other.pluginSocket, 'VolumeDriver.List', goJson({}));
      expect((otherList.body.Volumes as Array<{ Name: string }>).map((volume) => volume.Name)).to.deep.equal(['web']);
      const otherGet = await callPlugin(other.pluginSocket, 'VolumeDriver.Get', goJson({ Name: 'web' }));
      expect(otherGet.status, otherGet.text).to.equal(200);
      expect((otherGet.body.Volume as { Status: { replication: { owner: string } } }).Status.replication.owner).to.equal('host-a');
      const mount = await callPlugin(other.pluginSocket, 'VolumeDriver.Mount', goJson({ Name: 'web', ID: 'c1' }));
      expect(mount.status).to.equal(500);
      expect(mount.body.Err).to.equal('volume web lives on host host-a; moving it to this host needs the peer port: start every agent with --pki-dir (see berth cluster init)');
    } finally {
      await other.kill();
    }

    const status = await runBerthCli(['status', '--json', '--run-dir', agent.runDir]);
    expect(status.code, status.stderr).to.equal(0);
    expect((JSON.parse(status.stdout) as { store: string }).store).to.equal(`etcd ${etcd.endpoint} prefix "berth/"`);

    // A graceful stop closes the etcd client (the process must not hang on it); a new agent reads the same records.
    expect((await agent.stop()).code).to.equal(0);
    agent = await startLocalAgent({ dir: temp.path, extraArgs: ['--store', store, '--host-name', 'host-a'] });
    const get = await callPlugin(agent.pluginSocket, 'VolumeDriver.Get', goJson({ Name: 'web' }));
    expect(get.status, get.text).to.equal(200);
    expect(get.body.Volume).to.deep.include({ Name: 'web' });
    const removed = await callPlugin(agent.pluginSocket, 'VolumeDriver.Remove', goJson({ Name: 'web' }));
    expect(removed.status, removed.text).to.equal(200);
    expect((await etcd.etcdctl(['get', '--prefix', '--keys-only', 'berth/hosts/'])).stdout.trim()).to.equal('');
  });

  it('refuses to start when etcd does not answer, naming the endpoint', async () => {
    const dead = await deadEndpoint();
    let failure: unknown;
    try {
      agent = await startLocalAgent({ dir: temp.path, extraArgs: ['--store', `etcd://${dead}`] });
    } catch (error) {
      failure = error;
    }
    expect(failure, 'the agent came up without its store').to.be.instanceOf(Error);
    expect((failure as Error).message).to.include('it exited').and.include(dead);
  });
  it('brings the volumes of a host that ran alone into the cluster when it joins; a name already in the cluster stays in the file store, untouched', async () => {
    const store = `etcd://${etcd.endpoint}`;
    const dirs = { a: join(temp.path, 'a'), b: join(temp.path, 'b'), c: join(temp.path, 'c') };
    for (const dir of Object.values(dirs)) await mkdir(dir);
    const joined = (host: keyof typeof dirs): Promise<LocalAgent> => startLocalAgent({ dir: dirs[host], extraArgs: ['--store', store, '--host-name', `host-${host}`] });

    // Each host first runs alone on the file store. host-a: `legacy` with data, `busy` left mounted by a
    // container, `clash`; host-b: its own `clash`; host-c: `taken`.
    agent = await startLocalAgent({ dir: dirs.a });
    await writeVolume(agent, 'legacy', 'written while host-a ran alone');
    await writeVolume(agent, 'clash', 'clash of host-a');
    await createVolume(agent, 'busy');
    expect((await callPlugin(agent.pluginSocket, 'VolumeDriver.Mount', goJson({ Name: 'busy', ID: 'container-1' }))).status).to.equal(200);
    await agent.stop();
    agent = await startLocalAgent({ dir: dirs.b });
    await writeVolume(agent, 'clash', 'clash of host-b');
    await agent.stop();
    agent = await startLocalAgent({ dir: dirs.c });
    await createVolume(agent, 'taken');
    await agent.stop();
    agent = undefined;

    // host-a joins: every volume becomes a cluster volume it owns, `busy` still mounted; its file store is set aside.
    const a = await joined('a');
    try {
      expect(await names(a)).to.deep.equal(['busy', 'clash', 'legacy']);
      expect(await readVolume(a, 'legacy')).to.equal('written while host-a ran alone');
      const record = JSON.parse((await etcd.etcdctl(['get', '--print-value-only', 'berth/vol/records/busy'])).stdout) as { owner: string; epoch: number; mounted: boolean };
      expect(record).to.deep.include({ owner: 'host-a', epoch: 1, mounted: true });
      expect(await exists(join(a.root, 'state', 'berth.db')), 'the file store is set aside').to.equal(false);
      expect(await exists(join(a.root, 'state', 'berth.db.imported'))).to.equal(true);

      // host-b joins: its `clash` is not carried over (the name is host-a's in the cluster) and stays in its file
      // store, untouched; host-a's volumes are listed on host-b too.
      const b = await joined('b');
      try {
        expect(await names(b)).to.deep.equal(['busy', 'clash', 'legacy']);
        expect(await b.logs()).to.include('volume not carried over to the cluster store: host host-a has a volume clash in the cluster; its data is untouched');
        const get = await callPlugin(b.pluginSocket, 'VolumeDriver.Get', goJson({ Name: 'clash' }));
        expect((get.body.Volume as { Status: { replication: { owner: string } } }).Status.replication.owner).to.equal('host-a');
        expect(await readVolume(a, 'clash')).to.equal('clash of host-a');
        expect(await exists(join(b.root, 'state', 'berth.db')), 'the file store stays while a volume is not carried over').to.equal(true);
        expect(await readFile(join(b.root, 'volumes', 'clash', 'note'), 'utf8'), "host-b's own data").to.equal('clash of host-b');
        const doctor = JSON.parse((await runBerthCli(['doctor', '--json', '--run-dir', b.runDir])).stdout) as Array<{ name: string; status: string; detail: string }>;
        expect(doctor.find((check) => check.name === 'local volumes')).to.deep.include({
          status: 'warn',
          detail: `volumes of the single-host store were not carried over to the cluster, data untouched: they are left in ${join(b.root, 'state', 'berth.db')} (the agent's log at start says why for each)`,
        });
      } finally {
        await b.kill();
      }

      // host-c has a record of its own `taken` on etcd already (another volume, made elsewhere by hand here): that one
      // is not carried over, and the file store stays until the operator settles it.
      await etcd.etcdctl(['put', 'berth/hosts/host-c/volumes/taken', JSON.stringify({ name: 'taken', state: 'ready', backend: 'dir', options: {}, createdAt: '2020-01-01T00:00:00.000Z', mounts: {} })]);
      const c = await joined('c');
      try {
        expect(await c.logs()).to.include('volume not carried over to the cluster store: this host already has another volume taken on the cluster store (created 2020-01-01T00:00:00.000Z); its data is untouched');
        expect(await exists(join(c.root, 'state', 'berth.db'))).to.equal(true);
      } finally {
        await c.kill();
      }

      // A restart of host-a reads nothing twice.
      expect((await a.stop()).code).to.equal(0);
      agent = await joined('a');
      expect(await names(agent)).to.deep.equal(['busy', 'clash', 'legacy']);
      expect((await agent.logs()).match(/volumes of the single-host store carried over/g), 'one import, at the first join').to.have.length(1);
    } finally {
      await a.kill();
    }
  });
});


async function createVolume(agent: LocalAgent, name: string): Promise<void> {
  const created = await callPlugin(agent.pluginSocket, 'VolumeDriver.Create', goJson({ Name: name }));
  expect(created.status, created.text).to.equal(200);
}

/** Creates the volume and writes `text` to a file in it, through Mount and Unmount as a container would. */
async function writeVolume(agent: LocalAgent, name: string, text: string): Promise<void> {
  await createVolume(agent, name);
  const mounted = await callPlugin(agent.pluginSocket, 'VolumeDriver.Mount', goJson({ Name: name, ID: 'writer' }));
  expect(mounted.status, mounted.text).to.equal(200);
  await writeFile(join(mounted.body.Mountpoint as string, 'note'), text);
  expect((await callPlugin(agent.pluginSocket, 'VolumeDriver.Unmount', goJson({ Name: name, ID: 'writer' }))).status).to.equal(200);
}

async function readVolume(agent: LocalAgent, name: string): Promise<string> {
  const mounted = await callPlugin(agent.pluginSocket, 'VolumeDriver.Mount', goJson({ Name: name, ID: 'reader' }));
  expect(mounted.status, mounted.text).to.equal(200);
  try {
    return await readFile(join(mounted.body.Mountpoint as string, 'note'), 'utf8');
  } finally {
    await callPlugin(agent.pluginSocket, 'VolumeDriver.Unmount', goJson({ Name: name, ID: 'reader' }));
  }
}

async function names(agent: LocalAgent): Promise<string[]> {
  const list = await callPlugin(agent.pluginSocket, 'VolumeDriver.List', goJson({}));
  return (list.body.Volumes as Array<{ Name: string }>).map((volume) => volume.Name).sort();
}

function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}
