// Keeps this host's engine in step with the cluster's networks, and the cluster's records in step with
// what really runs here:
// - names: the engine never tells a driver a network's name, so after a create the agent reads it from its
//   engine and publishes it (a second network taking a name already used in the cluster loses and is removed);
// - presence: every active network appears on this host's engine under its name (created through the engine
//   API, which calls back into this agent's IPAM and driver); a network being removed leaves this engine as
//   soon as no local container uses it, and its record goes once no endpoint is left anywhere;
// - endpoints: records of endpoints this engine no longer has (a crashed engine, a lost DeleteEndpoint) are
//   dropped after a grace period; endpoints the engine has but the store lost are recorded again;
// - dead hosts: once a host has been gone longer than `reclaimAfterMs`, its addresses and blocks are freed.
import type { EngineNetworks } from '../../plugins/engine/engine.js';
import { errorMessage, isBerthError } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import { CoalescingRunner } from '../../plugins/util/coalescing-runner.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import { HOST_VETH_PREFIX, endpointInterfaceNames, macForAddress } from '../dataplane/device-names.js';
import { ATTACH_OPTION, describe } from '../ipam-service.js';
import { parseIpv4 } from '../ipam/ipv4.js';
import type { ClusterView } from './cluster-view.js';
import { endpointKey } from './network-repository.js';
import type { EndpointRecord, NetworkRecord } from './network-records.js';

/** Label on networks the agent creates on its engine, naming the cluster network. */
export const NETWORK_LABEL = 'io.berth.network';
export interface EngineSyncSettings {
  readonly driverName: string;
  readonly reclaimAfterMs: number;
  /** An endpoint record the engine does not show is dropped only after this long (a container may be starting). */
  readonly endpointGraceMs?: number;
  /** An address held without an endpoint (between RequestAddress/--ip and CreateEndpoint) for this long is freed. */
  readonly allocationGraceMs?: number;
  /** A pool reserved but never turned into a network (its engine died in between) is freed after this long. */
  readonly reservationGraceMs?: number;
}

const DEFAULT_GRACE = { endpointGraceMs: 30_000, allocationGraceMs: 120_000, reservationGraceMs: 600_000 };

export class EngineNetworkSync {
  private readonly runner: CoalescingRunner;
  private readonly problems = new Map<string, string>();
  private endpointCheckDue = true;
  private readonly grace: typeof DEFAULT_GRACE;

  constructor(
    private readonly view: ClusterView,
    private readonly engine: EngineNetworks,
    private readonly dataplane: Dataplane,
    private readonly settings: EngineSyncSettings,
    private readonly log: Logger,
  ) {
    this.grace = { ...DEFAULT_GRACE, ...settings };
    this.runner = new CoalescingRunner(() => this.pass(), 20);
  }

  request(): void {
    this.runner.request();
  }

  /** Also compares endpoint records with the engine's containers (slower: one inspect per network). */
  requestEndpointCheck(): void {
    this.endpointCheckDue = true;
    this.runner.request();
  }

  idle(): Promise<void> {
    return this.runner.idle();
  }

  stop(): void {
    this.runner.stop();
  }

  /** Current problems (name clashes, engine refusals), for status and doctor. */
  issues(): string[] {
    return [...this.problems.values()];
  }

  private async pass(): Promise<void> {
    const steps: [string, () => Promise<void>][] = [
      ['names', () => this.publishNames()],
      ['presence', () => this.syncPresence()],
      ['removal', () => this.finishRemovals()],
      ['reclaim', () => this.reclaimDeadHosts()],
    ];
    if (this.endpointCheckDue) {
      this.endpointCheckDue = false;
      steps.push(['endpoints', () => this.checkEndpoints()]);
    }
    for (const [step, run] of steps) {
      try {
        await run();
      } catch (error) {
        this.log.warn({ step, err: errorMessage(error) }, 'network sync step failed; retrying on the next change or tick');
      }
    }
  }

  private async publishNames(): Promise<void> {
    for (const [engineNetworkId, local] of this.view.localNetworks()) {
      const network = this.view.network(local.network);
      if (!network || network.name !== undefined || network.state !== 'active' || network.createdBy !== this.view.hostName) continue;
      const found = await this.engine.inspectNetwork(engineNetworkId);
      if (!found) {
        // The engine stores the network just after CreateNetwork returns: look again shortly.
        setTimeout(() => this.request(), 200).unref();
        continue;
      }
      const clash = await this.view.repository.updateIndex((index) => {
        const current = index.networks[network.id];
        if (!current || current.name !== undefined) return { result: undefined };
        const holder = Object.values(index.networks).find((other) => other.name === found.name && other.id !== network.id && other.state === 'active');
        const updated: NetworkRecord = holder ? { ...current, name: found.name, state: 'removing', removeRequestedBy: this.view.hostName } : { ...current, name: found.name };
        return { index: { networks: { ...index.networks, [network.id]: updated } }, result: holder };
      });
      await this.view.refreshIndex();
      if (clash) {
        const message = `network ${found.name} was created on host ${this.view.hostName} while a berth network of that name already exists in the cluster (${clash.subnet}); the new one is removed`;
        this.problems.set(`name:${network.id}`, message);
        this.log.error({ network: network.id, name: found.name }, message);
      } else {
        this.log.info({ network: network.id, name: found.name }, 'network name published');
      }
      this.request();
    }
  }

