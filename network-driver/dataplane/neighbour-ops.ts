// RTM_*NEIGH requests on a VXLAN device, in the two families it answers to:
// - AF_BRIDGE with NTF_SELF: the device's own FDB, MAC -> remote VTEP (`bridge fdb ... self`);
// - AF_INET: the ARP table the device answers requests from when `proxy` is on (`ip neigh`).
// Entries are NUD_PERMANENT so neither ageing nor garbage collection removes them.
import { AttrStream, FlagsNew, rt } from 'netlink';
import { formatIpv4, formatMac, ipv4Bytes, macBytes, ZERO_MAC } from './net-address.js';
import { isErrno } from './netlink-error.js';
import type { RtnlClient } from './rtnl-client.js';

const AF_INET = 2;
const AF_BRIDGE = 7;
const IPV4_BYTES = 4;
const MAC_BYTES = 6;

export interface FdbEntry {
  readonly mac: string;
  readonly vtep: string;
}

export interface ArpEntry {
  readonly ip: string;
  readonly mac: string;
}

export class NeighbourOps {
  constructor(private readonly client: RtnlClient) {}

  /** `bridge fdb replace MAC dev DEV self dst VTEP permanent`. */
  async replaceFdb(ifindex: number, entry: FdbEntry): Promise<void> {
    await this.client.request(rt.MessageType.NEWNEIGH, fdbBody(ifindex, entry.mac, entry.vtep), FlagsNew.CREATE | FlagsNew.REPLACE);
  }

  /**
   * `bridge fdb append 00:00:00:00:00:00 dev DEV self dst VTEP permanent`: adds one more destination
   * to the all-zeros entry; the kernel treats an existing destination as done.
   */
  async appendFlood(ifindex: number, vtep: string): Promise<void> {
    await this.client.request(rt.MessageType.NEWNEIGH, fdbBody(ifindex, ZERO_MAC, vtep), FlagsNew.CREATE | FlagsNew.APPEND);
  }

  /** Deletes the FDB entry for `mac` (every destination), or only destination `vtep`; false when absent. */
  async deleteFdb(ifindex: number, mac: string, vtep?: string): Promise<boolean> {
    return absentIsFalse(this.client.request(rt.MessageType.DELNEIGH, fdbBody(ifindex, mac, vtep)));
  }

  /** `ip neigh replace IP lladdr MAC dev DEV nud permanent`. */
  async replaceArp(ifindex: number, entry: ArpEntry): Promise<void> {
    await this.client.request(rt.MessageType.NEWNEIGH, arpBody(ifindex, entry.ip, entry.mac), FlagsNew.CREATE | FlagsNew.REPLACE);
  }

  async deleteArp(ifindex: number, ip: string): Promise<boolean> {
    return absentIsFalse(this.client.request(rt.MessageType.DELNEIGH, arpBody(ifindex, ip)));
  }

  /** Permanent FDB entries of the device itself, one per destination (not the bridge's entries for the port). */
  async listFdb(ifindex: number): Promise<FdbEntry[]> {
    // Given an ifinfomsg rather than an ndmsg, the kernel reads its ifindex as "this bridge port
    // only" (rtnl_fdb_dump); an ndmsg would dump the FDB of every device.
    const out = new AttrStream();
    out.emit(rt.formatLink({ family: AF_BRIDGE, index: ifindex }));
    const entries: FdbEntry[] = [];
    for (const message of await this.client.dump(rt.MessageType.GETNEIGH, out.bufs)) {
      if (!isPermanent(message, AF_BRIDGE, ifindex) || message.data.flags?.master === true) continue;
      const { lladdr, dst } = message.attrs;
      if (lladdr?.length === MAC_BYTES && dst?.length === IPV4_BYTES) entries.push({ mac: formatMac(lladdr), vtep: formatIpv4(dst) });
    }
    return entries;
  }

  async listArp(ifindex: number): Promise<ArpEntry[]> {
    // NDA_IFINDEX makes the kernel filter the dump by device (neigh_dump_table).
    const index = Buffer.alloc(4);
    index.writeUInt32LE(ifindex);
    const out = new AttrStream();
    rt.formatNeighborMessage({ kind: 'neighbor', data: { family: AF_INET }, attrs: { ifindex: index } }, out);
    const entries: ArpEntry[] = [];
    for (const message of await this.client.dump(rt.MessageType.GETNEIGH, out.bufs)) {
      if (!isPermanent(message, AF_INET, ifindex)) continue;
      const { lladdr, dst } = message.attrs;
      if (lladdr?.length === MAC_BYTES && dst?.length === IPV4_BYTES) entries.push({ ip: formatIpv4(dst), mac: formatMac(lladdr) });
    }
    return entries;
  }
}

function fdbBody(ifindex: number, mac: string, vtep?: string): Uint8Array[] {
  const attrs: rt.NeighborAttrs = { lladdr: macBytes(mac) };
  if (vtep !== undefined) attrs.dst = ipv4Bytes(vtep);
  return body({ family: AF_BRIDGE, ifindex, state: { permanent: true }, flags: { self: true } }, attrs);
}

function arpBody(ifindex: number, ip: string, mac?: string): Uint8Array[] {
  const attrs: rt.NeighborAttrs = { dst: ipv4Bytes(ip) };
  if (mac !== undefined) attrs.lladdr = macBytes(mac);
  return body({ family: AF_INET, ifindex, state: { permanent: true } }, attrs);
}

function body(data: rt.Neighbor, attrs: rt.NeighborAttrs): Uint8Array[] {
  const out = new AttrStream();
  rt.formatNeighborMessage({ kind: 'neighbor', data, attrs }, out);
  return out.bufs;
}

function isPermanent(message: rt.Message, family: number, ifindex: number): message is rt.NeighborMessage {
  return message.kind === 'neighbor' && message.data.family === family && message.data.ifindex === ifindex && message.data.state?.permanent === true;
}

async function absentIsFalse(request: Promise<unknown>): Promise<boolean> {
  try {
    await request;
    return true;
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return false;
    throw error;
  }
}
