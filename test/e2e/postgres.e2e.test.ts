import { expect } from 'chai';
import { join } from 'node:path';
import { startCluster, type Cluster, type Host } from '../helpers/cluster.js';
import { ensurePostgresImage, POSTGRES_IMAGE, PostgresContainer, startPostgres } from '../helpers/postgres.js';
import { repoRoot } from '../helpers/repo-root.js';
import { requirePrerequisites } from '../helpers/prerequisites.js';
import { waitUntil } from '../helpers/wait-until.js';

/** `pgbench -i -s 5` creates 5 × 100 000 accounts. */
const SCALE = 5;
const ACCOUNTS = SCALE * 100_000;

/** Totals of the pgbench tables: every committed tpcb-like transaction adds the same delta to each balance and one history row. */
/** What snapshotUnderLoad saw around the snapshot. */
interface LoadWindow {
  /** Committed transactions just before the snapshot, and just after it. */
  before: number;
  after: number;
  /** pg_current_wal_lsn() just before the snapshot (and its quiesce). */
  walBefore: string;
}

interface Ledger {
  accounts: number;
  history: number;
  accountBalances: string;
  tellerBalances: string;
  branchBalances: string;
  historyDeltas: string;
}

/**
 * A real PostgreSQL 15 (built from Debian's packages, see test/helpers/postgres-image.ts) on Berth
 * volumes in a btrfs pool: its data persists on the volume, and a snapshot taken under write load
 * (crash-consistent with quiesce=none, checkpointed with quiesce=exec) clones into a database that
 * recovers, passes pg_amcheck and keeps pgbench's invariants.
 */
