import { expect } from 'chai';
import { join } from 'node:path';
import type { Cluster, Host } from '../helpers/cluster.js';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.js';
import type { EtcdServer } from '../helpers/etcd-server.js';
import { requirePrerequisites } from '../helpers/prerequisites.js';
import { BUSYBOX_IMAGE, ensureBusyboxImage } from '../helpers/test-images.js';

// A host that ran Berth alone (the single-host file store) joins a cluster: two namespaced hosts, real
// engines, btrfs pools, one etcd, peer certificates. What users observe: the volumes they made alone are
// listed on the other host, a container still running keeps its volume, and a volume moves to the other
// host with its data.
describe('a single host joining a cluster with its volumes (2 engines, 2 agents, etcd, btrfs)', function () {
  this.timeout(300_000);
  let cluster: Cluster;
  let etcd: EtcdServer;
  let pkiDir: string;
  let stack: EtcdCluster | undefined;

  const poolArgs = (host: Host): string[] => ['--btrfs-pool', join(host.dir, 'pool.img'), '--pool-size', '2G'];
  const clusterArgs = (host: Host): string[] => [
    '--store', `etcd://${etcd.endpoint}`,
    '--host-name', host.name,
    '--advertise-addr', host.address,
    '--host-ttl', '4s',
    '--pki-dir', pkiDir,
    ...poolArgs(host),
  ];

  before(async function () {
    this.timeout(600_000);
    requirePrerequisites(['mkfs.btrfs', 'losetup', 'openssl']);
    stack = await startEtcdCluster({ hosts: 2, prefix: 'bjoin' });
    ({ cluster, etcd, pkiDir } = stack);
    await Promise.all(cluster.hosts.map((host) => ensureBusyboxImage(host)));
  });

  after(async function () {
    this.timeout(300_000);
    const problems = (await stack?.dispose()) ?? [];
    if (problems.length > 0) throw new Error(`cleanup: ${problems.join('; ')}`);
  });

  it('lists the volumes of the host that ran alone everywhere, keeps the one in use, and moves the others with their data', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    // hA alone: a volume with data, and a container that keeps another one in use across the switch.
    await a.startAgent({ args: poolArgs(a) });
    await a.dockerOk(['volume', 'create', '-d', 'berth', 'notes']);
    await a.dockerOk(['run', '--rm', '-v', 'notes:/d', BUSYBOX_IMAGE, 'sh', '-c', 'echo written-alone > /d/f']);
    await a.dockerOk(['volume', 'create', '-d', 'berth', 'inuse']);
    await a.dockerOk(['run', '-d', '--name', 'holder', '-v', 'inuse:/d', BUSYBOX_IMAGE, 'sleep', '600']);
    try {
      // hA restarts on the shared store, hB joins.
      await a.stopAgents();
      await a.startAgent({ args: clusterArgs(a) });
      await b.startAgent({ args: clusterArgs(b) });

      const listed = (await b.dockerOk(['volume', 'ls', '--format', '{{.Driver}} {{.Name}}'])).stdout.trim().split('\n').sort();
      expect(listed).to.deep.equal(['berth inuse', 'berth notes']);
      const refused = await b.docker(['run', '--rm', '-v', 'inuse:/d', BUSYBOX_IMAGE, 'true']);
      expect(refused.code, 'the volume the running container holds stays with it').to.not.equal(0);
      expect(refused.stderr).to.contain('volume inuse is in use on host hA');
      const running = await a.dockerOk(['inspect', '--format', '{{.State.Running}}', 'holder']);
      expect(running.stdout.trim()).to.equal('true');

      const read = await b.dockerOk(['run', '--rm', '-v', 'notes:/d', BUSYBOX_IMAGE, 'cat', '/d/f'], { timeoutMs: 120_000 });
      expect(read.stdout.trim(), 'the data made while hA ran alone, now on hB').to.equal('written-alone');
      const inspect = JSON.parse((await b.berth(['volume', 'inspect', 'notes', '--json'])).stdout) as Array<{ replication: { owner: string; epoch: number } }>;
      expect(inspect[0]!.replication).to.deep.include({ owner: 'hB', epoch: 2 });
    } finally {
      await a.docker(['rm', '-f', 'holder']).catch(() => undefined);
    }
  });
});
