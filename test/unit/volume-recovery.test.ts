import { expect } from 'chai';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/temp-dir.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { startVolumeStack } from '../helpers/volume-stack.js';
import type { VolumeRecord } from '../../volume-driver/volume-record.js';

function record(name: string, state: VolumeRecord['state']): VolumeRecord {
  return { name, state, backend: 'dir', options: {}, createdAt: new Date().toISOString(), mounts: {} };
}

describe('volume crash recovery', () => {
  it('rolls back a create and finishes a remove that a crash interrupted; leaves ready volumes alone', async () => {
    const temp = await makeTempDir('berth-rec-');
    try {
      // State as a kill -9 can leave it: intents recorded, data half done.
      const first = await startVolumeStack(temp.path);
      await first.service.create('ready-one', {});
      await writeFile(join(temp.path, 'volumes', 'ready-one', 'keep'), 'data');
      await first.repository.put(record('half-created', 'creating'), 0);
      await mkdir(join(temp.path, 'volumes', 'half-created'));
      await first.repository.put(record('never-renamed', 'creating'), 0);
      await mkdir(join(temp.path, 'staging', 'never-renamed.0badc0ffee00'));
      await first.repository.put(record('half-removed', 'removing'), 0);
      await mkdir(join(temp.path, 'trash', 'half-removed.0badc0ffee01'));
      await first.stop();

      const second = await startVolumeStack(temp.path);
      try {
        expect((await second.service.list()).map((volume) => volume.name)).to.deep.equal(['ready-one']);
        expect((await second.store.list('volumes/')).entries.map((entry) => entry.key)).to.deep.equal(['volumes/ready-one']);
        expect(await readdir(join(temp.path, 'volumes'))).to.deep.equal(['ready-one']);
        expect(await readdir(join(temp.path, 'staging'))).to.deep.equal([]);
        expect(await readdir(join(temp.path, 'trash'))).to.deep.equal([]);
        expect(await readdir(join(temp.path, 'volumes', 'ready-one'))).to.deep.equal(['keep']);
        // The name of a rolled-back create is free again.
        await second.service.create('half-created', {});
      } finally {
        await second.stop();
      }
    } finally {
      await temp.dispose();
    }
  });

  it('hides a volume from Get and List while it is only being created', async () => {
    const stack = await startVolumeStack();
    try {
      await stack.repository.put(record('in-flight', 'creating'), 0);
      expect(await stack.service.list()).to.deep.equal([]);
      const error = await expectBerthError(stack.service.get('in-flight'), 'ERR_VOLUME_NOT_FOUND');
      expect(error.message).to.equal('volume in-flight does not exist');
    } finally {
      await stack.dispose();
    }
  });
});
