import { randomBytes } from 'node:crypto';
import { BerthError } from '../plugins/errors/berth-error.js';
import type { Logger } from '../plugins/logging/logger.js';
import type { KeyedMutex } from '../plugins/util/keyed-mutex.js';
import { blockOf, blockStarts, freeAddressInBlock, isAssignable, makePlan, type AddressPlan, type AddressSet } from './ipam/address-blocks.js';
import { containsSubnet, formatIpv4, formatSubnet, parseIpv4, parseSubnet, subnetsOverlap, subnetSize, type Ipv4Subnet } from './ipam/ipv4.js';
import type { ClusterView } from './control/cluster-view.js';
import { endpointKey, blockKey } from './control/network-repository.js';
import type { EndpointRecord, NetworkIndex, NetworkRecord } from './control/network-records.js';

/** IPAM option with which an agent attaches its engine to a network that already exists in the cluster. */
export const ATTACH_OPTION = 'berth.network';
/** How the engine marks the gateway's RequestAddress (docker-plugin-protocol.md §4.3). */
const GATEWAY_REQUEST = 'com.docker.network.gateway';
/** An address handed out but not yet used by CreateEndpoint is held this long (the engine may die in between). */
const PENDING_TTL_MS = 120_000;
const ADDRESS_SPACE = 'berth';

export interface IpamSettings {
  /** Where subnets come from when `--subnet` is not given, and their prefix length. */
  readonly defaultPool: Ipv4Subnet;
  readonly defaultPrefix: number;
}

export interface PoolRequest {
  readonly pool: string;
  readonly subPool: string;
  readonly options: Readonly<Record<string, string>>;
  readonly v6: boolean;
}

export interface PoolGrant {
  readonly poolId: string;
  readonly pool: string;
  readonly data: Record<string, string>;
}

/**
 * The cluster-wide IPAM. Pools are networks: a pool ID is the network's cluster identity, and a subnet
 * never overlaps another network's anywhere in the cluster (checked and reserved in one compare-and-swap
 * of the network index). Addresses come from per-host blocks (see address-blocks.ts); an address is
 * durably owned by its endpoint record, written with compare-and-swap, so no address is ever live twice.
 */
export class IpamService {
  /** Addresses handed out by RequestAddress, not yet recorded by CreateEndpoint: network → address → expiry. */
  private readonly pending = new Map<string, Map<number, number>>();

  constructor(
    private readonly view: ClusterView,
    private readonly locks: KeyedMutex,
    private readonly settings: IpamSettings,
  ) {}

  defaultAddressSpaces(): { LocalDefaultAddressSpace: string; GlobalDefaultAddressSpace: string } {
    return { LocalDefaultAddressSpace: ADDRESS_SPACE, GlobalDefaultAddressSpace: ADDRESS_SPACE };
  }

  async requestPool(request: PoolRequest, log: Logger): Promise<PoolGrant> {
    if (request.v6) throw new BerthError('ERR_INVALID_OPTION', 'IPv6 is not supported on berth networks yet; create the network without --ipv6');
    if (request.subPool && !request.pool) throw new BerthError('ERR_INVALID_OPTION', 'an ip range needs a subnet (--ip-range without --subnet)');
    const attachTo = request.options[ATTACH_OPTION];
    if (attachTo !== undefined) return this.attachPool(attachTo, request);
    for (const key of Object.keys(request.options)) {
      throw new BerthError('ERR_INVALID_OPTION', `unknown ipam option ${JSON.stringify(key)}; berth's IPAM takes none from users`);
    }
    const requested = request.pool ? checkedSubnet(request.pool) : undefined;
    const range = request.subPool ? parseSubnet(request.subPool, 'ip range') : undefined;
    if (requested && range && !containsSubnet(requested, range)) {
      throw new BerthError('ERR_INVALID_OPTION', `ip range ${request.subPool} is not inside subnet ${request.pool}`);
    }
    const id = randomBytes(8).toString('hex');
    const record = await this.view.repository.updateIndex((index) => {
      const subnet = requested ?? this.freeDefaultSubnet(index);
      const clash = Object.values(index.networks).find((network) => subnetsOverlap(parseSubnet(network.subnet), subnet));
      if (clash) {
        throw new BerthError('ERR_SUBNET_OVERLAP', `subnet ${formatSubnet(subnet)} overlaps ${describe(clash)} (${clash.subnet})`);
      }
      const plan = makePlan(subnet, range ?? subnet, 0);
      const gateway = blockStarts(plan).map((start) => freeAddressInBlock(plan, start, new Set())).find((address) => address !== undefined);
      if (gateway === undefined) throw new BerthError('ERR_INVALID_OPTION', `subnet ${formatSubnet(subnet)} has no room for a gateway`);
      const network: NetworkRecord = {
        id,
        subnet: formatSubnet(subnet),
        ...(range ? { ipRange: formatSubnet(range) } : {}),
        gateway: formatIpv4(gateway),
        internal: false,
        options: {},
        state: 'reserved',
        createdBy: this.view.hostName,
        createdAt: new Date().toISOString(),
      };
      return { index: { networks: { ...index.networks, [id]: network } }, result: network };
    });
    await this.refreshIndex();
    log.info({ network: id, subnet: record.subnet }, 'pool reserved');
    return { poolId: id, pool: record.subnet, data: { [GATEWAY_REQUEST]: `${record.gateway}/${parseSubnet(record.subnet).prefix}` } };
  }

