/**
 * Bytes VXLAN adds over an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
 * Flannel derives its MTU the same way; Docker's fixed 1450 breaks on underlays below 1500.
 */
export const VXLAN_IPV4_OVERHEAD = 50;

/** MTU for an overlay whose packets leave through an IPv4 underlay device of `underlayMtu`. */
export function overlayMtu(underlayMtu: number): number {
  return underlayMtu - VXLAN_IPV4_OVERHEAD;
}
