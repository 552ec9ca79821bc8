// IPv4 address math for the IPAM. Parsing goes through ipaddr.js in its strict four-part decimal form:
// the `ip` package's loose parsing of octal/hex/short forms is what its advisories (CVE-2023-42282,
// CVE-2024-29415) were about, and an address that reaches the kernel or the store must mean one thing.
// Arithmetic is on unsigned 32-bit numbers, which keeps block and range math exact and cheap.
import ipaddr from 'ipaddr.js';
import { BerthError } from '../../plugins/errors/berth-error.js';

export interface Ipv4Subnet {
  /** Network address as an unsigned 32-bit number. */
  readonly base: number;
  readonly prefix: number;
}

/** Parses a dotted-quad IPv4 address ("10.0.0.5"); throws ERR_INVALID_OPTION naming `what`. */
export function parseIpv4(text: string, what = 'address'): number {
  if (!ipaddr.IPv4.isValidFourPartDecimal(text)) throw new BerthError('ERR_INVALID_OPTION', `${what} ${JSON.stringify(text)} is not an IPv4 address`);
  const bytes = ipaddr.IPv4.parse(text).toByteArray();
  return ((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

/** Parses "10.0.0.0/24"; the address must be the network address (no host bits). */
export function parseSubnet(text: string, what = 'subnet'): Ipv4Subnet {
  const slash = text.indexOf('/');
  const prefixText = slash < 0 ? '' : text.slice(slash + 1);
  if (slash < 0 || !/^\d{1,2}$/.test(prefixText)) throw new BerthError('ERR_INVALID_OPTION', `${what} ${JSON.stringify(text)} is not an IPv4 CIDR such as 10.20.0.0/24`);
  const prefix = Number(prefixText);
  if (prefix > 32) throw new BerthError('ERR_INVALID_OPTION', `${what} ${JSON.stringify(text)} has a prefix longer than 32`);
  const base = parseIpv4(text.slice(0, slash), what);
  if ((base & ~maskOf(prefix)) >>> 0 !== 0) {
    throw new BerthError('ERR_INVALID_OPTION', `${what} ${text} has host bits set; did you mean ${formatSubnet({ base: (base & maskOf(prefix)) >>> 0, prefix })}?`);
  }
  return { base, prefix };
}

/** Parses "10.0.0.5/24" (an address with its prefix, as the engine sends gateways) into the address. */
export function parseAddressWithPrefix(text: string, what = 'address'): { address: number; prefix: number } {
  const slash = text.indexOf('/');
  if (slash < 0) return { address: parseIpv4(text, what), prefix: 32 };
  const prefix = Number(text.slice(slash + 1));
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) throw new BerthError('ERR_INVALID_OPTION', `${what} ${JSON.stringify(text)} has an invalid prefix`);
  return { address: parseIpv4(text.slice(0, slash), what), prefix };
}

export function formatSubnet(subnet: Ipv4Subnet): string {
  return `${formatIpv4(subnet.base)}/${subnet.prefix}`;
}

export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function subnetSize(subnet: Ipv4Subnet): number {
  return 2 ** (32 - subnet.prefix);
}

/** Last address of the subnet (its broadcast address). */
export function lastAddress(subnet: Ipv4Subnet): number {
  return subnet.base + subnetSize(subnet) - 1;
}

export function containsAddress(subnet: Ipv4Subnet, address: number): boolean {
  return address >= subnet.base && address <= lastAddress(subnet);
}

export function containsSubnet(outer: Ipv4Subnet, inner: Ipv4Subnet): boolean {
  return inner.prefix >= outer.prefix && containsAddress(outer, inner.base);
}

export function subnetsOverlap(a: Ipv4Subnet, b: Ipv4Subnet): boolean {
  return containsAddress(a, b.base) || containsAddress(b, a.base);
}
