import { expect } from 'chai';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { startVolumeStack, type VolumeStack } from '../helpers/volume-stack.js';

describe('mount reconciliation against the engine', () => {
  let stack: VolumeStack;
  beforeEach(async () => {
    stack = await startVolumeStack();
    await stack.service.create('pg', {});
    await stack.service.mount('pg', 'mount-1');
  });
  afterEach(async () => stack.dispose());

  it('releases mounts that no container holds, so Remove succeeds after an agent crash', async () => {
    stack.engine.containers = [{ id: 'c1', name: 'old', state: 'exited', mounts: [{ name: 'pg', driver: 'berth' }] }];
    await stack.service.remove('pg');
    expect(await stack.service.list()).to.deep.equal([]);
  });

  it('keeps mounts held by a running or paused container and refuses Remove', async () => {
    for (const state of ['running', 'paused', 'restarting', 'created']) {
      stack.engine.containers = [{ id: 'c1', name: 'db', state, mounts: [{ name: 'pg', driver: 'berth' }] }];
      const error = await expectBerthError(stack.service.remove('pg'), 'ERR_VOLUME_IN_USE');
      expect(error.message, state).to.equal('volume pg is in use (1 mount)');
    }
  });

  it('ignores containers that use a same-named volume of another driver', async () => {
    stack.engine.containers = [{ id: 'c1', name: 'other', state: 'running', mounts: [{ name: 'pg', driver: 'local' }] }];
    const report = await stack.service['deps'].reconciler!.reconcile();
    expect(report.released).to.deep.equal(['pg']);
  });

  it('recognises the managed-plugin driver name (berth:latest)', async () => {
    stack.engine.containers = [{ id: 'c1', name: 'db', state: 'running', mounts: [{ name: 'pg', driver: 'berth:latest' }] }];
    const report = await stack.service['deps'].reconciler!.reconcile();
    expect(report.inUse).to.deep.equal(['pg']);
  });

  it('never erases a Mount that lands while the engine is being asked', async () => {
    stack.engine.containers = [];
    stack.engine.onList = async () => {
      await stack.service.mount('pg', 'mount-2');
    };
    const report = await stack.service['deps'].reconciler!.reconcile();
    expect(report.released).to.deep.equal([]);
    expect((await stack.service.get('pg')).mounts).to.deep.equal({ 'mount-1': 1, 'mount-2': 1 });
  });

  it('keeps recorded mounts when the engine cannot be asked', async () => {
    stack.engine.reachable = false;
    const error = await expectBerthError(stack.service.remove('pg'), 'ERR_VOLUME_IN_USE');
    expect(error.message).to.equal('volume pg is in use (1 mount)');
    expect((await stack.service.get('pg')).mountCount).to.equal(1);
  });
});
