import { expect } from 'chai';
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
    const { mkdir } = await import('node:fs/promises');
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
});

