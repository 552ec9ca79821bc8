// Kernel object names are limited to 15 bytes; Berth's start with "b" plus a kind, so stale ones can be
// found by prefix: bbr = bridge, bvx = VXLAN device (both per network, by VNI), bve/bvc = the host and
// container ends of an endpoint's veth (by the engine's endpoint ID).
export const BRIDGE_PREFIX = 'bbr';
export const VXLAN_PREFIX = 'bvx';
export const HOST_VETH_PREFIX = 'bve';
export const CONTAINER_VETH_PREFIX = 'bvc';

export function overlayNames(vni: number): { bridgeName: string; vxlanName: string } {
  return { bridgeName: `${BRIDGE_PREFIX}${vni}`, vxlanName: `${VXLAN_PREFIX}${vni}` };
}

/** The VNI a bridge or VXLAN device name carries, if it is one of Berth's. */
export function vniOfDevice(name: string): number | undefined {
  const match = /^(?:bbr|bvx)(\d{1,8})$/.exec(name);
  return match ? Number(match[1]) : undefined;
}

export function endpointInterfaceNames(endpointId: string): { hostIfName: string; containerIfName: string } {
  const short = endpointId.slice(0, 11);
  return { hostIfName: `${HOST_VETH_PREFIX}${short}`, containerIfName: `${CONTAINER_VETH_PREFIX}${short}` };
}

/**
 * A locally administered MAC derived from the endpoint's address: unique within a network (addresses are),
 * stable across agent restarts, so remote forwarding entries stay right without extra state.
 */
export function macForAddress(address: number): string {
  const bytes = [0x02, 0xbe, address >>> 24, (address >>> 16) & 255, (address >>> 8) & 255, address & 255];
  return bytes.map((byte) => byte.toString(16).padStart(2, '0')).join(':');
}
