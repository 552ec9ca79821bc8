// IFLA_LINKINFO, the nested attribute that says what kind a link is and carries its kind's settings
// (IFLA_INFO_KIND, IFLA_INFO_DATA). The netlink package models the inner attribute sets (vxlan,
// veth) but leaves the nesting to us, so each level is encoded to bytes and handed to the next.
import { ifla, rt } from 'netlink';
import { encodeAttributes } from './attr-encoding.js';
import { formatIpv4, ipv4Bytes, macBytes } from './net-address.js';

/** The VXLAN settings Berth sets and compares; anything else stays at the kernel default. */
export interface VxlanSettings {
  readonly vni: number;
  readonly port: number;
  /** Source address (IFLA_VXLAN_LOCAL). */
  readonly local?: string;
  /** ifindex of the underlay device (IFLA_VXLAN_LINK). */
  readonly link?: number;
  /** Default remote or multicast group (IFLA_VXLAN_GROUP); Berth never sets one. */
  readonly group?: string;
  readonly learning: boolean;
  readonly proxy: boolean;
}

export interface VethPeer {
  readonly name: string;
  readonly mac: string;
  readonly mtu: number;
}

export function bridgeLinkInfo(): Buffer {
  return encodeAttributes(ifla.formatInfo({ kind: 'bridge' }));
}

export function vxlanLinkInfo(settings: VxlanSettings): Buffer {
  const port = Buffer.alloc(2);
  port.writeUInt16BE(settings.port); // IFLA_VXLAN_PORT is in network order
  const data: ifla.Vxlan = {
    id: settings.vni,
    port,
    learning: settings.learning ? 1 : 0,
    proxy: settings.proxy ? 1 : 0,
  };
  if (settings.local !== undefined) data.local = ipv4Bytes(settings.local);
  if (settings.link !== undefined) data.link = settings.link;
  if (settings.group !== undefined) data.group = ipv4Bytes(settings.group);
  return encodeAttributes(ifla.formatInfo({ kind: 'vxlan', data: encodeAttributes(ifla.formatVxlan(data)) }));
}

/**
 * Queues of each veth end, given explicitly. Without them the kernel gives a veth one queue per CPU and then
 * cuts the active ones down to one, waiting for an RCU grace period while it holds the rtnl lock, which every
 * link, FDB and neighbour change of the host waits for: with many containers starting at once that wait
 * dominates. One queue is what a veth ends up with anyway.
 */
export const VETH_QUEUES = 1;

/** VETH_INFO_PEER holds a whole ifinfomsg followed by the peer's link attributes. */
export function vethLinkInfo(peer: VethPeer): Buffer {
  const attrs = { ifname: peer.name, address: macBytes(peer.mac), mtu: peer.mtu, numTxQueues: VETH_QUEUES, numRxQueues: VETH_QUEUES };
  const peerMessage = Buffer.concat([rt.formatLink({}), encodeAttributes(ifla.formatLinkAttrs(attrs))]);
  return encodeAttributes(ifla.formatInfo({ kind: 'veth', data: encodeAttributes(ifla.formatVethInfo({ peer: peerMessage })) }));
}

/** `bridge`, `vxlan`, `veth`, ...; undefined for links without a kind (physical devices, lo). */
export function linkKind(link: rt.LinkMessage): string | undefined {
  return link.attrs.linkinfo === undefined ? undefined : ifla.parseInfo(link.attrs.linkinfo).kind;
}

/** The settings of a VXLAN link as the kernel reports them; undefined for other kinds. */
export function readVxlanSettings(link: rt.LinkMessage): VxlanSettings | undefined {
  if (link.attrs.linkinfo === undefined) return undefined;
  const info = ifla.parseInfo(link.attrs.linkinfo);
  if (info.kind !== 'vxlan' || info.data === undefined) return undefined;
  const data = ifla.parseVxlan(info.data);
  const settings: { -readonly [K in keyof VxlanSettings]: VxlanSettings[K] } = {
    vni: data.id ?? 0,
    port: data.port?.length === 2 ? data.port.readUInt16BE(0) : 0,
    learning: (data.learning ?? 0) !== 0,
    proxy: (data.proxy ?? 0) !== 0,
  };
  // The kernel omits unset addresses and a zero link; older kernels may send them as zeros.
  if (data.local !== undefined && data.local.some((byte) => byte !== 0)) settings.local = formatIpv4(data.local);
  if (data.link !== undefined && data.link !== 0) settings.link = data.link;
  if (data.group !== undefined && data.group.some((byte) => byte !== 0)) settings.group = formatIpv4(data.group);
  return settings;
}

export function sameVxlanSettings(a: VxlanSettings, b: VxlanSettings): boolean {
  return a.vni === b.vni && a.port === b.port && a.local === b.local && a.link === b.link && a.group === b.group && a.learning === b.learning && a.proxy === b.proxy;
}