  /** A pool released before its network was created (the engine's overlap probing, a failed create) is freed. */
  async releasePool(poolId: string, log: Logger): Promise<void> {
    const released = await this.view.repository.updateIndex((index) => {
      const network = index.networks[poolId];
      if (network?.state !== 'reserved' || network.createdBy !== this.view.hostName) return { result: false };
      const { [poolId]: _dropped, ...rest } = index.networks;
      return { index: { networks: rest }, result: true };
    });
    if (released) {
      await this.refreshIndex();
      log.info({ network: poolId }, 'reserved pool released');
    }
  }

  async requestAddress(poolId: string, address: string, options: Readonly<Record<string, string>>, log: Logger): Promise<string> {
    const network = await this.requireNetwork(poolId);
    const prefix = parseSubnet(network.subnet).prefix;
    if (options.RequestAddressType === GATEWAY_REQUEST) return `${await this.gatewayAddress(network, address)}/${prefix}`;
    if (network.state === 'removing') throw new BerthError('ERR_NETWORK_NOT_FOUND', `network ${describe(network)} is being removed`);
    if (address && network.state === 'reserved') return `${await this.reserveAuxAddress(network, address)}/${prefix}`;
    const ip = address ? await this.reserveChosenAddress(network, address) : await this.locks.run(`ipam:${network.id}`, () => this.allocate(network));
    log.debug({ network: network.id, ip }, 'address assigned');
    return `${ip}/${prefix}`;
  }

  /** Frees an address: its record (if this host holds it) and any pending hand-out. Unknown addresses are fine (§4.3). */
  async releaseAddress(poolId: string, address: string, log: Logger): Promise<void> {
    const network = this.view.network(poolId);
    if (!network || address === network.gateway) return;
    const ip = formatIpv4(parseIpv4(address));
    this.pending.get(poolId)?.delete(parseIpv4(ip));
    // Only an address no endpoint uses: an engine rolling back a container whose CreateEndpoint lost the
    // address to another endpoint releases it too, and must not take it from the winner.
    const held = this.view.endpointEntry(endpointKey(poolId, ip)) ?? (await this.view.repository.endpoint(poolId, ip));
    if (held && held.record.host === this.view.hostName && held.record.state === 'allocated') {
      if (await this.view.repository.tryDeleteEndpoint(poolId, ip, held.revision)) this.view.noteDelete(endpointKey(poolId, ip));
      log.debug({ network: poolId, ip }, 'address released');
    }
  }

  /** CreateEndpoint recorded the address durably: it is no longer pending. */
  settled(network: string, ip: string): void {
    this.pending.get(network)?.delete(parseIpv4(ip));
  }

  private async gatewayAddress(network: NetworkRecord, requested: string): Promise<string> {
    if (!requested || requested === network.gateway) return network.gateway;
    const subnet = parseSubnet(network.subnet);
    const gateway = parseIpv4(requested, 'gateway');
    if (!isAssignable(makePlan(subnet, subnet, -1), gateway)) throw new BerthError('ERR_INVALID_OPTION', `gateway ${requested} is not a usable address of subnet ${network.subnet}`);
    if (network.state !== 'reserved') {
      throw new BerthError('ERR_INVALID_OPTION', `network ${describe(network)} already has gateway ${network.gateway}`);
    }
    await this.view.repository.updateIndex((index) => {
      const current = index.networks[network.id];
      if (!current) throw new BerthError('ERR_NETWORK_NOT_FOUND', `pool ${network.id} was released meanwhile`);
      return { index: { networks: { ...index.networks, [network.id]: { ...current, gateway: requested } } }, result: undefined };
    });
    await this.refreshIndex();
    return requested;
  }

