// Design notes.
// - Kernel state per overlay follows Docker overlay's per-network model with flannel's device
//   settings: a bridge per network with one VXLAN port (learning off, proxy on, no group, no miss
//   notifications), a veth per local container, and per remote container a permanent ARP entry
//   plus a permanent FDB entry MAC -> VTEP, both written with replace. Broadcast and unknown
//   unicast reach every remote host by head-end replication: one all-zeros FDB destination per
//   remote VTEP.
// - Everything is pushed by the control plane; nothing listens for misses. Every call converges
//   (ensure) or removes (delete) and may be repeated; the reconciler diffs listForwarding against
//   the store.
// - With proxy on, the VXLAN device answers ARP from its neighbour table and drops requests it
//   cannot answer: ARP is never flooded, so every remote endpoint needs its entries.
// - One rtnetlink socket per instance; requests made in the same turn leave as one datagram with
//   one ACK (RtnlClient), and thousands of FDB/ARP writes naming the same VXLAN device share its
//   cached ifindex, refreshed on ENODEV (LinkIndexCache). Link-level changes (ensure/delete of an
//   overlay or endpoint) are serialized per name so two ensures of one network cannot race into EEXIST.
// - The instance programs the network namespace its process was in when it was constructed.
import type { rt } from 'netlink';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { KeyedMutex } from '../../plugins/util/keyed-mutex.js';
import { dataplaneError } from './dataplane-error.js';
import type { Dataplane, ForwardingTable, HostTuningReport, LocalEndpointSpec, OverlaySpec, RemoteEndpoint, UnderlayInfo } from './dataplane.js';
import { raiseNeighbourThresholds } from './host-tuning.js';
import { LinkIndexCache } from './link-index-cache.js';
import { bridgeLinkInfo, linkKind, readVxlanSettings, sameVxlanSettings, VETH_QUEUES, vethLinkInfo, vxlanLinkInfo, type VxlanSettings } from './link-info.js';
import { isUp, LinkOps, type LinkChange } from './link-ops.js';
import { formatMac, ipv4Bytes, macBytes, ZERO_MAC } from './net-address.js';
import { NeighbourOps } from './neighbour-ops.js';
import { RtnlClient, type RtnlClientOptions } from './rtnl-client.js';
import { checkEndpointSpec, checkLinkName, checkOverlaySpec } from './spec-validation.js';
import { UnderlayLookup } from './underlay-lookup.js';

export interface NetlinkDataplaneOptions extends RtnlClientOptions {
  /** Where tuneHost writes the neighbour thresholds. Default /proc/sys. */
  readonly procSysRoot?: string;
}

export class NetlinkDataplane implements Dataplane, AsyncDisposable {
  private readonly client: RtnlClient;
  private readonly links: LinkOps;
  private readonly neighbours: NeighbourOps;
  private readonly indexes: LinkIndexCache;
  private readonly underlays: UnderlayLookup;
  private readonly linkLocks = new KeyedMutex();
  private readonly procSysRoot: string;

  constructor(options: NetlinkDataplaneOptions = {}) {
    try {
      this.client = new RtnlClient(options);
    } catch (error) {
      throw dataplaneError('opening a netlink socket', error);
    }
    this.links = new LinkOps(this.client);
    this.neighbours = new NeighbourOps(this.client);
    this.indexes = new LinkIndexCache(this.links);
    this.underlays = new UnderlayLookup(this.client, this.links);
    this.procSysRoot = options.procSysRoot ?? '/proc/sys';
  }

  async underlay(address?: string): Promise<UnderlayInfo> {
    if (address !== undefined) ipv4Bytes(address);
    try {
      return await this.underlays.find(address);
    } catch (error) {
      throw dataplaneError(address === undefined ? 'finding the underlay device' : `finding the underlay device of ${address}`, error);
    }
  }

  async ensureOverlay(spec: OverlaySpec): Promise<void> {
    checkOverlaySpec(spec);
    await this.linkLocks.run(spec.bridgeName, async () => {
      const bridge = await this.ensureBridge(spec.bridgeName, spec.mtu);
      const wanted: VxlanSettings = {
        vni: spec.vni,
        port: spec.port,
        learning: false,
        proxy: true,
        ...(spec.localVtep === undefined ? {} : { local: spec.localVtep }),
        ...(spec.underlayDevice === undefined ? {} : { link: await this.underlayIndex(spec.underlayDevice) }),
      };
      await this.ensureVxlan(spec.vxlanName, wanted, spec.mtu, bridge);
    });
  }

  async deleteOverlay(names: { readonly bridgeName: string; readonly vxlanName: string }): Promise<void> {
    checkLinkName(names.bridgeName, 'bridge');
    checkLinkName(names.vxlanName, 'vxlan');
    await this.linkLocks.run(names.bridgeName, async () => {
      await this.removeLink(names.vxlanName, 'vxlan');
      await this.removeLink(names.bridgeName, 'bridge');
    });
  }

