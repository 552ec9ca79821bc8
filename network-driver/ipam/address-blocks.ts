import { containsAddress, lastAddress, subnetSize, type Ipv4Subnet } from './ipv4.js';

/**
 * How a network's addresses are split among hosts. The allocation range (`--ip-range`, else the subnet) is cut
 * into aligned blocks; a host claims a block once (one compare-and-swap) and then allocates inside it from
 * memory, so most container starts need no cluster round trip and hosts never contend for an address.
 */
export interface AddressPlan {
  readonly subnet: Ipv4Subnet;
  readonly range: Ipv4Subnet;
  /** Addresses never handed to an endpoint: the gateway (network and broadcast addresses are excluded too). */
  readonly reserved: ReadonlySet<number>;
  readonly blockSize: number;
}

/** Addresses in use, asked one at a time (a Set of them is one). */
export interface AddressSet {
  has(address: number): boolean;
}

const MIN_BLOCK = 4;
const MAX_BLOCK = 64;

/** About 16 blocks for small ranges, at most 64 addresses each for large ones, never more than the range. */
export function blockSizeFor(range: Ipv4Subnet): number {
  const size = subnetSize(range);
  let block = MIN_BLOCK;
  while (block < MAX_BLOCK && block * 16 < size) block *= 2;
  return Math.min(block, size);
}

export function makePlan(subnet: Ipv4Subnet, range: Ipv4Subnet, gateway: number): AddressPlan {
  return { subnet, range, reserved: new Set([gateway]), blockSize: blockSizeFor(range) };
}

/** Whether an address may be given to an endpoint (inside the subnet, not the network, broadcast or gateway address). */
export function isAssignable(plan: AddressPlan, address: number): boolean {
  if (!containsAddress(plan.subnet, address)) return false;
  if (plan.subnet.prefix < 31 && (address === plan.subnet.base || address === lastAddress(plan.subnet))) return false;
  return !plan.reserved.has(address);
}

/** Start addresses of every block of the range, in order. */
export function blockStarts(plan: AddressPlan): number[] {
  const starts: number[] = [];
  for (let start = plan.range.base; start <= lastAddress(plan.range); start += plan.blockSize) starts.push(start);
  return starts;
}

/** The block an address falls in. */
export function blockOf(plan: AddressPlan, address: number): number {
  return plan.range.base + Math.floor((address - plan.range.base) / plan.blockSize) * plan.blockSize;
}

/**
 * First assignable, unused address of a block; from the end when `fromEnd` (used when borrowing another
 * host's block, so the owner, which allocates from the start, rarely meets the borrower).
 */
export function freeAddressInBlock(plan: AddressPlan, start: number, used: AddressSet, fromEnd = false): number | undefined {
  for (let offset = 0; offset < plan.blockSize; offset++) {
    const address = fromEnd ? start + plan.blockSize - 1 - offset : start + offset;
    if (isAssignable(plan, address) && !used.has(address)) return address;
  }
  return undefined;
}