describe('PostgreSQL on Berth volumes through a real Docker Engine', function () {
  // The first run on a machine builds the image with debootstrap (about a minute).
  this.timeout(600_000);
  let cluster: Cluster;
  let host: Host;
  const docker = (...args: string[]) => host.dockerOk(args);
  const berth = async (...args: string[]) => {
    const result = await host.berth(args, { timeoutMs: 120_000 });
    if (result.code !== 0) throw new Error(`berth ${args.join(' ')} failed (exit ${result.code}): ${result.stderr}`);
    return result.stdout;
  };

  before(async () => {
    requirePrerequisites(['mkfs.btrfs', 'losetup']);
    cluster = await startCluster({ hosts: 1 });
    host = cluster.hosts[0]!;
    await ensurePostgresImage(host);
    await host.startAgent({ args: ['--btrfs-pool', join(host.dir, 'pool.img'), '--pool-size', '4G'] });
  });
  after(async () => cluster?.dispose());

  /** A Berth volume with `options`, PostgreSQL on it, and pgbench's tables loaded. */
  async function loadedDatabase(name: string, volume: string, options: readonly string[] = []): Promise<PostgresContainer> {
    await docker('volume', 'create', '-d', 'berth', ...options.flatMap((option) => ['-o', option]), volume);
    const pg = await startPostgres(host, { name, volume });
    const init = await pg.pgbench(['-i', '-s', String(SCALE), '-q']);
    expect(init.code, `pgbench -i failed: ${init.stderr}`).to.equal(0);
    return pg;
  }

  async function ledger(pg: PostgresContainer): Promise<Ledger> {
    const row = await pg.psql(
      'SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_history), ' +
        '(SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts), (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers), ' +
        '(SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches), (SELECT coalesce(sum(delta), 0) FROM pgbench_history)',
    );
    const [accounts, history, accountBalances, tellerBalances, branchBalances, historyDeltas] = row.split('|');
    return {
      accounts: Number(accounts),
      history: Number(history),
      accountBalances: accountBalances ?? '',
      tellerBalances: tellerBalances ?? '',
      branchBalances: branchBalances ?? '',
      historyDeltas: historyDeltas ?? '',
    };
  }

  const committed = async (pg: PostgresContainer) => Number(await pg.psql('SELECT count(*) FROM pgbench_history'));

  /**
   * Runs pgbench (4 clients, 20 s) and takes snapshot `snapshot` of the volume while it writes.
   * Resolves with the committed transaction counts seen just before and just after the snapshot, and
   * the WAL position just before it.
   */
  async function snapshotUnderLoad(pg: PostgresContainer, snapshot: string): Promise<LoadWindow> {
    const bench = pg.pgbench(['-n', '-c', '4', '-j', '2', '-T', '20'], { timeoutMs: 120_000 });
    bench.catch(() => undefined); // Awaited below; this only keeps an early failure from going unhandled.
    await waitUntil(async () => (await committed(pg)) >= 200, { description: 'pgbench to commit 200 transactions', timeoutMs: 30_000, intervalMs: 250 });
    const before = await committed(pg);
    const walBefore = await pg.psql('SELECT pg_current_wal_lsn()');
    expect((await berth('snapshot', 'create', pg.volume, snapshot)).trim()).to.equal(`${pg.volume}@${snapshot}`);
    const after = await committed(pg);
    const result = await bench;
    expect(result.code, `pgbench failed: ${result.stderr}`).to.equal(0);
    expect(result.stdout).to.match(/number of failed transactions: 0 /);
    expect(after, 'pgbench kept committing while the snapshot was taken').to.be.greaterThan(before);
    expect(await committed(pg), 'pgbench was still running after the snapshot').to.be.greaterThan(after);
    return { before, after, walBefore };
  }

  /**
   * Clones the snapshot, starts PostgreSQL on the clone and checks recovery, pg_amcheck and the ledger.
   * Resolves with the clone's container and whether its redo started at a checkpoint taken after
   * `window.walBefore` (true only when a checkpoint ran between that moment and the snapshot).
   */
  async function verifyClone(source: PostgresContainer, snapshot: string, window: LoadWindow): Promise<{ clone: PostgresContainer; redoFromCheckpointAfterWalBefore: boolean }> {
    const clone = `${source.volume}-clone`;
    await docker('volume', 'create', '-d', 'berth', '-o', `from-snapshot=${source.volume}@${snapshot}`, clone);
    const pg = await startPostgres(host, { name: `${source.name}-clone`, volume: clone });

    const log = await pg.logs();
    expect(log, 'the clone starts from a crashed cluster and recovers from its WAL').to.contain('database system was not properly shut down; automatic recovery in progress');
    expect(log).to.match(/redo done at/);
    const redoStart = /redo starts at ([0-9A-F]+\/[0-9A-F]+)/.exec(log)?.[1];
    expect(redoStart, 'the recovery log names where redo starts').to.be.a('string');
    expect(log).to.not.contain('berth-postgres: initialised');

    const amcheck = await pg.exec(['pg_amcheck', '-U', 'postgres', '--all', '--install-missing', '--heapallindexed'], { timeoutMs: 300_000 });
    expect(amcheck.code, `pg_amcheck found corruption:\n${amcheck.stdout}${amcheck.stderr}`).to.equal(0);
    expect(await pg.psql('SHOW data_checksums')).to.equal('on');

    const totals = await ledger(pg);
    expect(totals.accounts).to.equal(ACCOUNTS);
    expect(totals.accountBalances, 'sum(abalance) = sum(delta)').to.equal(totals.historyDeltas);
    expect(totals.tellerBalances, 'sum(tbalance) = sum(delta)').to.equal(totals.historyDeltas);
    expect(totals.branchBalances, 'sum(bbalance) = sum(delta)').to.equal(totals.historyDeltas);
    expect(totals.history, 'every transaction committed before the snapshot is in the clone').to.be.at.least(window.before);
    expect(totals.history, 'no transaction committed after the snapshot is in the clone').to.be.at.most(window.after);
    return { clone: pg, redoFromCheckpointAfterWalBefore: (await pg.psql(`SELECT '${redoStart}'::pg_lsn >= '${window.walBefore}'::pg_lsn`)) === 't' };
  }

  it('keeps its data on a Berth volume across container stop, start and replacement', async () => {
    const pg = await loadedDatabase('pg-main', 'pgdata');
    const [mount] = JSON.parse((await docker('inspect', '--format', '{{json .Mounts}}', 'pg-main')).stdout) as Array<{ Name: string; Driver: string; Destination: string }>;
    expect(mount).to.include({ Name: 'pgdata', Driver: 'berth', Destination: '/var/lib/postgresql/data' });
    expect((await pg.exec(['stat', '-c', '%U %a', '/var/lib/postgresql/data'])).stdout.trim(), 'the entrypoint hands the fresh volume to postgres').to.equal('postgres 700');
    expect(await pg.psql('SELECT count(*) FROM pgbench_accounts')).to.equal(String(ACCOUNTS));
    await pg.psql("UPDATE pgbench_accounts SET abalance = 42 WHERE aid = 4242");

    await pg.stop();
    await pg.start();
    expect(await pg.logs(), 'a stop is a clean shutdown').to.match(/database system was shut down at/);
    expect(await pg.psql('SELECT count(*) FROM pgbench_accounts')).to.equal(String(ACCOUNTS));
    expect(await pg.psql('SELECT abalance FROM pgbench_accounts WHERE aid = 4242')).to.equal('42');

    await pg.remove();
    const replacement = await startPostgres(host, { name: 'pg-main-2', volume: 'pgdata' });
    expect(await replacement.logs()).to.not.contain('berth-postgres: initialised');
    expect(await replacement.psql('SELECT count(*) FROM pgbench_accounts')).to.equal(String(ACCOUNTS));
    expect(await replacement.psql('SELECT abalance FROM pgbench_accounts WHERE aid = 4242')).to.equal('42');
    await replacement.remove();
  });

  it('a crash-consistent snapshot (quiesce=none) taken under pgbench clones into a database that recovers intact', async () => {
    const pg = await loadedDatabase('pg-crash', 'pgcrash');
    const window = await snapshotUnderLoad(pg, 'under-load');
    const { clone, redoFromCheckpointAfterWalBefore } = await verifyClone(pg, 'under-load', window);
    // The server is less than a minute old (checkpoint_timeout is 5 min) and the load is far below
    // max_wal_size, so no checkpoint ran near the snapshot: recovery replays all of pgbench's WAL.
    expect(redoFromCheckpointAfterWalBefore, 'no checkpoint ran for a quiesce=none snapshot: redo starts before the load').to.equal(false);
    await clone.remove();
    await pg.remove();
  });

  it('quiesce=exec runs a CHECKPOINT inside the container before the snapshot, and the clone recovers intact', async () => {
    const pg = await loadedDatabase('pg-quiesced', 'pgquiesced', ['quiesce=exec', 'quiesce-pre=psql -U postgres -c CHECKPOINT']);
    const checkpoints = async () => (await pg.logs()).split('\n').filter((line) => line.includes('checkpoint starting: immediate force wait')).length;
    const checkpointsBefore = await checkpoints();
    const window = await snapshotUnderLoad(pg, 'checkpointed');
    expect(await checkpoints(), 'quiesce-pre ran CHECKPOINT in the container').to.equal(checkpointsBefore + 1);
    const { clone, redoFromCheckpointAfterWalBefore } = await verifyClone(pg, 'checkpointed', window);
    expect(redoFromCheckpointAfterWalBefore, "the clone's redo starts at the CHECKPOINT quiesce-pre ran just before the snapshot").to.equal(true);
    await clone.remove();
    await pg.remove();
  });

  it('backs up while pgbench writes (full, then incremental); the restored volume runs a consistent database', async () => {
    const backupDir = join(host.dir, 'backups');
    const pg = await loadedDatabase('pg-backup', 'pgbk', ['quiesce=exec', 'quiesce-pre=psql -U postgres -c CHECKPOINT']);
    const bench = pg.pgbench(['-n', '-c', '4', '-j', '2', '-T', '25'], { timeoutMs: 180_000 });
    bench.catch(() => undefined);
    await waitUntil(async () => (await committed(pg)) >= 200, { description: 'pgbench to commit 200 transactions', timeoutMs: 30_000, intervalMs: 250 });
    const full = JSON.parse(await berth('backup', 'create', 'pgbk', '--to', backupDir, '--json')) as { backup: { id: string; kind: string } };
    expect(full.backup.kind).to.equal('full');
    const before = await committed(pg);
    const incremental = JSON.parse(await berth('backup', 'create', 'pgbk', '--to', backupDir, '--json')) as { backup: { id: string; kind: string; parent: string; changedBytes: number; logicalBytes: number } };
    const after = await committed(pg);
    expect(incremental.backup).to.include({ kind: 'incremental', parent: full.backup.id });
    expect(incremental.backup.changedBytes, 'an incremental ships less than the whole database').to.be.below(incremental.backup.logicalBytes);
    const result = await bench;
    expect(result.code, `pgbench failed: ${result.stderr}`).to.equal(0);

    const listed = JSON.parse(await berth('backup', 'ls', backupDir, 'pgbk', '--json')) as Array<{ id: string; kind: string }>;
    expect(listed.map((entry) => [entry.id, entry.kind])).to.deep.equal([[full.backup.id, 'full'], [incremental.backup.id, 'incremental']]);
    const verified = JSON.parse(await berth('backup', 'verify', join(backupDir, 'pgbk', incremental.backup.id), '--json')) as { verified: Array<{ id: string }> };
    expect(verified.verified.map((entry) => entry.id)).to.deep.equal([full.backup.id, incremental.backup.id]);

    const restored = JSON.parse(await berth('backup', 'restore', join(backupDir, 'pgbk', incremental.backup.id), '--to', 'pgbk-restored', '--json')) as { volume: string; chain: string[] };
    expect(restored).to.deep.equal({ volume: 'pgbk-restored', chain: [full.backup.id, incremental.backup.id] });
    const again = await host.berth(['backup', 'restore', join(backupDir, 'pgbk', incremental.backup.id), '--to', 'pgbk-restored']);
    expect(again.stderr, 'a restore never overwrites a volume').to.contain('volume pgbk-restored already exists');

    const copy = await startPostgres(host, { name: 'pg-restored', volume: 'pgbk-restored' });
    const amcheck = await copy.exec(['pg_amcheck', '-U', 'postgres', '--all', '--install-missing', '--heapallindexed'], { timeoutMs: 300_000 });
    expect(amcheck.code, `pg_amcheck found corruption:\n${amcheck.stdout}${amcheck.stderr}`).to.equal(0);
    const totals = await ledger(copy);
    expect(totals.accounts).to.equal(ACCOUNTS);
    expect(totals.accountBalances).to.equal(totals.historyDeltas);
    expect(totals.tellerBalances).to.equal(totals.historyDeltas);
    expect(totals.history, 'what committed before the incremental backup is restored').to.be.at.least(before);
    expect(totals.history, 'nothing committed after it is').to.be.at.most(after);
    await copy.remove();

    // The same through the engine: a volume created from the full backup.
    await docker('volume', 'create', '-d', 'berth', '-o', `from-backup=${join(backupDir, 'pgbk', full.backup.id)}`, 'pgbk-from-full');
    const fromFull = await startPostgres(host, { name: 'pg-from-full', volume: 'pgbk-from-full' });
    expect(await fromFull.psql('SELECT count(*) FROM pgbench_accounts')).to.equal(String(ACCOUNTS));
    await fromFull.remove();
    await pg.remove();
  });

  it('the root docker-compose.yml runs PostgreSQL on a Berth volume that backs up and restores', async () => {
    const project = 'berthroot';
    const compose = (...args: string[]) => host.compose(args, { cwd: repoRoot, projectName: project, env: { BERTH_PG_IMAGE: POSTGRES_IMAGE } });
    const up = await compose('up', '-d');
    expect(up.code, up.stderr).to.equal(0);
    const container = `${project}_db_1`;
    const db = new PostgresContainer(host, container, `${project}_pgdata`, 120_000);
    await db.waitReady();
    const [inspect] = JSON.parse((await docker('volume', 'inspect', `${project}_pgdata`)).stdout) as Array<{ Driver: string; Options: Record<string, string> }>;
    expect(inspect?.Driver).to.equal('berth');
    expect(inspect?.Options).to.include({ 'snapshot-every': '1h', 'snapshot-keep': '24', quiesce: 'exec' });
    await db.psql("CREATE TABLE orders (id serial PRIMARY KEY, item text); INSERT INTO orders (item) SELECT 'item-' || g FROM generate_series(1, 1000) g");
    // The database is on the file's Berth network, and another container on that network reaches it.
    const network = `${project}_backend`;
    expect((await docker('network', 'inspect', '--format', '{{.Driver}} {{.IPAM.Driver}}', network)).stdout.trim()).to.equal('berth berth');
    const dbAddress = (await docker('inspect', '--format', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, container)).stdout.trim();
    expect(dbAddress).to.match(/^10\.90\.0\.\d+$/);
    await docker('run', '--rm', '--network', network, '--entrypoint', 'pg_isready', POSTGRES_IMAGE, '-h', dbAddress, '-t', '20');
    // The schedule's first snapshot is taken at once.
    await waitUntil(async () => (JSON.parse(await berth('snapshot', 'ls', `${project}_pgdata`, '--json')) as Array<{ origin: string }>).some((snapshot) => snapshot.origin === 'scheduled'), { description: 'the scheduled snapshot', timeoutMs: 30_000, intervalMs: 1000 });
    const backupDir = join(host.dir, 'compose-backups');
    const made = JSON.parse(await berth('backup', 'create', `${project}_pgdata`, '--to', backupDir, '--json')) as { backup: { id: string } };
    await berth('backup', 'restore', join(backupDir, `${project}_pgdata`, made.backup.id), '--to', 'compose-restored');
    const restored = await startPostgres(host, { name: 'compose-restored-db', volume: 'compose-restored' });
    expect(await restored.psql('SELECT count(*) FROM orders')).to.equal('1000');
    await restored.remove();
    const down = await compose('down');
    expect(down.code, down.stderr).to.equal(0);
  });
});
