import { BerthError } from '../plugins/errors/berth-error.js';
import type { Logger } from '../plugins/logging/logger.js';
import type { KeyedMutex } from '../plugins/util/keyed-mutex.js';
import type { ClusterView } from './control/cluster-view.js';
import { endpointKey } from './control/network-repository.js';
import type { EndpointRecord, NetworkRecord } from './control/network-records.js';
import type { Dataplane } from './dataplane/dataplane.js';
import { endpointInterfaceNames, macForAddress, overlayNames } from './dataplane/device-names.js';
import { formatSubnet, parseAddressWithPrefix, parseSubnet } from './ipam/ipv4.js';
import { describe, type IpamService } from './ipam-service.js';
import { MAX_VNI, parseNetworkOptions } from './network-options.js';

/** Berth's own VNIs start high, clear of the range swarm's overlay hands out (from 4096) on the same hosts. */
export const FIRST_VNI = 100_000;
/** VXLAN over IPv4 adds 50 bytes (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8). */
export const VXLAN_OVERHEAD = 50;

export interface NetworkSettings {
  /** The plugin's name, as users give it to --driver and --ipam-driver. */
  readonly driverName: string;
  readonly vxlanPort: number;
  /** This host's VTEP (advertised underlay address); absent on a single host without one. */
  readonly localVtep?: string;
  /** MTU of the underlay device carrying VXLAN traffic. */
  readonly underlayMtu: number;
}

export interface CreateNetworkRequest {
  readonly engineNetworkId: string;
  readonly options: Readonly<Record<string, string>>;
  readonly internal: boolean;
  readonly ipv6: boolean;
  /** IPv4Data[0]: the pool and gateway the IPAM gave. */
  readonly pool?: string;
  readonly gateway?: string;
}

/**
 * The NetworkDriver side. A network is identified cluster-wide by its pool (the IPAM's pool ID is the
 * network's ID, and its subnet is unique in the cluster), so CreateNetwork on any host maps the engine's
 * own network ID to it. The creating host activates the network (assigns the VNI); other hosts' agents
 * then create it on their engines (see engine-network-sync.ts). Endpoints are recorded in the store, which
 * every host watches to program its forwarding tables; the veth is made at Join.
 */
export class NetworkService {
  /** Endpoint ID → record key of the endpoints this agent recorded: Join finds its endpoint without a scan (checked against the view on use). */
  private readonly recorded = new Map<string, string>();

  constructor(
    private readonly view: ClusterView,
    private readonly ipam: IpamService,
    private readonly dataplane: Dataplane,
    private readonly locks: KeyedMutex,
    private readonly settings: NetworkSettings,
    /** Notified when a network became active here, so its name is looked up on the engine. */
    private readonly onActivated: (engineNetworkId: string) => void,
    /** Host-wide preparation an overlay needs (firewall rules), done only once this host has one. */
    private readonly prepareHost: () => Promise<void> = async () => undefined,
  ) {}

  async createNetwork(request: CreateNetworkRequest, log: Logger): Promise<void> {
    if (request.ipv6) throw new BerthError('ERR_INVALID_OPTION', 'IPv6 is not supported on berth networks yet; create the network without --ipv6');
    const options = parseNetworkOptions(request.options);
    if (!request.pool) throw new BerthError('ERR_INVALID_REQUEST', 'request has no IPv4 pool');
    const pool = formatSubnet(parseSubnet(request.pool, 'pool'));
    const network = await this.view.networkBySubnet(pool);
    if (!network) {
      throw new BerthError('ERR_INVALID_OPTION', `pool ${pool} was not allocated by berth's IPAM; create berth networks with --ipam-driver ${this.settings.driverName} as well`);
    }
    await this.locks.run(`network:${network.id}`, async () => {
      let active = network;
      if (network.state === 'reserved') {
        active = await this.activate(network, request, options);
        log.info({ network: active.id, vni: active.vni, subnet: active.subnet }, 'network created');
      } else if (network.state === 'removing') {
        throw new BerthError('ERR_NETWORK_NOT_FOUND', `network ${describe(network)} is being removed`);
      }
      const revision = await this.view.repository.putLocalNetwork({ engineNetworkId: request.engineNetworkId, network: active.id, createdAt: new Date().toISOString() });
      this.view.notePut(`${this.view.repository.localPrefix}${request.engineNetworkId}`, JSON.stringify({ engineNetworkId: request.engineNetworkId, network: active.id, createdAt: new Date().toISOString() }), revision);
      await this.prepareHost();
      await this.dataplane.ensureOverlay(this.overlaySpec(active));
    });
    if (network.state === 'reserved') this.onActivated(request.engineNetworkId);
  }

