// RTM_*LINK requests: look links up, create, change and delete them. Errors are NetlinkErrors;
// the dataplane translates them, naming the link.
import { AttrStream, FlagsNew, ifla, rt } from 'netlink';
import { macBytes } from './net-address.js';
import { isErrno } from './netlink-error.js';
import type { RtnlClient } from './rtnl-client.js';

/** What a link should become; only the fields given are sent. */
export interface LinkChange {
  readonly mtu?: number;
  /** ifindex of the bridge to enslave the link to. */
  readonly master?: number;
  readonly up?: boolean;
  /** MAC address, `xx:xx:xx:xx:xx:xx`. */
  readonly address?: string;
}

export interface NewLink extends LinkChange {
  readonly name: string;
  /** Encoded IFLA_LINKINFO (see link-info.ts). */
  readonly linkinfo: Buffer;
  /** Transmit and receive queues (IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES); the kind's default when absent. */
  readonly queues?: number;
}

export class LinkOps {
  constructor(private readonly client: RtnlClient) {}

  /** The link named `name`, or undefined when there is none. */
  async byName(name: string): Promise<rt.LinkMessage | undefined> {
    return this.get({}, { ifname: name });
  }

  async byIndex(index: number): Promise<rt.LinkMessage | undefined> {
    return this.get({ index }, {});
  }

  async list(): Promise<rt.LinkMessage[]> {
    const messages = await this.client.dump(rt.MessageType.GETLINK, body({}, {}));
    return messages.filter((message): message is rt.LinkMessage => message.kind === 'link');
  }

  /** Creates a link; fails with EEXIST when the name is taken. */
  async create(link: NewLink): Promise<void> {
    const attrs: ifla.LinkAttrs = { ifname: link.name, linkinfo: link.linkinfo };
    if (link.mtu !== undefined) attrs.mtu = link.mtu;
    if (link.master !== undefined) attrs.master = link.master;
    if (link.queues !== undefined) {
      attrs.numTxQueues = link.queues;
      attrs.numRxQueues = link.queues;
    }
    await this.client.request(rt.MessageType.NEWLINK, body(upFlags(link.up), attrs), FlagsNew.CREATE | FlagsNew.EXCL);
  }

  async change(index: number, change: LinkChange): Promise<void> {
    const attrs: ifla.LinkAttrs = {};
    if (change.mtu !== undefined) attrs.mtu = change.mtu;
    if (change.master !== undefined) attrs.master = change.master;
    if (change.address !== undefined) attrs.address = macBytes(change.address);
    await this.client.request(rt.MessageType.SETLINK, body({ index, ...upFlags(change.up) }, attrs));
  }

  /** Deletes the link named `name`; false when there was none. */
  async remove(name: string): Promise<boolean> {
    try {
      await this.client.request(rt.MessageType.DELLINK, body({}, { ifname: name }));
      return true;
    } catch (error) {
      if (isErrno(error, 'ENODEV')) return false;
      throw error;
    }
  }

  private async get(data: rt.Link, attrs: ifla.LinkAttrs): Promise<rt.LinkMessage | undefined> {
    try {
      const [link] = await this.client.request(rt.MessageType.GETLINK, body(data, attrs));
      return link?.kind === 'link' ? link : undefined;
    } catch (error) {
      if (isErrno(error, 'ENODEV')) return undefined;
      throw error;
    }
  }
}

function upFlags(up: boolean | undefined): rt.Link {
  if (up === undefined) return {};
  return { flags: up ? { up: true } : {}, change: { up: true } };
}

function body(data: rt.Link, attrs: ifla.LinkAttrs): Uint8Array[] {
  const out = new AttrStream();
  rt.formatLinkMessage({ kind: 'link', data, attrs }, out);
  return out.bufs;
}

export function isUp(link: rt.LinkMessage): boolean {
  return link.data.flags?.up === true;
}
