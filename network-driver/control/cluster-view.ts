import type { Logger } from '../../plugins/logging/logger.js';
import { PrefixMirror, type ChangeListener } from '../../plugins/state/prefix-mirror.js';
import type { StoredEntry } from '../../plugins/state/state-store.js';
import { BLOCKS_PREFIX, CLUSTER_PREFIX, EMPTY_INDEX, ENDPOINTS_PREFIX, HOSTS_PREFIX, MEMBERS_PREFIX, NETWORKS_KEY, NETWORK_PREFIX, endpointKey, type NetworkRepository } from './network-repository.js';
import {
  parseBlockRecord,
  parseEndpointRecord,
  parseHostRecord,
  parseLocalNetworkRecord,
  parseMemberRecord,
  parseNetworkIndex,
  type BlockRecord,
  type EndpointRecord,
  type HostRecord,
  type LocalNetworkRecord,
  type MemberRecord,
  type NetworkIndex,
  type NetworkRecord,
} from './network-records.js';

/**
 * The agent's current picture of the network control plane: networks, endpoints, blocks, hosts and this
 * host's engine network IDs, mirrored from the store and parsed once per revision. Reads are local;
 * writes go to the store through the repository and are noted here at once.
 */
export class ClusterView {
  private readonly mirrors: PrefixMirror[];
  private readonly net: PrefixMirror;
  private readonly cluster: PrefixMirror;
  private readonly local: PrefixMirror;
  private readonly parsed = new Map<string, { revision: number; value: unknown }>();
  private readonly listeners = new Set<ChangeListener>();

  constructor(
    readonly repository: NetworkRepository,
    log: Logger,
  ) {
    const changed = (key?: string): void => {
      for (const listener of this.listeners) listener(key);
    };
    this.net = new PrefixMirror(repository.store, NETWORK_PREFIX, changed, log);
    this.cluster = new PrefixMirror(repository.store, CLUSTER_PREFIX, changed, log);
    this.local = new PrefixMirror(repository.store, repository.localPrefix, changed, log);
    this.mirrors = [this.net, this.cluster, this.local];
  }

  get hostName(): string {
    return this.repository.hostName;
  }

  async start(): Promise<void> {
    for (const mirror of this.mirrors) await mirror.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.mirrors.map((mirror) => mirror.stop()));
  }

  /** After the store lost the history a watch needed (etcd compaction): list and watch again. */
  async restartWatches(): Promise<void> {
    for (const mirror of this.mirrors) await mirror.restart();
  }

  async resync(): Promise<void> {
    for (const mirror of this.mirrors) await mirror.resync();
  }

  /**
   * Called after any change (possibly many times for one burst of changes: coalesce in the listener), with the
   * store key that changed, or without one when many may have (a relist).
   */
  onChange(listener: ChangeListener): void {
    this.listeners.add(listener);
  }

  index(): NetworkIndex {
    const entry = this.net.get(NETWORKS_KEY);
    return entry ? this.parse(entry, parseNetworkIndex) : EMPTY_INDEX;
  }

  network(id: string): NetworkRecord | undefined {
    return this.index().networks[id];
  }

  /** Like `network`, but reads the store when the network is not (yet) in the view: another host may have just created it. */
  async freshNetwork(id: string): Promise<NetworkRecord | undefined> {
    if (!this.network(id)) await this.refreshIndex();
    return this.network(id);
  }

  /** The network holding exactly this subnet, reading the store when the view has none. */
  async networkBySubnet(subnet: string): Promise<NetworkRecord | undefined> {
    const find = (): NetworkRecord | undefined => this.networks().find((candidate) => candidate.subnet === subnet);
    if (!find()) await this.refreshIndex();
    return find();
  }

  networks(): NetworkRecord[] {
    return Object.values(this.index().networks);
  }

  endpoints(network?: string): EndpointRecord[] {
    return this.net.list(network === undefined ? ENDPOINTS_PREFIX : `${ENDPOINTS_PREFIX}${network}/`).map((entry) => this.parse(entry, parseEndpointRecord));
  }

  /** Whether `ip` of `network` has an endpoint record (allocated or active). */
  hasEndpoint(network: string, ip: string): boolean {
    return this.net.get(endpointKey(network, ip)) !== undefined;
  }

  endpointEntry(key: string): { record: EndpointRecord; revision: number } | undefined {
    const entry = this.net.get(key);
    return entry ? { record: this.parse(entry, parseEndpointRecord), revision: entry.modRevision } : undefined;
  }

  blocks(network: string): BlockRecord[] {
    return this.net.list(`${BLOCKS_PREFIX}${network}/`).map((entry) => this.parse(entry, parseBlockRecord));
  }

  /** Hosts whose lease is alive, by name. */
  liveHosts(): Map<string, HostRecord> {
    return new Map(this.cluster.list(HOSTS_PREFIX).map((entry) => {
      const record = this.parse(entry, parseHostRecord);
      return [record.name, record] as const;
    }));
  }

  members(): MemberRecord[] {
    return this.cluster.list(MEMBERS_PREFIX).map((entry) => this.parse(entry, parseMemberRecord));
  }

  /** This host's engine network IDs, by engine ID. */
  localNetworks(): Map<string, LocalNetworkRecord> {
    return new Map(this.local.list().map((entry) => {
      const record = this.parse(entry, parseLocalNetworkRecord);
      return [record.engineNetworkId, record] as const;
    }));
  }

  /** Reads the network index back from the store after a compare-and-swap, so the next read here sees it. */
  async refreshIndex(): Promise<void> {
    const entry = await this.repository.store.get(NETWORKS_KEY);
    if (entry) this.net.notePut(entry.key, entry.value, entry.modRevision);
  }

  /** Notes the caller's own write so the next read sees it. */
  notePut(key: string, value: string, revision: number): void {
    this.mirrorFor(key).notePut(key, value, revision);
  }

  noteDelete(key: string): void {
    this.mirrorFor(key).noteDelete(key);
  }

  private mirrorFor(key: string): PrefixMirror {
    const mirror = this.mirrors.find((candidate) => key.startsWith(candidate.prefix));
    if (!mirror) throw new Error(`key ${key} is outside the mirrored prefixes`);
    return mirror;
  }

  private parse<T>(entry: StoredEntry, parser: (key: string, text: string) => T): T {
    const cached = this.parsed.get(entry.key);
    if (cached && cached.revision === entry.modRevision) return cached.value as T;
    const value = parser(entry.key, entry.value);
    if (this.parsed.size > 100_000) this.parsed.clear();
    this.parsed.set(entry.key, { revision: entry.modRevision, value });
    return value;
  }
}