  private async syncPresence(): Promise<void> {
    const locals = this.view.localNetworks();
    const localIds = new Set([...locals.values()].map((local) => local.network));
    for (const network of this.view.networks()) {
      if (network.state !== 'active' || network.name === undefined || localIds.has(network.id)) continue;
      await this.createOnEngine(network);
    }
    for (const [engineNetworkId, local] of locals) {
      const network = this.view.network(local.network);
      if (network && network.state !== 'removing') continue;
      try {
        await this.engine.removeNetwork(engineNetworkId);
        this.problems.delete(`remove:${local.network}`);
        // The engine called DeleteNetwork, which dropped the mapping; an engine that no longer knows the ID did not.
        if (this.view.localNetworks().has(engineNetworkId)) {
          await this.view.repository.deleteLocalNetwork(engineNetworkId);
          this.view.noteDelete(`${this.view.repository.localPrefix}${engineNetworkId}`);
        }
        this.log.info({ network: local.network }, 'removed network from this engine');
      } catch (error) {
        if (!isBerthError(error, 'ERR_NETWORK_IN_USE')) throw error;
        this.problems.set(`remove:${local.network}`, `network ${network ? describe(network) : local.network} is being removed; containers on host ${this.view.hostName} still use it`);
      }
    }
  }

  private async createOnEngine(network: NetworkRecord): Promise<void> {
    const existing = await this.engine.inspectNetwork(network.name!);
    if (existing) {
      if (existing.labels[NETWORK_LABEL] !== network.id) {
        const message = `cannot add berth network ${network.name} to this host: its engine already has a network of that name (driver ${existing.driver})`;
        if (!this.problems.has(`create:${network.id}`)) this.log.error({ network: network.id }, message);
        this.problems.set(`create:${network.id}`, message);
      }
      return;
    }
    try {
      await this.engine.createNetwork({
        name: network.name!,
        driver: this.settings.driverName,
        ipamDriver: this.settings.driverName,
        subnet: network.subnet,
        gateway: network.gateway,
        ...(network.ipRange ? { ipRange: network.ipRange } : {}),
        ipamOptions: { [ATTACH_OPTION]: network.id },
        options: network.options,
        internal: network.internal,
        labels: { [NETWORK_LABEL]: network.id },
      });
      this.problems.delete(`create:${network.id}`);
      this.log.info({ network: network.id, name: network.name }, 'network added to this engine');
    } catch (error) {
      const message = `cannot add berth network ${network.name} to this host's engine: ${errorMessage(error)}`;
      if (!this.problems.has(`create:${network.id}`)) this.log.error({ network: network.id }, message);
      this.problems.set(`create:${network.id}`, message);
    }
  }

  /** A removed network's record goes once no endpoint is left anywhere; stale reservations go too. */
  private async finishRemovals(): Promise<void> {
    const now = Date.now();
    const done = this.view.networks().filter(
      (network) =>
        (network.state === 'removing' && this.view.endpoints(network.id).length === 0) ||
        (network.state === 'reserved' && now - Date.parse(network.createdAt) > this.grace.reservationGraceMs),
    );
    if (done.length === 0) return;
    const ids = new Set(done.map((network) => network.id));
    await this.view.repository.updateIndex((index) => {
      const networks = { ...index.networks };
      let changed = false;
      for (const id of ids) {
        const current = networks[id];
        if (current && (current.state === 'removing' || current.state === 'reserved')) {
          delete networks[id];
          changed = true;
        }
      }
      return changed ? { index: { networks }, result: undefined } : { result: undefined };
    });
    await this.view.refreshIndex();
    for (const network of done) {
      for (const block of this.view.blocks(network.id)) await this.view.repository.deleteBlock(network.id, block.start);
      this.log.info({ network: network.id, name: network.name }, 'network removed from the cluster');
    }
  }

  private async reclaimDeadHosts(): Promise<void> {
    const live = this.view.liveHosts();
    const now = Date.now();
    for (const member of this.view.members()) {
      if (live.has(member.name) || now - Date.parse(member.lastSeen) < this.settings.reclaimAfterMs) continue;
      let freed = 0;
      for (const endpoint of this.view.endpoints().filter((candidate) => candidate.host === member.name)) {
        const held = this.view.endpointEntry(endpointKey(endpoint.network, endpoint.ip));
        if (held && (await this.view.repository.tryDeleteEndpoint(endpoint.network, endpoint.ip, held.revision))) freed++;
      }
      for (const network of this.view.networks()) {
        for (const block of this.view.blocks(network.id).filter((candidate) => candidate.host === member.name)) {
          await this.view.repository.deleteBlock(network.id, block.start);
        }
      }
      await this.view.repository.deleteLocalNetworksOf(member.name);
      await this.view.repository.deleteMember(member.name);
      this.log.warn({ host: member.name, lastSeen: member.lastSeen, addresses: freed }, 'reclaimed the addresses and blocks of a host gone for good');
    }
  }

