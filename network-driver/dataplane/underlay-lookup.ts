// Finds the underlay device: the one holding a given IPv4 address, or the one the default route
// leaves through. Its MTU sizes the overlay (overlayMtu) and its address is the VTEP.
import { AttrStream, rt } from 'netlink';
import { BerthError } from '../../plugins/errors/berth-error.js';
import type { UnderlayInfo } from './dataplane.js';
import type { LinkOps } from './link-ops.js';
import { formatIpv4 } from './net-address.js';
import type { RtnlClient } from './rtnl-client.js';

const AF_INET = 2;
const RT_TABLE_MAIN = 254;
/** struct rtnexthop: u16 len, u8 flags, u8 hops, s32 ifindex. */
const RTNEXTHOP_IFINDEX_OFFSET = 4;

export class UnderlayLookup {
  constructor(
    private readonly client: RtnlClient,
    private readonly links: LinkOps,
  ) {}

  async find(address?: string): Promise<UnderlayInfo> {
    const addresses = await this.ipv4Addresses();
    let index: number;
    if (address === undefined) {
      index = await this.defaultRouteIndex();
    } else {
      const holder = addresses.find((entry) => entry.address === address);
      if (holder === undefined) throw new BerthError('ERR_DATAPLANE', `underlay address ${address} is not on any device`);
      index = holder.index;
    }
    const link = await this.links.byIndex(index);
    if (link?.attrs.ifname === undefined || link.attrs.mtu === undefined) {
      throw new BerthError('ERR_DATAPLANE', `underlay device ${index} vanished while it was looked up`);
    }
    const own = address ?? addresses.find((entry) => entry.index === index && !entry.secondary)?.address;
    return own === undefined ? { device: link.attrs.ifname, mtu: link.attrs.mtu } : { device: link.attrs.ifname, mtu: link.attrs.mtu, address: own };
  }

  private async ipv4Addresses(): Promise<{ index: number; address: string; secondary: boolean }[]> {
    const out = new AttrStream();
    rt.formatAddressMessage({ kind: 'address', data: { family: AF_INET }, attrs: {} }, out);
    const found: { index: number; address: string; secondary: boolean }[] = [];
    for (const message of await this.client.dump(rt.MessageType.GETADDR, out.bufs)) {
      if (message.kind !== 'address' || message.data.family !== AF_INET || message.data.index === undefined) continue;
      // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it on point-to-point links.
      const local = message.attrs.local ?? message.attrs.address;
      if (local?.length !== 4) continue;
      found.push({ index: message.data.index, address: formatIpv4(local), secondary: message.data.flags?.secondary === true });
    }
    return found;
  }

  /** The output device of the main table's IPv4 default route with the lowest metric. */
  private async defaultRouteIndex(): Promise<number> {
    const out = new AttrStream();
    rt.formatRouteMessage({ kind: 'route', data: { family: AF_INET }, attrs: {} }, out);
    let best: { index: number; metric: number } | undefined;
    for (const message of await this.client.dump(rt.MessageType.GETROUTE, out.bufs)) {
      if (message.kind !== 'route' || message.data.family !== AF_INET || message.data.dstLen !== 0) continue;
      if ((message.attrs.table ?? message.data.table) !== RT_TABLE_MAIN) continue;
      const index = message.attrs.oif ?? firstNexthopIndex(message.attrs.multipath);
      const metric = message.attrs.priority ?? 0;
      if (index !== undefined && (best === undefined || metric < best.metric)) best = { index, metric };
    }
    if (best === undefined) throw new BerthError('ERR_DATAPLANE', 'no ipv4 default route to find the underlay device by; give the underlay address');
    return best.index;
  }
}

function firstNexthopIndex(multipath: Buffer | undefined): number | undefined {
  if (multipath === undefined || multipath.length < RTNEXTHOP_IFINDEX_OFFSET + 4) return undefined;
  return multipath.readInt32LE(RTNEXTHOP_IFINDEX_OFFSET);
}
