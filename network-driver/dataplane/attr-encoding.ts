import { AttrStream, type StreamData } from 'netlink';

/**
 * Flattens an attribute stream of the netlink package into bytes. The package types nested
 * attributes it does not model (IFLA_LINKINFO, IFLA_INFO_DATA, VETH_INFO_PEER) as plain Buffers,
 * so nested streams are encoded with this first and handed over as bytes.
 */
export function encodeAttributes(data: StreamData): Buffer {
  const out = new AttrStream();
  out.emit(data);
  return Buffer.concat(out.bufs);
}
