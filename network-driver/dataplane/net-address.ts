// Text <-> wire forms of the addresses netlink carries: IPv4 in network order, MACs as 6 bytes.
import { isIPv4 } from 'node:net';
import { BerthError } from '../../plugins/errors/berth-error.js';

/** The all-zeros MAC: an FDB entry under it is a flood (head-end replication) target. */
export const ZERO_MAC = '00:00:00:00:00:00';

const MAC_PATTERN = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export function ipv4Bytes(ip: string): Buffer {
  if (!isIPv4(ip)) throw new BerthError('ERR_DATAPLANE', `invalid ipv4 address ${JSON.stringify(ip)}`);
  return Buffer.from(ip.split('.').map(Number));
}

export function formatIpv4(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 4)).join('.');
}

export function macBytes(mac: string): Buffer {
  if (!MAC_PATTERN.test(mac)) throw new BerthError('ERR_DATAPLANE', `invalid mac address ${JSON.stringify(mac)}`);
  return Buffer.from(mac.replaceAll(':', ''), 'hex');
}

/** Lower case with colons, the form `ip` and `bridge` print. */
export function formatMac(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join(':');
}
