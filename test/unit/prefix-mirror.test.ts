import { expect } from 'chai';
import { join } from 'node:path';
import { createLogger } from '../../plugins/logging/logger.js';
import { FileStateStore } from '../../plugins/state/file-state-store.js';
import { PrefixMirror } from '../../plugins/state/prefix-mirror.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitUntil } from '../helpers/wait-until.js';

describe('PrefixMirror', () => {
  let dir: { path: string; dispose(): Promise<void> };
  let store: FileStateStore;
  let mirror: PrefixMirror;
  const changes: (string | undefined)[] = [];

  const keys = (prefix?: string): string[] => mirror.list(prefix).map((entry) => entry.key).sort();

  beforeEach(async () => {
    dir = await makeTempDir('berth-mirror-');
    store = await FileStateStore.open(join(dir.path, 'state.db'));
    for (const key of ['net/networks', 'net/endpoints/a/10.0.0.2', 'net/endpoints/a/10.0.0.3', 'net/endpoints/ab/10.0.0.2', 'net/blocks/a/10.0.0.0', 'other/x']) {
      await store.put(key, '{}');
    }
    changes.length = 0;
    mirror = new PrefixMirror(store, 'net/', (key) => changes.push(key), createLogger('silent'));
    await mirror.start();
  });

  afterEach(async () => {
    await mirror.stop();
    await store.close();
    await dir.dispose();
  });

  it('lists by any prefix, whole directories or parts of them, and nothing outside its own prefix', () => {
    expect(keys()).to.deep.equal(['net/blocks/a/10.0.0.0', 'net/endpoints/a/10.0.0.2', 'net/endpoints/a/10.0.0.3', 'net/endpoints/ab/10.0.0.2', 'net/networks']);
    expect(keys('net/endpoints/a/')).to.deep.equal(['net/endpoints/a/10.0.0.2', 'net/endpoints/a/10.0.0.3']);
    expect(keys('net/endpoints/a')).to.deep.equal(['net/endpoints/a/10.0.0.2', 'net/endpoints/a/10.0.0.3', 'net/endpoints/ab/10.0.0.2']);
    expect(keys('net/endpoints/')).to.have.length(3);
    expect(keys('net/endpoints/a/10.0.0.3')).to.deep.equal(['net/endpoints/a/10.0.0.3']);
    expect(keys('net/net')).to.deep.equal(['net/networks']);
    expect(keys('net/blocks/b/')).to.deep.equal([]);
  });

  it('tells listeners the key of each change, and none for a relist', async () => {
    expect(changes).to.deep.equal([undefined]); // the first listing
    mirror.notePut('net/endpoints/b/10.0.0.9', '{}', 1000);
    expect(keys('net/endpoints/b/')).to.deep.equal(['net/endpoints/b/10.0.0.9']);
    mirror.noteDelete('net/endpoints/a/10.0.0.2');
    expect(keys('net/endpoints/a/')).to.deep.equal(['net/endpoints/a/10.0.0.3']);
    await store.put('net/endpoints/c/10.0.0.5', '{}');
    await store.delete('net/endpoints/a/10.0.0.3');
    await waitUntil(() => changes.length === 5, { description: 'both watch events', timeoutMs: 5000, intervalMs: 10 });
    expect(changes).to.deep.equal([undefined, 'net/endpoints/b/10.0.0.9', 'net/endpoints/a/10.0.0.2', 'net/endpoints/c/10.0.0.5', 'net/endpoints/a/10.0.0.3']);
    expect(keys('net/endpoints/')).to.deep.equal(['net/endpoints/ab/10.0.0.2', 'net/endpoints/b/10.0.0.9', 'net/endpoints/c/10.0.0.5']);
  });
});