  /** Compares this host's endpoint records with the engine's containers. */
  private async checkEndpoints(): Promise<void> {
    const me = this.view.hostName;
    const now = Date.now();
    for (const [engineNetworkId, local] of this.view.localNetworks()) {
      const network = this.view.network(local.network);
      const found = await this.engine.inspectNetwork(engineNetworkId);
      if (!found) {
        // The engine does not have it (its create failed after CreateNetwork, or it was removed while this agent
        // was down): forget the mapping, so the network is created again or its removal can finish.
        if (now - Date.parse(local.createdAt) > this.grace.endpointGraceMs) await this.forgetLocalNetwork(engineNetworkId, local.network);
        continue;
      }
      if (!network) continue;
      // Revisions are taken with the records they describe: a record changed meanwhile is not touched.
      const records = this.view.endpoints(network.id).map((record) => ({ record, revision: this.view.endpointEntry(endpointKey(record.network, record.ip))?.revision }));
      const recorded = new Set(records.map(({ record }) => `${record.ip}|${record.endpointId ?? ''}`));
      const engineEndpoints = new Set(found.endpoints.map((endpoint) => endpoint.endpointId));
      for (const endpoint of found.endpoints) {
        if (!endpoint.ipv4 || recorded.has(`${endpoint.ipv4}|${endpoint.endpointId}`)) continue;
        await this.restoreRecord(network, endpoint.endpointId, endpoint.ipv4, endpoint.mac);
      }
      for (const { record, revision } of records) {
        if (record.host !== me || revision === undefined) continue;
        const age = now - Date.parse(record.updatedAt);
        const stale = record.state === 'active' ? !engineEndpoints.has(record.endpointId!) && age > this.grace.endpointGraceMs : age > this.grace.allocationGraceMs;
        if (!stale) continue;
        if (await this.view.repository.tryDeleteEndpoint(record.network, record.ip, revision)) {
          this.view.noteDelete(endpointKey(record.network, record.ip));
          if (record.endpointId) {
            const names = endpointInterfaceNames(record.endpointId);
            await this.dataplane.deleteLocalEndpoint(names.hostIfName, names.containerIfName);
          }
          this.log.info({ network: record.network, ip: record.ip, state: record.state }, 'released an address the engine no longer uses');
        }
      }
    }
    // veths of endpoints that no longer exist (an agent killed between Leave and its cleanup); each one is checked
    // against the view at the moment it would be deleted, so a Join that ran meanwhile keeps its veth.
    const wanted = (): Set<string> =>
      new Set(
        this.view
          .endpoints()
          .filter((record) => record.host === me && record.endpointId)
          .map((record) => endpointInterfaceNames(record.endpointId!).hostIfName),
      );
    for (const link of await this.dataplane.listLinks(HOST_VETH_PREFIX)) {
      if (!wanted().has(link)) await this.dataplane.deleteLocalEndpoint(link);
    }
  }

  private async forgetLocalNetwork(engineNetworkId: string, networkId: string): Promise<void> {
    // A network this host created whose name never became known never existed for the user: remove it.
    await this.view.repository.updateIndex((index) => {
      const network = index.networks[networkId];
      if (!network || network.name !== undefined || network.createdBy !== this.view.hostName || network.state !== 'active') return { result: undefined };
      return { index: { networks: { ...index.networks, [networkId]: { ...network, state: 'removing', removeRequestedBy: this.view.hostName } } }, result: undefined };
    });
    await this.view.refreshIndex();
    await this.view.repository.deleteLocalNetwork(engineNetworkId);
    this.view.noteDelete(`${this.view.repository.localPrefix}${engineNetworkId}`);
    this.log.warn({ network: networkId, engineNetworkId }, 'this engine does not have a network recorded for it; forgot the record');
  }

  /** The engine has an endpoint whose record is gone (reclaimed while this host was away): record it again. */
  private async restoreRecord(network: NetworkRecord, endpointId: string, ip: string, mac: string): Promise<void> {
    const record: EndpointRecord = { network: network.id, ip, host: this.view.hostName, state: 'active', endpointId, mac: mac || macForAddress(parseIpv4(ip)), updatedAt: new Date().toISOString() };
    const held = await this.view.repository.endpoint(network.id, ip);
    if (held && (held.record.host !== this.view.hostName || (held.record.endpointId !== undefined && held.record.endpointId !== endpointId))) {
      const message = `address ${ip} of network ${describe(network)} is used by a container on this host and is recorded for ${held.record.host === this.view.hostName ? `endpoint ${held.record.endpointId}` : `host ${held.record.host}`}; restart that container`;
      this.problems.set(`address:${network.id}:${ip}`, message);
      this.log.error({ network: network.id, ip }, message);
      return;
    }
    const revision = await this.view.repository.tryPutEndpoint(record, held?.revision ?? 0);
    if (revision !== undefined) {
      this.view.notePut(endpointKey(network.id, ip), JSON.stringify(record), revision);
      this.log.warn({ network: network.id, ip }, 'recorded an endpoint the store had lost');
    }
  }
}
