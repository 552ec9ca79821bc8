import { expect } from 'chai';
import { ifla, rt } from 'netlink';
import { isBerthError } from '../../plugins/errors/berth-error.js';
import { linkKind, readVxlanSettings, sameVxlanSettings, vethLinkInfo, vxlanLinkInfo, type VxlanSettings } from '../../network-driver/dataplane/link-info.js';
import { formatIpv4, formatMac, ipv4Bytes, macBytes } from '../../network-driver/dataplane/net-address.js';
import { NetlinkError } from '../../network-driver/dataplane/netlink-error.js';
import { overlayMtu } from '../../network-driver/dataplane/overlay-mtu.js';
import { checkOverlaySpec } from '../../network-driver/dataplane/spec-validation.js';

const link = (linkinfo: Buffer): rt.LinkMessage => ({ kind: 'link', data: {}, attrs: { linkinfo } });

describe('dataplane encoding', () => {
  it('round-trips VXLAN settings through IFLA_LINKINFO, port in network order', () => {
    const settings: VxlanSettings = { vni: 4097, port: 4789, local: '198.19.77.1', link: 3, learning: false, proxy: true };
    const encoded = vxlanLinkInfo(settings);
    expect(readVxlanSettings(link(encoded))).to.deep.equal(settings);
    expect(linkKind(link(encoded))).to.equal('vxlan');
    const data = ifla.parseInfo(encoded).data;
    expect(data === undefined ? undefined : ifla.parseVxlan(data).port).to.deep.equal(Buffer.from([0x12, 0xb5]));

    const minimal: VxlanSettings = { vni: 1, port: 8472, learning: true, proxy: false };
    expect(readVxlanSettings(link(vxlanLinkInfo(minimal)))).to.deep.equal(minimal);
    expect(sameVxlanSettings(settings, { ...settings })).to.equal(true);
    expect(sameVxlanSettings(settings, { ...settings, port: 4790 })).to.equal(false);
    expect(sameVxlanSettings(minimal, { ...minimal, local: '198.19.77.1' })).to.equal(false);
  });

  it('nests the veth peer as a full ifinfomsg with its name, MAC, MTU and one queue each way', () => {
    const info = ifla.parseInfo(vethLinkInfo({ name: 'bvc1', mac: '02:42:0A:00:00:02', mtu: 1410 }));
    expect(info.kind).to.equal('veth');
    const peer = info.data === undefined ? undefined : ifla.parseVethInfo(info.data).peer;
    if (peer === undefined) throw new Error('no VETH_INFO_PEER');
    const attrs = ifla.parseLinkAttrs(peer.subarray(rt.__LENGTH_Link));
    expect(attrs.ifname).to.equal('bvc1');
    expect(attrs.mtu).to.equal(1410);
    expect(attrs.address === undefined ? undefined : formatMac(attrs.address)).to.equal('02:42:0a:00:00:02');
    expect([attrs.numTxQueues, attrs.numRxQueues]).to.deep.equal([1, 1]);
  });

  it('converts addresses and refuses malformed ones', () => {
    expect(formatIpv4(ipv4Bytes('10.77.0.255'))).to.equal('10.77.0.255');
    expect(formatMac(macBytes('AA:bb:00:01:02:ff'))).to.equal('aa:bb:00:01:02:ff');
    for (const bad of ['10.0.0', '10.0.0.256', '::1', '']) expect(() => ipv4Bytes(bad), bad).to.throw(/invalid ipv4 address/);
    for (const bad of ['02:42:0a:00:00', '02-42-0a-00-00-02', 'zz:42:0a:00:00:02']) expect(() => macBytes(bad), bad).to.throw(/invalid mac address/);
  });

  it('checks overlay specs before they reach the kernel', () => {
    const spec = { bridgeName: 'bbr1', vxlanName: 'bvx1', vni: 1, port: 4789, mtu: 1450 };
    expect(() => checkOverlaySpec(spec)).to.not.throw();
    const refusals: Array<[object, RegExp]> = [
      [{ vni: 16777216 }, /^invalid vni of vxlan bvx1: 16777216 is not an integer from 1 to 16777215$/],
      [{ port: 0 }, /udp port/],
      [{ mtu: 67 }, /mtu/],
      [{ vxlanName: 'a-name-of-16-byt' }, /^invalid vxlan name "a-name-of-16-byt"/],
      [{ bridgeName: 'br 0' }, /invalid bridge name/],
      [{ localVtep: '198.19.77' }, /invalid ipv4 address/],
    ];
    for (const [change, message] of refusals) {
      let caught: unknown;
      try {
        checkOverlaySpec({ ...spec, ...change });
      } catch (error) {
        caught = error;
      }
      expect(isBerthError(caught, 'ERR_DATAPLANE'), JSON.stringify(change)).to.equal(true);
      expect((caught as Error).message).to.match(message);
    }
  });

  it('names kernel errors by errno and derives the overlay MTU', () => {
    const error = new NetlinkError(-17);
    expect(error.code).to.equal('EEXIST');
    expect(error.errno).to.equal(17);
    expect(error.message).to.equal('file already exists (EEXIST)');
    expect(overlayMtu(1500)).to.equal(1450);
    expect(overlayMtu(9000)).to.equal(8950);
  });
});