  /** The engine removed the network here: that is the user's removal, for the whole cluster. */
  async deleteNetwork(engineNetworkId: string, log: Logger): Promise<void> {
    const local = this.view.localNetworks().get(engineNetworkId);
    if (!local) return;
    await this.requestRemoval(local.network);
    await this.view.repository.deleteLocalNetwork(engineNetworkId);
    this.view.noteDelete(`${this.view.repository.localPrefix}${engineNetworkId}`);
    log.info({ network: local.network }, 'network removed on this host');
  }

  /** Marks a network for removal cluster-wide: each host drops it once its containers no longer use it. */
  async requestRemoval(networkId: string): Promise<void> {
    await this.view.repository.updateIndex((index) => {
      const network = index.networks[networkId];
      if (!network || network.state !== 'active') return { result: undefined };
      const removing: NetworkRecord = { ...network, state: 'removing', removeRequestedBy: this.view.hostName };
      return { index: { networks: { ...index.networks, [network.id]: removing } }, result: undefined };
    });
    await this.view.refreshIndex();
  }

  async createEndpoint(engineNetworkId: string, endpointId: string, address: string, requestedMac: string, log: Logger): Promise<{ mac: string; generated: boolean }> {
    const network = this.requireLocalNetwork(engineNetworkId);
    if (!address) throw new BerthError('ERR_INVALID_REQUEST', 'endpoint has no IPv4 address (is the network using berth as its IPAM driver?)');
    const ip = parseAddressWithPrefix(address, 'endpoint address');
    const ipText = address.split('/')[0]!;
    const mac = requestedMac || macForAddress(ip.address);
    const key = endpointKey(network.id, ipText);
    await this.locks.run(key, async () => {
      // The view's copy is the first guess (the address normally comes from this host's own block, so nobody else
      // writes it): the compare-and-swap decides, and only a lost write or a copy that says no reads the store.
      const guess = this.view.endpointEntry(key);
      const plausible = !guess || (guess.record.host === this.view.hostName && !(guess.record.state === 'active' && guess.record.endpointId !== endpointId));
      let held = plausible ? guess : await this.view.repository.endpoint(network.id, ipText);
      for (let fresh = !plausible; ; fresh = true) {
        if (held && held.record.host !== this.view.hostName) {
          throw new BerthError('ERR_ADDRESS_IN_USE', `address ${ipText} of network ${describe(network)} is in use on host ${held.record.host}`);
        }
        if (held?.record.state === 'active' && held.record.endpointId !== endpointId) {
          throw new BerthError('ERR_ADDRESS_IN_USE', `address ${ipText} of network ${describe(network)} is in use by endpoint ${held.record.endpointId}`);
        }
        const record: EndpointRecord = { network: network.id, ip: ipText, host: this.view.hostName, state: 'active', endpointId, mac, updatedAt: new Date().toISOString() };
        const revision = await this.view.repository.tryPutEndpoint(record, held?.revision ?? 0);
        if (revision !== undefined) {
          this.view.notePut(key, JSON.stringify(record), revision);
          break;
        }
        if (fresh) throw new BerthError('ERR_ADDRESS_IN_USE', `address ${ipText} of network ${describe(network)} was taken at the same moment; start the container again`);
        held = await this.view.repository.endpoint(network.id, ipText);
      }
      this.ipam.settled(network.id, ipText);
      this.recorded.set(endpointId, key);
    });
    log.debug({ network: network.id, ip: ipText, mac }, 'endpoint recorded');
    return { mac, generated: !requestedMac };
  }

  /** The endpoint stops being forwarded to; its address stays held until ReleaseAddress. */
  async deleteEndpoint(engineNetworkId: string, endpointId: string, log: Logger): Promise<void> {
    const local = this.view.localNetworks().get(engineNetworkId);
    const endpoint = local ? this.localEndpoint(local.network, endpointId) : this.findLocalEndpoint(endpointId);
    if (!endpoint) return;
    const names = endpointInterfaceNames(endpointId);
    await this.dataplane.deleteLocalEndpoint(names.hostIfName, names.containerIfName);
    this.recorded.delete(endpointId);
    await this.locks.run(endpointKey(endpoint.record.network, endpoint.record.ip), async () => {
      const record: EndpointRecord = { network: endpoint.record.network, ip: endpoint.record.ip, host: endpoint.record.host, state: 'allocated', updatedAt: new Date().toISOString() };
      const revision = await this.view.repository.tryPutEndpoint(record, endpoint.revision);
      if (revision !== undefined) this.view.notePut(endpointKey(record.network, record.ip), JSON.stringify(record), revision);
    });
    log.debug({ network: endpoint.record.network, ip: endpoint.record.ip }, 'endpoint deleted');
  }