  async listLinks(prefix: string): Promise<string[]> {
    try {
      const names = (await this.links.list()).map((link) => link.attrs.ifname ?? '');
      return names.filter((name) => name !== '' && name.startsWith(prefix)).sort();
    } catch (error) {
      throw dataplaneError(`listing links named ${prefix}*`, error);
    }
  }

  async ensureLocalEndpoint(spec: LocalEndpointSpec): Promise<void> {
    checkEndpointSpec(spec);
    await this.linkLocks.run(spec.hostIfName, async () => {
      const action = `creating veth ${spec.hostIfName} (peer ${spec.containerIfName})`;
      try {
        // Looked up afresh: a stale bridge ifindex as IFLA_MASTER fails with a bare EINVAL.
        const bridge = (await this.links.byName(spec.bridgeName))?.data.index;
        if (bridge === undefined) throw new BerthError('ERR_DATAPLANE', `${action}: bridge ${spec.bridgeName} does not exist`);
        await this.ensureVeth(spec, bridge);
      } catch (error) {
        throw dataplaneError(action, error);
      }
    });
  }

  async deleteLocalEndpoint(hostIfName: string, containerIfName?: string): Promise<void> {
    checkLinkName(hostIfName, 'veth');
    if (containerIfName !== undefined) checkLinkName(containerIfName, 'veth');
    await this.linkLocks.run(hostIfName, async () => {
      // Deleting either end of a veth deletes both.
      if (await this.removeLink(hostIfName, 'veth')) return;
      if (containerIfName !== undefined) await this.removeLink(containerIfName, 'veth');
    });
  }

  async ensureRemoteEndpoint(vxlanName: string, endpoint: RemoteEndpoint): Promise<void> {
    checkLinkName(vxlanName, 'vxlan');
    ipv4Bytes(endpoint.ip);
    ipv4Bytes(endpoint.vtep);
    macBytes(endpoint.mac);
    const action = `programming endpoint ${endpoint.ip} (${endpoint.mac} via ${endpoint.vtep}) on vxlan ${vxlanName}`;
    await this.onVxlan(action, vxlanName, async (index) => {
      // Both requests are queued at once and the kernel applies them in order: ARP, then FDB.
      await Promise.all([
        this.neighbours.replaceArp(index, { ip: endpoint.ip, mac: endpoint.mac }),
        this.neighbours.replaceFdb(index, { mac: endpoint.mac, vtep: endpoint.vtep }),
      ]);
    });
  }

  async deleteRemoteEndpoint(vxlanName: string, endpoint: { readonly ip?: string; readonly mac: string }): Promise<void> {
    checkLinkName(vxlanName, 'vxlan');
    const ip = endpoint.ip === '' ? undefined : endpoint.ip;
    if (ip !== undefined) ipv4Bytes(ip);
    macBytes(endpoint.mac);
    const action = `removing endpoint ${ip ?? 'without address'} (${endpoint.mac}) from vxlan ${vxlanName}`;
    await this.onVxlan(action, vxlanName, async (index) => {
      await Promise.all([ip === undefined ? undefined : this.neighbours.deleteArp(index, ip), this.neighbours.deleteFdb(index, endpoint.mac)]);
    }, 'gone-is-done');
  }

  async ensureFloodTarget(vxlanName: string, vtep: string): Promise<void> {
    checkLinkName(vxlanName, 'vxlan');
    ipv4Bytes(vtep);
    await this.onVxlan(`adding flood target ${vtep} to vxlan ${vxlanName}`, vxlanName, (index) => this.neighbours.appendFlood(index, vtep));
  }

  async deleteFloodTarget(vxlanName: string, vtep: string): Promise<void> {
    checkLinkName(vxlanName, 'vxlan');
    ipv4Bytes(vtep);
    const action = `removing flood target ${vtep} from vxlan ${vxlanName}`;
    await this.onVxlan(action, vxlanName, (index) => this.neighbours.deleteFdb(index, ZERO_MAC, vtep), 'gone-is-done');
  }

  async listForwarding(vxlanName: string): Promise<ForwardingTable> {
    checkLinkName(vxlanName, 'vxlan');
    try {
      // A dump filtered by a stale ifindex is silently empty, so this looks the device up afresh.
      const link = await this.links.byName(vxlanName);
      const index = link?.data.index;
      if (index === undefined) throw new BerthError('ERR_DATAPLANE', `listing forwarding entries of vxlan ${vxlanName}: no such device`, { details: { errno: 'ENODEV' } });
      this.indexes.remember(vxlanName, index);
      const fdb = await this.neighbours.listFdb(index);
      const neighbours = await this.neighbours.listArp(index);
      return { fdb, neighbours };
    } catch (error) {
      throw dataplaneError(`listing forwarding entries of vxlan ${vxlanName}`, error);
    }
  }

  tuneHost(): Promise<HostTuningReport> {
    return raiseNeighbourThresholds(this.procSysRoot);
  }

