import { expect } from 'chai';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SnapshotScheduler } from '../../volume-driver/snapshots/snapshot-scheduler.js';
import { createLogger } from '../../plugins/logging/logger.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { startVolumeStack, type VolumeStack } from '../helpers/volume-stack.js';

describe('snapshot service (dir backend)', () => {
  let stack: VolumeStack;
  const data = (volume: string, file = 'f') => join(stack.root, 'volumes', volume, file);

  beforeEach(async () => {
    stack = await startVolumeStack();
    await stack.service.create('db', {});
    await writeFile(data('db'), 'v1');
  });
  afterEach(async () => stack.dispose());

  it('creates, lists and removes snapshots; a snapshot keeps its point-in-time content', async () => {
    const first = await stack.snapshots.create('db', 'first');
    expect(first).to.include({ volume: 'db', name: 'first', origin: 'manual' });
    await writeFile(data('db'), 'v2');
    const generated = await stack.snapshots.create('db');
    expect(generated.name).to.match(/^snap-\d{8}T\d{9}Z$/);
    expect((await stack.snapshots.list('db')).map((snapshot) => snapshot.name)).to.deep.equal(['first', generated.name]);
    expect(await readFile(join(first.path, 'f'), 'utf8')).to.equal('v1');
    await stack.snapshots.remove('db', 'first');
    await stack.snapshots.remove('db', 'first'); // idempotent
    expect((await stack.snapshots.list('db')).map((snapshot) => snapshot.name)).to.deep.equal([generated.name]);
  });

  it('refuses a duplicate name, a bad name and an unknown volume', async () => {
    await stack.snapshots.create('db', 'same');
    expect((await expectBerthError(stack.snapshots.create('db', 'same'), 'ERR_SNAPSHOT_EXISTS')).message).to.equal('snapshot db@same already exists');
    await expectBerthError(stack.snapshots.create('db', '../x'), 'ERR_INVALID_NAME');
    await expectBerthError(stack.snapshots.create('ghost', 's'), 'ERR_VOLUME_NOT_FOUND');
  });

  it('restores in place, keeping the replaced content as a pre-restore snapshot', async () => {
    await stack.snapshots.create('db', 'good');
    await writeFile(data('db'), 'corrupted');
    await writeFile(data('db', 'extra'), 'added later');
    const result = await stack.snapshots.restore('db', 'good');
    expect(await readFile(data('db'), 'utf8')).to.equal('v1');
    expect(await readdir(join(stack.root, 'volumes', 'db'))).to.deep.equal(['f']);
    expect(result.safetySnapshot).to.match(/^pre-restore-/);
    const safety = await stack.snapshots.get('db', result.safetySnapshot);
    expect(safety.origin).to.equal('pre-restore');
    expect(await readFile(join(safety.path, 'f'), 'utf8')).to.equal('corrupted');
  });

  it('refuses to restore a mounted volume unless forced; forced, it stops and restarts the users', async () => {
    await stack.snapshots.create('db', 'good');
    await stack.service.mount('db', 'm1');
    await writeFile(data('db'), 'changed');
    stack.engine.containers = [{ id: 'c1', name: 'postgres', state: 'running', mounts: [{ name: 'db', driver: 'berth' }] }];
    const refused = await expectBerthError(stack.snapshots.restore('db', 'good'), 'ERR_VOLUME_IN_USE');
    expect(refused.message).to.contain('force the restore');
    expect(await readFile(data('db'), 'utf8')).to.equal('changed');

    // Stopping the container makes the engine call Unmount, as the real engine does.
    stack.engine.onStop = async () => stack.service.unmount('db', 'm1');
    const result = await stack.snapshots.restore('db', 'good', { force: true });
    expect(stack.engine.stopped).to.deep.equal(['c1']);
    expect(stack.engine.started).to.deep.equal(['c1']);
    expect(result.restartedContainers).to.deep.equal(['c1']);
    expect(await readFile(data('db'), 'utf8')).to.equal('v1');
  });

  it('clones a snapshot into a new independent volume with from-snapshot', async () => {
    await stack.snapshots.create('db', 'base');
    await stack.service.create('copy', { 'from-snapshot': 'db@base' });
    expect(await readFile(data('copy'), 'utf8')).to.equal('v1');
    await writeFile(data('copy'), 'copy changed');
    expect(await readFile(data('db'), 'utf8')).to.equal('v1');
    const missing = await expectBerthError(stack.service.create('copy2', { 'from-snapshot': 'db@nope' }), 'ERR_SNAPSHOT_NOT_FOUND');
    expect(missing.message).to.equal('option from-snapshot names snapshot db@nope, which does not exist');
    expect((await stack.service.list()).map((volume) => volume.name)).to.deep.equal(['copy', 'db']);
  });

  it('runs schedules: snapshots when due, prunes only scheduled ones beyond snapshot-keep', async () => {
    await stack.service.create('sched', { 'snapshot-every': '1h', 'snapshot-keep': '2' });
    await stack.snapshots.create('sched', 'manual-one');
    const scheduler = new SnapshotScheduler(stack.repository, stack.snapshots, createLogger('silent'));
    const t0 = new Date();
    expect((await scheduler.runOnce(t0)).created).to.have.length(1);
    expect((await scheduler.runOnce(new Date(t0.getTime() + 60_000))).created, 'not due yet').to.have.length(0);
    // Each run a scheduled snapshot is due when the previous one is older than an hour.
    for (let hour = 1; hour <= 3; hour++) {
      await new Promise((resolve) => setTimeout(resolve, 5)); // distinct millisecond names
      await scheduler.runOnce(new Date(Date.now() + hour * 3_600_000));
    }
    const left = await stack.snapshots.list('sched');
    expect(left.filter((snapshot) => snapshot.origin === 'scheduled')).to.have.length(2);
    expect(left.map((snapshot) => snapshot.name)).to.include('manual-one');
    expect(await stack.snapshots.list('db')).to.deep.equal([], 'volumes without a schedule are untouched');
  });

  describe('quiesce', () => {
    const running = (name: string) => ({ id: name, name, state: 'running', mounts: [{ name: 'q', driver: 'berth' }] });

    it('pause freezes the running users for the snapshot only, and unpauses even when it fails', async () => {
      await stack.service.create('q', { quiesce: 'pause' });
      stack.engine.containers = [running('c1'), running('c2'), { ...running('c3'), state: 'exited' }];
      await stack.snapshots.create('q', 'ok');
      expect(stack.engine.events).to.deep.equal(['pause c1', 'pause c2', 'unpause c1', 'unpause c2']);
      stack.engine.events.length = 0;
      const { rm } = await import('node:fs/promises');
      await rm(join(stack.root, 'volumes', 'q'), { recursive: true });
      await expectBerthError(stack.snapshots.create('q', 'fails'), 'ERR_VOLUME_NOT_FOUND');
      expect(stack.engine.events).to.deep.equal(['pause c1', 'pause c2', 'unpause c1', 'unpause c2']);
    });

    it('exec runs the pre command before and the post command after, in each running user', async () => {
      await stack.service.create('q', { quiesce: 'exec', 'quiesce-pre': 'psql -c CHECKPOINT', 'quiesce-post': 'echo done' });
      stack.engine.containers = [running('pg')];
      await stack.snapshots.create('q', 'consistent');
      expect(stack.engine.events).to.deep.equal(['exec pg sh -c psql -c CHECKPOINT', 'exec pg sh -c echo done']);
    });

    it('a failing pre command aborts the snapshot, naming the container and its output', async () => {
      await stack.service.create('q', { quiesce: 'exec', 'quiesce-pre': 'false' });
      stack.engine.containers = [running('pg')];
      stack.engine.execResult = { exitCode: 3, output: 'database is shutting down\n' };
      const error = await expectBerthError(stack.snapshots.create('q', 'never'), 'ERR_QUIESCE_FAILED');
      expect(error.message).to.equal('quiesce-pre failed in container pg with exit code 3: database is shutting down; no snapshot taken');
      expect(await stack.snapshots.list('q')).to.deep.equal([]);
    });

    it('validates the quiesce options together', async () => {
      expect((await expectBerthError(stack.service.create('bad', { quiesce: 'exec' }), 'ERR_INVALID_OPTION')).message).to.contain('needs quiesce-pre');
      expect((await expectBerthError(stack.service.create('bad', { 'quiesce-pre': 'sync' }), 'ERR_INVALID_OPTION')).message).to.equal('options quiesce-pre and quiesce-post need quiesce=exec');
      expect((await expectBerthError(stack.service.create('bad', { quiesce: 'freeze' }), 'ERR_INVALID_OPTION')).message).to.equal('option quiesce="freeze" must be none, pause or exec');
    });
  });
});
