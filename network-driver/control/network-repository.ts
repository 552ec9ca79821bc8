import { isBerthError } from '../../plugins/errors/berth-error.js';
import { updateEntry, type Lease, type StateStore, type StoredEntry } from '../../plugins/state/state-store.js';
import {
  parseBlockRecord,
  parseEndpointRecord,
  parseLocalNetworkRecord,
  parseMemberRecord,
  parseNetworkIndex,
  type BlockRecord,
  type EndpointRecord,
  type HostRecord,
  type LocalNetworkRecord,
  type MemberRecord,
  type NetworkIndex,
} from './network-records.js';

/**
 * Key layout of the network control plane; services never touch raw keys.
 *   net/networks                      every network (one record: see NetworkIndex)
 *   net/endpoints/<network>/<ip>      one per address in use
 *   net/blocks/<network>/<start>      address blocks owned by hosts
 *   cluster/hosts/<host>              live hosts, under each host's lease
 *   cluster/members/<host>            every host that joined (for reclaiming after it dies)
 *   hosts/<host>/networks/<engineId>  this host's engine network IDs
 */
export const NETWORKS_KEY = 'net/networks';
export const NETWORK_PREFIX = 'net/';
export const ENDPOINTS_PREFIX = 'net/endpoints/';
export const BLOCKS_PREFIX = 'net/blocks/';
export const HOSTS_PREFIX = 'cluster/hosts/';
export const MEMBERS_PREFIX = 'cluster/members/';
export const CLUSTER_PREFIX = 'cluster/';

export const EMPTY_INDEX: NetworkIndex = Object.freeze({ networks: Object.freeze({}) });

export function endpointKey(network: string, ip: string): string {
  return `${ENDPOINTS_PREFIX}${network}/${ip}`;
}

export function blockKey(network: string, start: string): string {
  return `${BLOCKS_PREFIX}${network}/${start}`;
}

export function hostKey(name: string): string {
  return HOSTS_PREFIX + name;
}

export function memberKey(name: string): string {
  return MEMBERS_PREFIX + name;
}

export class NetworkRepository {
  readonly localPrefix: string;

  constructor(
    readonly store: StateStore,
    readonly hostName: string,
  ) {
    this.localPrefix = `hosts/${hostName}/networks/`;
  }

  async index(): Promise<NetworkIndex> {
    const entry = await this.store.get(NETWORKS_KEY);
    return entry ? parseNetworkIndex(entry.key, entry.value) : EMPTY_INDEX;
  }

  /** Read-modify-write of the network index with compare-and-swap; `change` must be pure (it may run again). */
  updateIndex<T>(change: (index: NetworkIndex) => { index?: NetworkIndex; result: T }): Promise<T> {
    return updateEntry(this.store, NETWORKS_KEY, (current) => {
      const outcome = change(current ? parseNetworkIndex(current.key, current.value) : EMPTY_INDEX);
      return outcome.index ? { value: JSON.stringify(outcome.index), result: outcome.result } : { result: outcome.result };
    });
  }

  async endpoint(network: string, ip: string): Promise<{ record: EndpointRecord; revision: number } | undefined> {
    const entry = await this.store.get(endpointKey(network, ip));
    return entry ? { record: parseEndpointRecord(entry.key, entry.value), revision: entry.modRevision } : undefined;
  }

  /** Writes an endpoint record if it is still at `expectRevision` (0: must not exist); the new revision, or undefined when another write won. */
  async tryPutEndpoint(record: EndpointRecord, expectRevision: number): Promise<number | undefined> {
    return conditional(this.store.put(endpointKey(record.network, record.ip), JSON.stringify(record), { expectRevision }));
  }

  async tryDeleteEndpoint(network: string, ip: string, expectRevision: number): Promise<boolean> {
    return (await conditional(this.store.delete(endpointKey(network, ip), { expectRevision }))) !== undefined;
  }

  async endpoints(network?: string): Promise<EndpointRecord[]> {
    const { entries } = await this.store.list(network === undefined ? ENDPOINTS_PREFIX : `${ENDPOINTS_PREFIX}${network}/`);
    return entries.map((entry) => parseEndpointRecord(entry.key, entry.value));
  }

  async blocks(network: string): Promise<BlockRecord[]> {
    const { entries } = await this.store.list(`${BLOCKS_PREFIX}${network}/`);
    return entries.map((entry) => parseBlockRecord(entry.key, entry.value));
  }

  /** Claims a block if nobody holds it; undefined when another host was first. */
  async tryClaimBlock(block: BlockRecord): Promise<number | undefined> {
    return conditional(this.store.put(blockKey(block.network, block.start), JSON.stringify(block), { expectRevision: 0 }));
  }

  async deleteBlock(network: string, start: string): Promise<void> {
    await this.store.delete(blockKey(network, start));
  }

  async registerHost(record: HostRecord, lease: Lease): Promise<void> {
    await this.store.put(hostKey(record.name), JSON.stringify(record), { lease: lease.id });
  }

  async putMember(record: MemberRecord): Promise<void> {
    await this.store.put(memberKey(record.name), JSON.stringify(record));
  }

  async members(): Promise<MemberRecord[]> {
    const { entries } = await this.store.list(MEMBERS_PREFIX);
    return entries.map((entry) => parseMemberRecord(entry.key, entry.value));
  }

  async deleteMember(name: string): Promise<void> {
    await this.store.delete(memberKey(name));
  }

  async localNetworks(): Promise<LocalNetworkRecord[]> {
    const { entries } = await this.store.list(this.localPrefix);
    return entries.map((entry: StoredEntry) => parseLocalNetworkRecord(entry.key, entry.value));
  }

  /** Drops another host's engine network IDs (a host gone for good: a reinstalled machine must start clean). */
  async deleteLocalNetworksOf(host: string): Promise<void> {
    const { entries } = await this.store.list(`hosts/${host}/networks/`);
    for (const entry of entries) await this.store.delete(entry.key);
  }

  async putLocalNetwork(record: LocalNetworkRecord): Promise<number> {
    return this.store.put(this.localPrefix + record.engineNetworkId, JSON.stringify(record));
  }

  async deleteLocalNetwork(engineNetworkId: string): Promise<void> {
    await this.store.delete(this.localPrefix + engineNetworkId);
  }
}

async function conditional<T>(write: Promise<T>): Promise<T | undefined> {
  try {
    return await write;
  } catch (error) {
    if (isBerthError(error, 'ERR_STATE_CONFLICT')) return undefined;
    throw error;
  }
}
