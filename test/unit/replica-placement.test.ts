import { expect } from 'chai';
import { placeReplicas, replaceGoneReplicas } from '../../volume-driver/replication/replica-placement.js';
import type { ClusterVolumeRecord } from '../../volume-driver/replication/replication-records.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';

function volume(name: string, owner: string, replicaHosts: string[], options: Record<string, string> = {}): ClusterVolumeRecord {
  return { name, owner, epoch: 1, state: 'ready', backend: 'dir', options, replicaHosts, mounted: false, createdAt: '2026-01-01T00:00:00.000Z' };
}

describe('replica placement', () => {
  it('places new replicas on the least loaded live hosts other than the owner', () => {
    const existing = [volume('a', 'h1', ['h2']), volume('b', 'h1', ['h2', 'h3'])];
    expect(placeReplicas({ owner: 'h1', copies: 3, live: new Set(['h1', 'h2', 'h3', 'h4']), existing })).to.deep.equal(['h4', 'h3']);
  });

  it('refuses named hosts that are gone or the owner, naming them', async () => {
    await expectBerthError(Promise.resolve().then(() => placeReplicas({ owner: 'h1', copies: 2, named: ['h9'], live: new Set(['h1', 'h2']), existing: [] })), 'ERR_INVALID_OPTION', /names h9, which is not a live host/);
  });

  it('replaces a gone replica host by the least loaded live host without a copy, keeping the others in place', () => {
    const record = volume('db', 'h1', ['h2', 'h3']);
    const existing = [record, volume('x', 'h5', ['h4'])];
    const change = replaceGoneReplicas({ record, gone: new Set(['h2']), live: new Set(['h1', 'h3', 'h4', 'h5']), existing });
    expect(change).to.deep.equal({ replicaHosts: ['h5', 'h3'], replaced: [{ gone: 'h2', by: 'h5' }] });
  });

  it('keeps a gone host listed when no live host can take its place', () => {
    const record = volume('db', 'h1', ['h2', 'h3']);
    expect(replaceGoneReplicas({ record, gone: new Set(['h2']), live: new Set(['h1', 'h3']), existing: [record] })).to.equal(undefined);
  });

  it('never replaces hosts the user named, nor a host that is live again', () => {
    const named = volume('db', 'h1', ['h2'], { 'replica-hosts': 'h2' });
    expect(replaceGoneReplicas({ record: named, gone: new Set(['h2']), live: new Set(['h1', 'h3']), existing: [named] })).to.equal(undefined);
    const back = volume('db', 'h1', ['h2']);
    expect(replaceGoneReplicas({ record: back, gone: new Set(['h2']), live: new Set(['h1', 'h2', 'h3']), existing: [back] })).to.equal(undefined);
  });
});
