import { expect } from 'chai';
import { readdir, stat, writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { callPlugin, goJson } from '../helpers/plugin-client.js';
import { startVolumeStack, type VolumeStack } from '../helpers/volume-stack.js';

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

describe('volume driver over the plugin socket', () => {
  let stack: VolumeStack;
  const call = (method: string, body?: unknown) => callPlugin(stack.socket, `VolumeDriver.${method}`, body === undefined ? undefined : goJson(body));

  beforeEach(async () => (stack = await startVolumeStack()));
  afterEach(async () => stack.dispose());

  it('creates with "Opts": null, then Get echoes the name with RFC 3339 CreatedAt and a Status', async () => {
    expect((await call('Create', { Name: 'db-data', Opts: null })).body).to.deep.equal({});
    const got = await call('Get', { Name: 'db-data' });
    expect(got.status).to.equal(200);
    const volume = got.body.Volume as Record<string, unknown>;
    expect(volume.Name).to.equal('db-data');
    expect(volume.Mountpoint).to.equal(join(stack.root, 'volumes', 'db-data'));
    expect(volume.CreatedAt).to.match(RFC3339);
    expect(volume.Status).to.include({ backend: 'dir', mountCount: 0 });
    expect((await stat(String(volume.Mountpoint))).isDirectory()).to.equal(true);
  });

  it('lists, paths and reports local scope', async () => {
    await call('Create', { Name: 'a', Opts: {} });
    await call('Create', { Name: 'b' });
    expect((await call('List', {})).body).to.deep.equal({
      Volumes: [
        { Name: 'a', Mountpoint: join(stack.root, 'volumes', 'a') },
        { Name: 'b', Mountpoint: join(stack.root, 'volumes', 'b') },
      ],
    });
    expect((await call('Path', { Name: 'b' })).body).to.deep.equal({ Mountpoint: join(stack.root, 'volumes', 'b') });
    expect((await call('Capabilities', {})).body).to.deep.equal({ Capabilities: { Scope: 'local' } });
  });

  it('answers Get for an unknown volume with an error (the engine treats it as "no such volume")', async () => {
    const response = await call('Get', { Name: 'missing' });
    expect(response.status).to.equal(500);
    expect(response.body.Err).to.equal('volume missing does not exist');
  });

  it('counts mounts per call: the same ID twice (docker cp) needs two Unmounts', async () => {
    await call('Create', { Name: 'shared' });
    const id = 'f'.repeat(64);
    expect((await call('Mount', { Name: 'shared', ID: id })).body).to.deep.equal({ Mountpoint: join(stack.root, 'volumes', 'shared') });
    await call('Mount', { Name: 'shared', ID: id });
    expect(((await call('Get', { Name: 'shared' })).body.Volume as { Status: { mountCount: number } }).Status.mountCount).to.equal(2);
    await call('Unmount', { Name: 'shared', ID: id });
    stack.engine.containers = [{ id: 'c1', name: 'app', state: 'running', mounts: [{ name: 'shared', driver: 'berth' }] }];
    const refused = await call('Remove', { Name: 'shared' });
    expect(refused.status).to.equal(500);
    expect(refused.body.Err).to.equal('volume shared is in use (1 mount)');
    await call('Unmount', { Name: 'shared', ID: id });
    expect((await call('Remove', { Name: 'shared' })).status).to.equal(200);
  });

  it('persists mount counts across a restart of the agent', async () => {
    await call('Create', { Name: 'kept' });
    await call('Mount', { Name: 'kept', ID: 'abc' });
    await stack.stop();
    const root = stack.root;
    const restarted = await startVolumeStack(root);
    try {
      restarted.engine.reachable = false; // engine silent: the recorded mount must be kept
      const response = await callPlugin(restarted.socket, 'VolumeDriver.Get', goJson({ Name: 'kept' }));
      expect((response.body.Volume as { Status: { mountCount: number } }).Status.mountCount).to.equal(1);
      expect((await callPlugin(restarted.socket, 'VolumeDriver.Remove', goJson({ Name: 'kept' }))).status).to.equal(500);
    } finally {
      await restarted.stop();
    }
  });

  it('removes idempotently: removing a volume that is gone succeeds', async () => {
    await call('Create', { Name: 'gone' });
    expect((await call('Remove', { Name: 'gone' })).status).to.equal(200);
    expect((await call('Remove', { Name: 'gone' })).status).to.equal(200);
    expect((await call('Remove', { Name: 'never-existed' })).status).to.equal(200);
  });

  it('rejects a retried call that arrives with an empty body, naming the problem', async () => {
    for (const method of ['Create', 'Mount', 'Unmount', 'Remove', 'Get', 'Path']) {
      const response = await callPlugin(stack.socket, `VolumeDriver.${method}`);
      expect(response.status, method).to.equal(500);
      expect(response.body.Err, method).to.equal('request has no Name (empty body)');
    }
    expect((await call('List', {})).body).to.deep.equal({ Volumes: [] });
  });

  it('refuses invalid names before touching the filesystem or the store', async () => {
    const bad = ['..', '.', '../escape', 'a/b', '/abs', 'nul\u0000byte', 'line\nbreak', 'tab\tname', '', ' lead', '-dash', 'x'.repeat(256), 'é'.repeat(128)];
    for (const name of bad) {
      const response = await call('Create', { Name: name });
      expect(response.status, JSON.stringify(name)).to.equal(500);
      expect(String(response.body.Err), JSON.stringify(name)).to.match(/volume name|request has no Name/);
    }
    expect(await readdir(join(stack.root, 'volumes'))).to.deep.equal([]);
    expect(await readdir(join(stack.root, 'staging'))).to.deep.equal([]);
    expect((await stack.store.list('volumes/')).entries).to.have.length(0);
    expect((await call('Create', { Name: 'x'.repeat(255) })).status).to.equal(200);
  });

  it('refuses unknown options with the list of known keys, leaving nothing behind', async () => {
    const response = await call('Create', { Name: 'opts', Opts: { sise: '1G', colour: 'blue' } });
    expect(response.status).to.equal(500);
    expect(response.body.Err).to.equal('unknown options colour, sise; known options: backup-key, failover, from-backup, from-snapshot, gid, mode, quiesce, quiesce-post, quiesce-pre, replica-hosts, replicas, replicate-every, size, snapshot-every, snapshot-keep, uid');
    const badValue = await call('Create', { Name: 'opts', Opts: { mode: '999' } });
    expect(badValue.body.Err).to.equal('option mode="999" must be octal permissions such as 0755');
    const unsupported = await call('Create', { Name: 'opts', Opts: { size: '1G' } });
    expect(unsupported.body.Err).to.equal('option size needs a backend that enforces size limits (btrfs); this agent uses dir');
    const orphanKeep = await call('Create', { Name: 'opts', Opts: { 'snapshot-keep': '3' } });
    expect(orphanKeep.body.Err).to.equal('option snapshot-keep needs snapshot-every');
    const badSource = await call('Create', { Name: 'opts', Opts: { 'from-snapshot': 'nosuch@snap' } });
    expect(badSource.body.Err).to.equal('option from-snapshot names volume nosuch, which does not exist');
    const notString = await call('Create', { Name: 'opts', Opts: { uid: 5 } });
    expect(notString.body.Err).to.equal('option uid must be a string, got 5');
    expect(await readdir(join(stack.root, 'volumes'))).to.deep.equal([]);
    expect((await stack.store.list('volumes/')).entries).to.have.length(0);
  });

  it('applies uid, gid and mode to the volume root', async () => {
    await call('Create', { Name: 'owned', Opts: { uid: '999', gid: '998', mode: '0750' } });
    const info = await stat(join(stack.root, 'volumes', 'owned'));
    expect(info.uid).to.equal(999);
    expect(info.gid).to.equal(998);
    expect(info.mode & 0o7777).to.equal(0o750);
  });

  it('never deletes the data of another volume whose name shares a prefix', async () => {
    for (const name of ['app', 'app.old', 'app-2', 'apps']) {
      await call('Create', { Name: name });
      await writeFile(join(stack.root, 'volumes', name, 'data.txt'), name);
    }
    await call('Remove', { Name: 'app' });
    for (const name of ['app.old', 'app-2', 'apps']) expect(await readFile(join(stack.root, 'volumes', name, 'data.txt'), 'utf8')).to.equal(name);
    expect(await readdir(join(stack.root, 'volumes'))).to.have.members(['app.old', 'app-2', 'apps']);
  });

  it('is idempotent for a repeated Create with the same options and refuses different ones', async () => {
    await call('Create', { Name: 'same', Opts: { mode: '0700' } });
    expect((await call('Create', { Name: 'same', Opts: { mode: '0700' } })).status).to.equal(200);
    const different = await call('Create', { Name: 'same', Opts: { mode: '0755' } });
    expect(different.body.Err).to.equal('volume same already exists with options {"mode":"0700"}');
  });

  it('refuses to adopt a data directory that has no record', async () => {
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(stack.root, 'volumes', 'stray'));
    await writeFile(join(stack.root, 'volumes', 'stray', 'precious'), 'keep me');
    const response = await call('Create', { Name: 'stray' });
    expect(String(response.body.Err)).to.contain('already exists without a volume record');
    expect(await readFile(join(stack.root, 'volumes', 'stray', 'precious'), 'utf8')).to.equal('keep me');
    expect((await stack.store.list('volumes/')).entries).to.have.length(0);
  });

  it('tolerates an Unmount the driver does not know (already released by reconciliation)', async () => {
    await call('Create', { Name: 'v' });
    expect((await call('Unmount', { Name: 'v', ID: 'unknown' })).status).to.equal(200);
  });
});
