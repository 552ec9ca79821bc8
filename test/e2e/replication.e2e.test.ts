import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cluster, Host } from '../helpers/cluster.js';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.js';
import type { EtcdServer } from '../helpers/etcd-server.js';
import { ensurePostgresImage, startPostgres, type PostgresContainer } from '../helpers/postgres.js';
import { requirePrerequisites } from '../helpers/prerequisites.js';
import { checkCommand } from '../helpers/run-command.js';
import { BUSYBOX_IMAGE, ensureBusyboxImage } from '../helpers/test-images.js';
import { waitUntil } from '../helpers/wait-until.js';

/** What `berth volume inspect --json` shows of replication. */
interface ReplicationView {
  owner: string;
  ownerAlive: boolean;
  epoch: number;
  replicas: { host: string; state: string; snapshot: string | null; snapshotTakenAt: string | null; lagBytes: number | null }[];
}

// Three namespaced hosts, each a real engine plus an agent on its own loop-mounted btrfs pool, one etcd
// (in the underlay's switch namespace, so cutting one host's link leaves the others their store), agents
// authenticated to each other by certificates from `berth cluster init`. What users observe: PostgreSQL
// moved between hosts with every row, a dead host's database started elsewhere, a cut-off host that
// cannot write into the new owner's data, replicas that survive their agents being killed mid-transfer, and a
// replica host that stays gone replaced by the spare one.
describe('volume replication across hosts (3 engines, 3 agents, etcd, btrfs)', function () {
  this.timeout(600_000);
  let cluster: Cluster;
  let etcd: EtcdServer;
  let pkiDir: string;
  let stack: EtcdCluster | undefined;
  const HOST_TTL = '4s';

  const agentArgs = (host: Host): string[] => [
    '--store', `etcd://${etcd.endpoint}`,
    '--host-name', host.name,
    '--advertise-addr', host.address,
    '--host-ttl', HOST_TTL,
    '--btrfs-pool', join(host.dir, 'pool.img'),
    '--pool-size', '3G',
    '--pki-dir', pkiDir,
    '--log-level', 'debug',
  ];

  async function berthJson<T>(host: Host, args: readonly string[]): Promise<T> {
    const result = await host.berth([...args, '--json'], { timeoutMs: 60_000 });
    if (result.code !== 0) throw new Error(`berth ${args.join(' ')} on ${host.name} failed: ${result.stderr}`);
    return JSON.parse(result.stdout) as T;
  }

  const replication = async (host: Host, volume: string): Promise<ReplicationView> => (await berthJson<{ replication: ReplicationView }[]>(host, ['volume', 'inspect', volume]))[0]!.replication;

  /** Waits until every replica holds a snapshot taken after `since` (ms since the epoch). */
  async function replicatedSince(owner: Host, volume: string, since: number): Promise<void> {
    await waitUntil(async () => {
      const view = await replication(owner, volume);
      return view.replicas.every((replica) => replica.snapshotTakenAt !== null && Date.parse(replica.snapshotTakenAt) > since);
    }, { timeoutMs: 60_000, intervalMs: 250, description: `replicas of ${volume} to hold a snapshot taken after ${new Date(since).toISOString()}` });
  }

  async function ownerGone(host: Host, volume: string): Promise<void> {
    await waitUntil(async () => !(await replication(host, volume)).ownerAlive, { timeoutMs: 30_000, intervalMs: 250, description: `owner lease of ${volume} to expire (seen from ${host.name})` });
  }

  const committed = async (pg: PostgresContainer): Promise<number> => Number(await pg.psql('SELECT count(*) FROM pgbench_history'));

  async function balanced(pg: PostgresContainer): Promise<void> {
    const [accounts, tellers, branches, history] = (await pg.psql(
      'SELECT (SELECT coalesce(sum(abalance),0) FROM pgbench_accounts), (SELECT coalesce(sum(tbalance),0) FROM pgbench_tellers), (SELECT coalesce(sum(bbalance),0) FROM pgbench_branches), (SELECT coalesce(sum(delta),0) FROM pgbench_history)',
    )).split('|');
    expect([accounts, tellers, branches], 'pgbench balances equal the sum of history deltas').to.deep.equal([history, history, history]);
  }

  const agentLog = (host: Host): string => readFileSync(host.agent!.logPath, 'utf8');

  before(async function () {
    this.timeout(900_000);
    requirePrerequisites(['mkfs.btrfs', 'losetup', 'openssl']);
    stack = await startEtcdCluster({ hosts: 3, prefix: 'brep' });
    ({ cluster, etcd, pkiDir } = stack);
    await Promise.all(cluster.hosts.map(async (host) => {
      await ensureBusyboxImage(host);
      await ensurePostgresImage(host);
      await host.startAgent({ args: agentArgs(host) });
    }));
  });

  after(async function () {
    this.timeout(300_000);
    const problems = (await stack?.dispose()) ?? [];
    if (problems.length > 0) throw new Error(`cleanup: ${problems.join('; ')}`);
  });

  it('moves PostgreSQL from hA to hB with every committed row; a Mount on hB while it runs on hA is refused', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    await a.dockerOk(['volume', 'create', '-d', 'berth', '-o', 'replicas=2', '-o', 'replica-hosts=hB', 'pgmove']);
    const pg = await startPostgres(a, { name: 'pg-move-a', volume: 'pgmove' });
    expect((await pg.pgbench(['-i', '-s', '2', '-q'])).code).to.equal(0);
    const bench = await pg.pgbench(['-n', '-c', '4', '-j', '2', '-T', '8']);
    expect(bench.code, bench.stderr).to.equal(0);
    const rows = await committed(pg);
    expect(rows).to.be.greaterThan(100);

    const refused = await b.docker(['run', '--rm', '-v', 'pgmove:/data', BUSYBOX_IMAGE, 'true']);
    expect(refused.code).to.not.equal(0);
    expect(refused.stderr).to.contain('volume pgmove is in use on host hA');

    await pg.stop();
    const moved = await startPostgres(b, { name: 'pg-move-b', volume: 'pgmove' });
    expect(await committed(moved), 'every committed transaction is on hB').to.equal(rows);
    await balanced(moved);
    const view = await replication(b, 'pgmove');
    expect(view).to.include({ owner: 'hB', epoch: 2 });
    expect(view.replicas.map((replica) => replica.host)).to.deep.equal(['hA']);
    // The engine on hB reports Berth's view too.
    const status = JSON.parse((await b.dockerOk(['volume', 'inspect', '--format', '{{json .Status.replication}}', 'pgmove'])).stdout) as ReplicationView;
    expect(status.owner).to.equal('hB');
    const doctor = JSON.parse((await b.berth(['doctor', '--json'])).stdout) as { name: string; status: string; detail: string }[];
    expect(doctor.find((check) => check.name === 'peer port'), JSON.stringify(doctor)).to.include({ status: 'ok' });
    const metrics = await b.berth(['metrics']);
    expect(metrics.stdout).to.match(/^berth_replica_in_sync\{volume="pgmove",replica="hA"\} [01]$/m);
    expect(metrics.stdout).to.match(/^berth_volume_epoch\{volume="pgmove"\} 2$/m);
    await moved.stop();
  });

  it('starts PostgreSQL on hB after hA dies mid-write (failover=auto), with the data up to the replication point', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    await a.dockerOk(['volume', 'create', '-d', 'berth', '-o', 'replicas=2', '-o', 'replica-hosts=hB', '-o', 'failover=auto', '-o', 'replicate-every=1s', 'pgfail']);
    const pg = await startPostgres(a, { name: 'pg-fail-a', volume: 'pgfail' });
    expect((await pg.pgbench(['-i', '-s', '2', '-q'])).code).to.equal(0);
    const load = pg.pgbench(['-n', '-c', '4', '-j', '2', '-T', '120'], { timeoutMs: 180_000 });
    load.catch(() => undefined); // the host dies under it
    await waitUntil(async () => (await committed(pg)) >= 300, { timeoutMs: 60_000, intervalMs: 250, description: 'pgbench to commit 300 transactions' });
    const mark = await committed(pg);
    const markedAt = Date.now();
    await replicatedSince(a, 'pgfail', markedAt);
    await a.crash();

    await ownerGone(b, 'pgfail');
    const recovered = await startPostgres(b, { name: 'pg-fail-b', volume: 'pgfail' });
    expect(await recovered.logs()).to.match(/database system was (interrupted|not properly shut down)/);
    expect(await committed(recovered), 'transactions committed before the replication point survive').to.be.at.least(mark);
    await balanced(recovered);
    expect(await replication(b, 'pgfail')).to.include({ owner: 'hB', epoch: 2 });

    // hA boots again: it sees the newer epoch, gives its copy up and rejoins as a replica.
    await a.startEngine();
    await a.startAgent({ args: agentArgs(a) });
    await recovered.psql('CREATE TABLE after_failover AS SELECT 1 AS x');
    await waitUntil(async () => (await replication(b, 'pgfail')).replicas.some((replica) => replica.host === 'hA' && replica.state === 'in-sync'), {
      timeoutMs: 60_000,
      intervalMs: 500,
      description: 'hA to rejoin as an in-sync replica',
    });
    await recovered.stop();
  });

  it('fences a cut-off owner: hB takes over, and hA’s writes after the cut never reach hB’s data', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    await a.dockerOk(['volume', 'create', '-d', 'berth', '-o', 'replicas=2', '-o', 'replica-hosts=hB', '-o', 'failover=auto', '-o', 'replicate-every=1s', 'split']);
    await a.dockerOk(['run', '-d', '--name', 'writer-a', '-v', 'split:/d', BUSYBOX_IMAGE, 'sh', '-c', 'i=0; while true; do i=$((i+1)); echo "A $i" >> /d/log; sleep 0.1; done']);
    const since = Date.now();
    await replicatedSince(a, 'split', since);
    await checkCommand(['ip', '-n', a.netns, 'link', 'set', 'ul0', 'down']);
    try {
      await a.dockerOk(['exec', 'writer-a', 'sh', '-c', 'echo A-after-cut >> /d/log']);
      await ownerGone(b, 'split');
      const seen = await b.dockerOk(['run', '--rm', '-v', 'split:/d', BUSYBOX_IMAGE, 'sh', '-c', 'cat /d/log; echo B-owner >> /d/log']);
      expect(seen.stdout).to.match(/^A \d+$/m);
      expect(seen.stdout).to.not.contain('A-after-cut');
    } finally {
      await checkCommand(['ip', '-n', a.netns, 'link', 'set', 'ul0', 'up']);
    }
    // Healed: hA learns it lost the volume, stops its writer and rejoins as a replica of hB.
    await waitUntil(async () => (await a.docker(['inspect', '--format', '{{.State.Running}}', 'writer-a'])).stdout.trim() === 'false', {
      timeoutMs: 60_000,
      intervalMs: 500,
      description: 'hA to stop its writer after seeing the newer epoch',
    });
    expect(agentLog(a)).to.contain('fenced: another host owns this volume now');
    await waitUntil(async () => (await replication(b, 'split')).replicas.some((replica) => replica.host === 'hA' && replica.state === 'in-sync'), {
      timeoutMs: 60_000,
      intervalMs: 500,
      description: 'hA to rejoin as a replica',
    });
    const final = await b.dockerOk(['run', '--rm', '-v', 'split:/d', BUSYBOX_IMAGE, 'cat', '/d/log']);
    expect(final.stdout).to.contain('B-owner');
    expect(final.stdout).to.not.contain('A-after-cut');
  });

  it('keeps a replica consistent when the owner’s agent, then the replica’s agent, is killed mid-transfer', async () => {
    const [b, c] = [cluster.host('hB'), cluster.host('hC')];
    await b.dockerOk(['volume', 'create', '-d', 'berth', '-o', 'replicas=2', '-o', 'replica-hosts=hC', '-o', 'replicate-every=1s', 'bulk']);
    const fill = async (file: string): Promise<string> => {
      const out = await b.dockerOk(['run', '--rm', '-v', 'bulk:/d', BUSYBOX_IMAGE, 'sh', '-c', `head -c 314572800 /dev/urandom > /d/${file} && sha256sum /d/${file}`], { timeoutMs: 180_000 });
      return out.stdout.split(' ')[0]!;
    };
    const pulls = (): number => agentLog(c).split('pulling chain snapshot').length;

    // The owner's agent dies while the replica pulls from it.
    let before = pulls();
    const first = await fill('one');
    await waitUntil(() => pulls() > before, { timeoutMs: 30_000, intervalMs: 20, description: 'hC to start pulling' });
    await b.agent!.kill();
    await b.startAgent({ args: agentArgs(b) });
    // The replica's agent dies while it receives.
    before = pulls();
    const second = await fill('two');
    await waitUntil(() => pulls() > before, { timeoutMs: 30_000, intervalMs: 20, description: 'hC to start pulling again' });
    await c.agent!.kill();
    await c.startAgent({ args: agentArgs(c) });

    await waitUntil(async () => {
      const view = await replication(b, 'bulk');
      return view.replicas.every((replica) => replica.state === 'in-sync' && replica.lagBytes === 0);
    }, { timeoutMs: 120_000, intervalMs: 500, description: 'hC to catch up fully' });
    // The copy is the data: take the volume to hC and check every byte.
    const sums = await c.dockerOk(['run', '--rm', '-v', 'bulk:/d', BUSYBOX_IMAGE, 'sha256sum', '/d/one', '/d/two'], { timeoutMs: 120_000 });
    expect(sums.stdout).to.contain(first).and.to.contain(second);
    expect(await replication(c, 'bulk')).to.include({ owner: 'hC' });
  });

  it('removes a replicated volume everywhere, from any host, but never its backups', async () => {
    const [a, b] = [cluster.host('hA'), cluster.host('hB')];
    await a.dockerOk(['volume', 'create', '-d', 'berth', '-o', 'replicas=2', '-o', 'replica-hosts=hB', '-o', 'replicate-every=1s', 'doomed']);
    const since = Date.now();
    await a.dockerOk(['run', '--rm', '-v', 'doomed:/d', BUSYBOX_IMAGE, 'sh', '-c', 'echo keep-me > /d/f']);
    await replicatedSince(a, 'doomed', since);
    expect(await b.listDir(join(b.berthRoot, 'pool', 'replicas', 'doomed'))).to.not.deep.equal([]);
    const backups = join(cluster.runDir, 'backups');
    expect((await a.berth(['backup', 'create', 'doomed', '--to', backups], { timeoutMs: 120_000 })).code).to.equal(0);
    await b.dockerOk(['volume', 'rm', 'doomed']);
    for (const host of cluster.hosts) {
      await waitUntil(async () => !(await host.docker(['volume', 'ls', '-q'])).stdout.split('\n').includes('doomed'), { timeoutMs: 30_000, description: `doomed gone on ${host.name}` });
    }
    await waitUntil(async () => (await b.listDir(join(b.berthRoot, 'pool', 'replicas')).catch(() => [])).every((name) => name !== 'doomed'), { timeoutMs: 30_000, description: 'the replica on hB removed' });
    await waitUntil(async () => !(await a.listDir(join(a.berthRoot, 'pool', 'volumes'))).includes('doomed'), { timeoutMs: 30_000, description: 'the live data on hA removed' });
    const listed = await berthJson<{ volume: string }[]>(a, ['backup', 'ls', backups]);
    expect(listed.map((backup) => backup.volume)).to.deep.equal(['doomed']);
  });

  it('replaces a replica host that stays gone: the copy is rebuilt on the spare host while the owner runs, and the gone host drops its own on return', async () => {
    const [a, b, c] = [cluster.host('hA'), cluster.host('hB'), cluster.host('hC')];
    // The owner is the one that replaces replicas: its agent waits 5 s for a gone host instead of 5 minutes.
    await a.stopAgents();
    await a.startAgent({ args: [...agentArgs(a), '--replace-replicas-after', '5s'] });
    try {
      await a.dockerOk(['volume', 'create', '-d', 'berth', '-o', 'replicas=2', '-o', 'replicate-every=1s', 'spread']);
      await a.dockerOk(['run', '-d', '--name', 'spread-writer', '-v', 'spread:/d', BUSYBOX_IMAGE, 'sleep', '600']);
      const since = Date.now();
      await a.dockerOk(['exec', 'spread-writer', 'sh', '-c', 'echo before > /d/f']);
      await replicatedSince(a, 'spread', since);
      const chosen = (await replication(a, 'spread')).replicas.map((replica) => replica.host);
      expect(chosen).to.have.length(1);
      const gone = cluster.host(chosen[0]!);
      const spare = gone === b ? c : b;

      await gone.crash();
      const written = Date.now();
      await a.dockerOk(['exec', 'spread-writer', 'sh', '-c', 'echo after-loss > /d/f']);
      await waitUntil(async () => {
        const replicas = (await replication(a, 'spread')).replicas;
        const takenAt = replicas[0]?.snapshotTakenAt ?? null;
        return replicas.length === 1 && replicas[0]!.host === spare.name && takenAt !== null && Date.parse(takenAt) > written;
      }, { timeoutMs: 90_000, intervalMs: 500, description: `${spare.name} to replace ${gone.name} and hold the newest write` });
      const running = await a.dockerOk(['inspect', '--format', '{{.State.Running}}', 'spread-writer']);
      expect(running.stdout.trim(), 'the owner kept its container running throughout').to.equal('true');

      // The gone host boots again: it is no longer a replica of the volume and drops its copy.
      await gone.startEngine();
      await gone.startAgent({ args: agentArgs(gone) });
      await waitUntil(async () => (await gone.listDir(join(gone.berthRoot, 'pool', 'replicas')).catch(() => [])).every((name) => name !== 'spread'), {
        timeoutMs: 60_000,
        intervalMs: 500,
        description: `${gone.name} to drop its stale copy`,
      });
      // The spare's copy is the data: take the volume there.
      await a.dockerOk(['rm', '-f', 'spread-writer']);
      const read = await spare.dockerOk(['run', '--rm', '-v', 'spread:/d', BUSYBOX_IMAGE, 'cat', '/d/f'], { timeoutMs: 120_000 });
      expect(read.stdout.trim()).to.equal('after-loss');
    } finally {
      await a.docker(['rm', '-f', 'spread-writer']).catch(() => undefined);
      await a.stopAgents();
      await a.startAgent({ args: agentArgs(a) });
    }
  });
});
