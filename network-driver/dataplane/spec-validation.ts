// Checks the control plane's requests before anything reaches the kernel, so a bad value fails
// with a message naming it rather than as an EINVAL from deep inside a netlink request.
import { BerthError } from '../../plugins/errors/berth-error.js';
import type { LocalEndpointSpec, OverlaySpec } from './dataplane.js';
import { ipv4Bytes, macBytes } from './net-address.js';

/** IFNAMSIZ is 16 including the terminating NUL; the kernel also refuses '/', ':' and spaces. */
const LINK_NAME = /^[A-Za-z0-9_.-]{1,15}$/;
const MAX_VNI = 0xffffff;
const MIN_MTU = 68;
const MAX_MTU = 65535;

export function checkLinkName(name: string, what: string): void {
  if (!LINK_NAME.test(name) || name === '.' || name === '..') {
    throw new BerthError('ERR_DATAPLANE', `invalid ${what} name ${JSON.stringify(name)}: 1 to 15 letters, digits, '_', '.' or '-'`);
  }
}

export function checkOverlaySpec(spec: OverlaySpec): void {
  checkLinkName(spec.bridgeName, 'bridge');
  checkLinkName(spec.vxlanName, 'vxlan');
  if (spec.underlayDevice !== undefined) checkLinkName(spec.underlayDevice, 'underlay device');
  checkRange(spec.vni, 1, MAX_VNI, `vni of vxlan ${spec.vxlanName}`);
  checkRange(spec.port, 1, 65535, `udp port of vxlan ${spec.vxlanName}`);
  checkRange(spec.mtu, MIN_MTU, MAX_MTU, `mtu of vxlan ${spec.vxlanName}`);
  if (spec.localVtep !== undefined) ipv4Bytes(spec.localVtep);
}

export function checkEndpointSpec(spec: LocalEndpointSpec): void {
  checkLinkName(spec.hostIfName, 'veth');
  checkLinkName(spec.containerIfName, 'veth');
  checkLinkName(spec.bridgeName, 'bridge');
  checkRange(spec.mtu, MIN_MTU, MAX_MTU, `mtu of veth ${spec.hostIfName}`);
  macBytes(spec.mac);
}

function checkRange(value: number, min: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new BerthError('ERR_DATAPLANE', `invalid ${what}: ${value} is not an integer from ${min} to ${max}`);
  }
}