  /** `--aux-address`, asked for while the network is being created (no container can ask yet): kept with the network. */
  private async reserveAuxAddress(network: NetworkRecord, address: string): Promise<string> {
    const value = parseIpv4(address, 'aux address');
    if (!isAssignable(planOf(network), value)) throw new BerthError('ERR_INVALID_OPTION', `aux address ${address} is not a usable address of subnet ${network.subnet}`);
    const ip = formatIpv4(value);
    await this.view.repository.updateIndex((index) => {
      const current = index.networks[network.id];
      if (!current) throw new BerthError('ERR_NETWORK_NOT_FOUND', `pool ${network.id} was released meanwhile`);
      if (current.auxAddresses?.includes(ip)) return { result: undefined };
      const updated: NetworkRecord = { ...current, auxAddresses: [...(current.auxAddresses ?? []), ip] };
      return { index: { networks: { ...index.networks, [network.id]: updated } }, result: undefined };
    });
    await this.refreshIndex();
    return ip;
  }

  /** `--ip`: the address may lie in any host's block, so it is claimed in the store at once. */
  private async reserveChosenAddress(network: NetworkRecord, address: string): Promise<string> {
    const plan = planOf(network);
    const value = parseIpv4(address, 'address');
    if (!isAssignable(plan, value)) throw new BerthError('ERR_INVALID_OPTION', `address ${address} is not a usable address of network ${describe(network)} (${network.subnet}, gateway ${network.gateway})`);
    const ip = formatIpv4(value);
    // Under the allocation lock, so an address handed out from a block but not yet recorded is seen.
    await this.locks.run(`ipam:${network.id}`, async () => {
      if (this.pending.get(network.id)?.has(value)) throw new BerthError('ERR_ADDRESS_IN_USE', `address ${ip} of network ${describe(network)} is being given to another container`);
      await this.claimAddress(network, ip);
    });
    return ip;
  }

  private async claimAddress(network: NetworkRecord, ip: string): Promise<void> {
    const record: EndpointRecord = { network: network.id, ip, host: this.view.hostName, state: 'allocated', updatedAt: new Date().toISOString() };
    const revision = await this.view.repository.tryPutEndpoint(record, 0);
    if (revision === undefined) {
      const holder = await this.view.repository.endpoint(network.id, ip);
      throw new BerthError('ERR_ADDRESS_IN_USE', `address ${ip} of network ${describe(network)} is in use${holder ? ` on host ${holder.record.host}` : ''}`);
    }
    this.view.notePut(endpointKey(network.id, ip), JSON.stringify(record), revision);
  }

  /** From this host's blocks in memory; claims a new block when they are full; borrows as a last resort. */
  private async allocate(network: NetworkRecord): Promise<string> {
    const plan = planOf(network);
    const used = this.inUse(network.id);
    const me = this.view.hostName;
    const blocks = this.view.blocks(network.id);
    const claimed = new Set(blocks.map((block) => parseIpv4(block.start)));
    for (const block of blocks.filter((candidate) => candidate.host === me)) {
      const address = freeAddressInBlock(plan, parseIpv4(block.start), used);
      if (address !== undefined) return this.handOut(network.id, address);
    }
    for (const start of blockStarts(plan)) {
      if (claimed.has(start) || freeAddressInBlock(plan, start, used) === undefined) continue;
      const block = { network: network.id, start: formatIpv4(start), size: plan.blockSize, host: me, claimedAt: new Date().toISOString() };
      const revision = await this.view.repository.tryClaimBlock(block);
      if (revision === undefined) continue; // another host was first: try the next block
      this.view.notePut(blockKey(network.id, block.start), JSON.stringify(block), revision);
      const address = freeAddressInBlock(plan, start, used);
      if (address !== undefined) return this.handOut(network.id, address);
    }
    // Every block is held: take a free address of another host's block, recorded in the store at once.
    for (const start of blockStarts(plan)) {
      const address = freeAddressInBlock(plan, start, used, true);
      if (address === undefined) continue;
      const ip = formatIpv4(address);
      try {
        await this.claimAddress(network, ip);
        return ip;
      } catch (error) {
        if (error instanceof BerthError && error.code === 'ERR_ADDRESS_IN_USE') continue;
        throw error;
      }
    }
    throw new BerthError('ERR_ADDRESS_EXHAUSTED', `network ${describe(network)} has no free address (${network.ipRange ?? network.subnet})`);
  }

  private handOut(network: string, address: number): string {
    let held = this.pending.get(network);
    if (!held) this.pending.set(network, (held = new Map()));
    held.set(address, Date.now() + PENDING_TTL_MS);
    return formatIpv4(address);
  }