  /** Creates the veth pair; the engine moves its container end into the sandbox and names it eth<N>. */
  async join(engineNetworkId: string, endpointId: string): Promise<{ srcName: string; internal: boolean }> {
    const network = this.requireLocalNetwork(engineNetworkId);
    const endpoint = this.localEndpoint(network.id, endpointId);
    if (!endpoint) throw new BerthError('ERR_NOT_FOUND', `endpoint ${endpointId} of network ${describe(network)} does not exist on this host`);
    const spec = this.overlaySpec(network);
    await this.dataplane.ensureOverlay(spec);
    const names = endpointInterfaceNames(endpointId);
    await this.dataplane.ensureLocalEndpoint({ ...names, bridgeName: spec.bridgeName, mac: endpoint.record.mac!, mtu: spec.mtu });
    return { srcName: names.containerIfName, internal: network.internal };
  }

  async leave(endpointId: string): Promise<void> {
    const names = endpointInterfaceNames(endpointId);
    await this.dataplane.deleteLocalEndpoint(names.hostIfName, names.containerIfName);
  }

  overlaySpec(network: NetworkRecord): { bridgeName: string; vxlanName: string; vni: number; port: number; mtu: number; localVtep?: string } {
    if (network.vni === undefined) throw new BerthError('ERR_INTERNAL', `network ${describe(network)} has no VNI yet`);
    return {
      ...overlayNames(network.vni),
      vni: network.vni,
      port: this.settings.vxlanPort,
      mtu: this.mtuOf(network),
      ...(this.settings.localVtep ? { localVtep: this.settings.localVtep } : {}),
    };
  }

  mtuOf(network: NetworkRecord): number {
    return network.mtu ?? this.settings.underlayMtu - VXLAN_OVERHEAD;
  }

  requireLocalNetwork(engineNetworkId: string): NetworkRecord {
    const local = this.view.localNetworks().get(engineNetworkId);
    const network = local ? this.view.network(local.network) : undefined;
    if (!network) throw new BerthError('ERR_NETWORK_NOT_FOUND', `network ${engineNetworkId} is not a berth network on this host`);
    return network;
  }

  private localEndpoint(network: string, endpointId: string): { record: EndpointRecord; revision: number } | undefined {
    const known = this.recordedEndpoint(endpointId);
    if (known) return known.record.network === network ? known : undefined;
    const record = this.view.endpoints(network).find((candidate) => candidate.endpointId === endpointId && candidate.host === this.view.hostName);
    return record ? this.view.endpointEntry(endpointKey(network, record.ip)) : undefined;
  }

  private findLocalEndpoint(endpointId: string): { record: EndpointRecord; revision: number } | undefined {
    const known = this.recordedEndpoint(endpointId);
    if (known) return known;
    const record = this.view.endpoints().find((candidate) => candidate.endpointId === endpointId && candidate.host === this.view.hostName);
    return record ? this.view.endpointEntry(endpointKey(record.network, record.ip)) : undefined;
  }

  /** The endpoint this agent recorded under `endpointId`, if the view still holds it as such. */
  private recordedEndpoint(endpointId: string): { record: EndpointRecord; revision: number } | undefined {
    const key = this.recorded.get(endpointId);
    const held = key === undefined ? undefined : this.view.endpointEntry(key);
    if (held && held.record.endpointId === endpointId && held.record.host === this.view.hostName) return held;
    if (key !== undefined) this.recorded.delete(endpointId);
    return undefined;
  }

  /** Reserved → active: takes the options, the VNI (chosen or the lowest free) and the internal flag. */
  private async activate(network: NetworkRecord, request: CreateNetworkRequest, options: { mtu?: number; vni?: number }): Promise<NetworkRecord> {
    const gateway = request.gateway ? request.gateway.split('/')[0]! : network.gateway;
    const active = await this.view.repository.updateIndex((index) => {
      const current = index.networks[network.id];
      if (!current) throw new BerthError('ERR_NETWORK_NOT_FOUND', `pool ${network.id} was released before the network was created`);
      if (current.state !== 'reserved') return { result: current };
      const used = new Set(Object.values(index.networks).map((other) => other.vni));
      if (options.vni !== undefined && used.has(options.vni)) {
        const holder = Object.values(index.networks).find((other) => other.vni === options.vni)!;
        throw new BerthError('ERR_INVALID_OPTION', `vni ${options.vni} is already used by network ${describe(holder)}`);
      }
      let vni = options.vni ?? FIRST_VNI;
      while (used.has(vni) && vni < MAX_VNI) vni++;
      const updated: NetworkRecord = {
        ...current,
        state: 'active',
        vni,
        gateway,
        internal: request.internal,
        options: Object.fromEntries(Object.entries(request.options).filter(([key]) => !key.startsWith('com.docker.network.'))),
        ...(options.mtu !== undefined ? { mtu: options.mtu } : {}),
      };
      return { index: { networks: { ...index.networks, [network.id]: updated } }, result: updated };
    });
    await this.view.refreshIndex();
    return active;
  }
}