  async close(): Promise<void> {
    this.client.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Creates the bridge or brings an existing one to `mtu` and up; resolves with its ifindex. */
  private async ensureBridge(name: string, mtu: number): Promise<number> {
    try {
      let link = await this.links.byName(name);
      if (link === undefined) {
        await this.links.create({ name, linkinfo: bridgeLinkInfo(), mtu, up: true });
        link = await this.links.byName(name);
      } else {
        if (linkKind(link) !== 'bridge') throw foreignLink(name, link, 'bridge');
        await this.converge(link, { mtu, up: true });
      }
      return this.rememberIndex(name, link);
    } catch (error) {
      throw dataplaneError(`creating bridge ${name}`, error);
    }
  }

  /** Creates the VXLAN device as a port of `bridge`, replacing one with other settings (flannel does the same). */
  private async ensureVxlan(name: string, wanted: VxlanSettings, mtu: number, bridge: number): Promise<void> {
    try {
      let link = await this.links.byName(name);
      if (link !== undefined) {
        const current = readVxlanSettings(link);
        if (current === undefined) throw foreignLink(name, link, 'vxlan');
        if (!sameVxlanSettings(current, wanted)) {
          this.indexes.forget(name);
          await this.links.remove(name);
          link = undefined;
        }
      }
      if (link === undefined) {
        await this.links.create({ name, linkinfo: vxlanLinkInfo(wanted), mtu, master: bridge, up: true });
        link = await this.links.byName(name);
      } else {
        await this.converge(link, { mtu, master: bridge, up: true });
      }
      this.rememberIndex(name, link);
    } catch (error) {
      throw dataplaneError(`creating vxlan ${name}`, error);
    }
  }

  private async ensureVeth(spec: LocalEndpointSpec, bridge: number): Promise<void> {
    const host = await this.links.byName(spec.hostIfName);
    if (host === undefined) {
      const linkinfo = vethLinkInfo({ name: spec.containerIfName, mac: spec.mac, mtu: spec.mtu });
      await this.links.create({ name: spec.hostIfName, linkinfo, mtu: spec.mtu, master: bridge, up: true, queues: VETH_QUEUES });
      return;
    }
    if (linkKind(host) !== 'veth') throw foreignLink(spec.hostIfName, host, 'veth');
    await this.converge(host, { mtu: spec.mtu, master: bridge, up: true });
    // Until the engine moves it away, the container end is still here and can be corrected.
    const peer = await this.links.byName(spec.containerIfName);
    if (peer === undefined) return;
    if (linkKind(peer) !== 'veth') throw foreignLink(spec.containerIfName, peer, 'veth');
    await this.converge(peer, { mtu: spec.mtu, address: spec.mac });
  }

  /** Sends one SETLINK with whatever of `wanted` differs from `link`; nothing when all matches. */
  private async converge(link: rt.LinkMessage, wanted: LinkChange): Promise<void> {
    const change: { -readonly [K in keyof LinkChange]: LinkChange[K] } = {};
    if (wanted.mtu !== undefined && link.attrs.mtu !== wanted.mtu) change.mtu = wanted.mtu;
    if (wanted.master !== undefined && link.attrs.master !== wanted.master) change.master = wanted.master;
    if (wanted.up === true && !isUp(link)) change.up = true;
    if (wanted.address !== undefined && (link.attrs.address === undefined || formatMac(link.attrs.address) !== wanted.address.toLowerCase())) change.address = wanted.address;
    if (Object.keys(change).length === 0 || link.data.index === undefined) return;
    await this.links.change(link.data.index, change);
  }

  private async underlayIndex(device: string): Promise<number> {
    let index: number | undefined;
    try {
      index = (await this.links.byName(device))?.data.index;
    } catch (error) {
      throw dataplaneError(`finding underlay device ${device}`, error);
    }
    if (index === undefined) throw new BerthError('ERR_DATAPLANE', `underlay device ${device} does not exist`);
    return index;
  }

  /** Runs `work` with the VXLAN device's ifindex; a missing device fails, or is success for removals. */
  private async onVxlan(action: string, vxlanName: string, work: (index: number) => Promise<unknown>, missing: 'fail' | 'gone-is-done' = 'fail'): Promise<void> {
    try {
      await this.indexes.withIndex(vxlanName, work, () => {
        if (missing === 'fail') throw new BerthError('ERR_DATAPLANE', `${action}: vxlan ${vxlanName} does not exist`, { details: { errno: 'ENODEV' } });
      });
    } catch (error) {
      throw dataplaneError(action, error);
    }
  }

  /** Deletes a link by name; false when it was already gone. */
  private async removeLink(name: string, kind: string): Promise<boolean> {
    this.indexes.forget(name);
    try {
      return await this.links.remove(name);
    } catch (error) {
      throw dataplaneError(`deleting ${kind} ${name}`, error);
    }
  }

  private rememberIndex(name: string, link: rt.LinkMessage | undefined): number {
    const index = link?.data.index;
    if (index === undefined) throw new Error(`${name} vanished right after it was created`);
    this.indexes.remember(name, index);
    return index;
  }
}

function foreignLink(name: string, link: rt.LinkMessage, expected: string): BerthError {
  return new BerthError('ERR_DATAPLANE', `${name} exists and is ${describeKind(linkKind(link))}, not a ${expected}`);
}

function describeKind(kind: string | undefined): string {
  return kind === undefined ? 'a device without a kind' : `a ${kind}`;
}