  /**
   * Whether an address of `network` is taken: recorded by an endpoint (in the view, read at each question, so
   * records that arrive meanwhile count) or handed out and not yet recorded. Answers one address at a time:
   * an allocation looks at a block's addresses, never at the thousands of endpoints of a large network.
   */
  private inUse(network: string): AddressSet {
    const pending = this.pending.get(network);
    return {
      has: (address) => {
        const expires = pending?.get(address);
        if (expires !== undefined) {
          if (expires >= Date.now()) return true;
          pending!.delete(address);
        }
        return this.view.hasEndpoint(network, formatIpv4(address));
      },
    };
  }

  /** Every address of `network` in use, as a set (for questions about all of them at once). */
  private usedAddresses(network: string): Set<number> {
    const used = new Set(this.view.endpoints(network).map((endpoint) => parseIpv4(endpoint.ip)));
    const now = Date.now();
    for (const [address, expires] of this.pending.get(network) ?? []) {
      if (expires < now) this.pending.get(network)!.delete(address);
      else used.add(address);
    }
    return used;
  }

  /** Blocks this host holds that no longer hold any address (kept: one per network, for the next container). */
  idleBlocks(network: string): string[] {
    const record = this.view.network(network);
    if (!record) return [];
    const plan = planOf(record);
    const busy = new Set([...this.usedAddresses(network)].map((address) => blockOf(plan, address)));
    const mine = this.view.blocks(network).filter((block) => block.host === this.view.hostName);
    return mine.filter((block) => !busy.has(parseIpv4(block.start))).slice(mine.length > 0 && busy.size === 0 ? 1 : 0).map((block) => block.start);
  }

  private async requireNetwork(poolId: string): Promise<NetworkRecord> {
    const network = await this.view.freshNetwork(poolId);
    if (!network) throw new BerthError('ERR_NETWORK_NOT_FOUND', `pool ${poolId} is not a berth network (was it removed?)`);
    return network;
  }

  private async attachPool(id: string, request: PoolRequest): Promise<PoolGrant> {
    const network = await this.view.freshNetwork(id);
    if (!network || network.state !== 'active') throw new BerthError('ERR_NETWORK_NOT_FOUND', `berth network ${id} does not exist or is being removed`);
    if (request.pool && request.pool !== network.subnet) throw new BerthError('ERR_INVALID_OPTION', `network ${describe(network)} has subnet ${network.subnet}, not ${request.pool}`);
    return { poolId: id, pool: network.subnet, data: { [GATEWAY_REQUEST]: `${network.gateway}/${parseSubnet(network.subnet).prefix}` } };
  }

  /** Each request without a subnet gets a different free one: the engine asks again when a pool clashes with a host route. */
  private freeDefaultSubnet(index: NetworkIndex): Ipv4Subnet {
    const { defaultPool, defaultPrefix } = this.settings;
    const taken = Object.values(index.networks).map((network) => parseSubnet(network.subnet));
    const step = 2 ** (32 - defaultPrefix);
    for (let base = defaultPool.base; base < defaultPool.base + subnetSize(defaultPool); base += step) {
      const candidate = { base, prefix: defaultPrefix };
      if (!taken.some((subnet) => subnetsOverlap(subnet, candidate))) return candidate;
    }
    throw new BerthError('ERR_ADDRESS_EXHAUSTED', `no free /${defaultPrefix} left in the default pool ${formatSubnet(defaultPool)}; pass --subnet`);
  }

  /** After a compare-and-swap of the index, reads it back so this host's next call sees the change. */
  private async refreshIndex(): Promise<void> {
    await this.view.refreshIndex();
  }
}

export function planOf(network: NetworkRecord): AddressPlan {
  const subnet = parseSubnet(network.subnet);
  const plan = makePlan(subnet, network.ipRange ? parseSubnet(network.ipRange) : subnet, parseIpv4(network.gateway));
  return network.auxAddresses?.length ? { ...plan, reserved: new Set([...plan.reserved, ...network.auxAddresses.map((ip) => parseIpv4(ip))]) } : plan;
}

/** How messages name a network: by name once known, else by its cluster ID. */
export function describe(network: NetworkRecord): string {
  return network.name ?? network.id;
}

function checkedSubnet(text: string): Ipv4Subnet {
  const subnet = parseSubnet(text);
  if (subnet.prefix < 8 || subnet.prefix > 29) throw new BerthError('ERR_INVALID_OPTION', `subnet ${text} must have a prefix from /8 to /29`);
  return subnet;
}
