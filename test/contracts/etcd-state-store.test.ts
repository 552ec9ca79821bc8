import { randomUUID } from 'node:crypto';
import { EtcdStateStore } from '../../plugins/state/etcd-state-store.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd-server.js';
import { describeStateStoreContract } from './state-store-contract.js';

// One etcd for this file; each test gets its own key prefix, and `reopen` is a new client on the same etcd.
describe('EtcdStateStore against a real etcd', function () {
  this.timeout(60_000);
  let etcd: EtcdServer | undefined;

  before(async () => {
    etcd = await startEtcd();
  });

  after(async () => {
    await etcd?.stop();
  });

  describeStateStoreContract('EtcdStateStore', async () => {
    if (etcd === undefined) throw new Error('etcd did not start');
    const endpoints = [etcd.endpoint];
    const prefix = `berth-contract/${randomUUID()}/`;
    const opened: EtcdStateStore[] = [];
    const open = async (): Promise<EtcdStateStore> => {
      // Handler failures are part of the contract tests; keep them out of the output.
      const store = await EtcdStateStore.open(endpoints, { prefix, onWatchError: () => undefined });
      opened.push(store);
      return store;
    };
    return {
      store: await open(),
      reopen: open,
      dispose: async () => {
        for (const store of opened) await store.close();
      },
    };
  });
});
