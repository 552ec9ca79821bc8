import { BerthError } from '../../plugins/errors/berth-error.js';

/*
 * The btrfs send stream (btrfs-progs send.h, versions 1 and 2): a 17-byte header, the magic
 * "btrfs-stream\0" and a le32 version, then commands. A command is a 10-byte header (le32 payload
 * length, le16 command, le32 crc32c of the header with a zero crc field followed by the payload)
 * and a payload of attributes (le16 type, le16 length, value). The first command creates the
 * subvolume (SUBVOL, or SNAPSHOT for an incremental stream) and names it; END closes the stream.
 */
const MAGIC = Buffer.from('btrfs-stream\0', 'latin1');
const STREAM_HEADER_BYTES = MAGIC.length + 4;
const COMMAND_HEADER_BYTES = 10;
const CRC_OFFSET = 6;
const ATTRIBUTE_HEADER_BYTES = 4;
const COMMAND_SUBVOL = 1;
const COMMAND_SNAPSHOT = 2;
const COMMAND_END = 21;
const ATTRIBUTE_PATH = 15;
/** The first command holds a name, uuids and transids; anything this large is not a send stream. */
const MAX_FIRST_COMMAND_BYTES = 64 * 1024;

/**
 * Passes a send stream of one subvolume through, renaming the subvolume it creates from `expected`
 * to `replacement`: `btrfs receive` creates the subvolume under the name the stream gives, and a
 * received (read-only) subvolume can never move to another directory afterwards, so the name it
 * is received under must already be a temporary one in its final directory. Throws
 * ERR_REPLICATION, its message starting with `what`, when the stream is not one whole snapshot
 * named `expected`: another name, a second subvolume, bytes after END, or an end before END (a
 * truncated stream that btrfs receive would otherwise finish as if complete).
 */
export async function* renameSendStream(source: AsyncIterable<Buffer>, expected: string, replacement: string, what: string): AsyncGenerator<Buffer> {
  const refuse = (reason: string): BerthError => new BerthError('ERR_REPLICATION', `${what}: ${reason}`);
  let pending = Buffer.alloc(0);
  let renamed = false;
  /** Payload bytes of the current command still to pass before the next command header. */
  let skip = 0;
  let ended = false;
  for await (const chunk of source) {
    let input = chunk;
    if (!renamed) {
      pending = Buffer.concat([pending, input]);
      const first = renameFirstCommand(pending, expected, replacement, refuse);
      if (first === undefined) continue;
      renamed = true;
      yield first.output;
      input = pending.subarray(first.consumed);
      pending = Buffer.alloc(0);
    }
    // Only command headers are read from here on; payloads pass untouched.
    let offset = 0;
    while (offset < input.length) {
      if (skip > 0) {
        const step = Math.min(skip, input.length - offset);
        skip -= step;
        offset += step;
        continue;
      }
      if (ended) throw refuse('the send stream goes on after its end marker');
      const take = Math.min(COMMAND_HEADER_BYTES - pending.length, input.length - offset);
      pending = Buffer.concat([pending, input.subarray(offset, offset + take)]);
      offset += take;
      if (pending.length < COMMAND_HEADER_BYTES) continue;
      const command = pending.readUInt16LE(4);
      if (command === COMMAND_SUBVOL || command === COMMAND_SNAPSHOT) throw refuse('the send stream holds more than one snapshot');
      ended = command === COMMAND_END;
      skip = pending.readUInt32LE(0);
      pending = Buffer.alloc(0);
    }
    if (input.length > 0) yield input;
  }
  if (!renamed) throw refuse(`the send stream ended after ${pending.length} bytes, before its first command`);
  if (!ended || skip > 0 || pending.length > 0) throw refuse('the send stream ended before its end marker (truncated)');
}

/** The stream header and the rewritten first command, once `buffer` holds both; undefined while it holds less. */
function renameFirstCommand(buffer: Buffer, expected: string, replacement: string, refuse: (reason: string) => BerthError): { output: Buffer; consumed: number } | undefined {
  if (buffer.length >= MAGIC.length && !buffer.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw refuse('the data is not a btrfs send stream (no btrfs-stream header)');
  }
  if (buffer.length < STREAM_HEADER_BYTES + COMMAND_HEADER_BYTES) return undefined;
  const start = STREAM_HEADER_BYTES;
  const length = buffer.readUInt32LE(start);
  const command = buffer.readUInt16LE(start + 4);
  if (command !== COMMAND_SUBVOL && command !== COMMAND_SNAPSHOT) {
    throw refuse(`the send stream starts with command ${command}, not with a subvolume or snapshot`);
  }
  if (length > MAX_FIRST_COMMAND_BYTES) throw refuse(`the send stream's first command is implausibly long (${length} bytes)`);
  const end = start + COMMAND_HEADER_BYTES + length;
  if (buffer.length < end) return undefined;
  const first = buffer.subarray(start, end);
  const expectedCrc = first.readUInt32LE(CRC_OFFSET);
  const zeroed = Buffer.from(first);
  zeroed.writeUInt32LE(0, CRC_OFFSET);
  if (crc32c(zeroed) !== expectedCrc) throw refuse('the send stream\'s first command fails its checksum');

  const attributes: Buffer[] = [];
  let name: string | undefined;
  for (let offset = COMMAND_HEADER_BYTES; offset < first.length; ) {
    if (offset + ATTRIBUTE_HEADER_BYTES > first.length) throw refuse('the send stream\'s first command is malformed');
    const type = first.readUInt16LE(offset);
    const size = first.readUInt16LE(offset + 2);
    const next = offset + ATTRIBUTE_HEADER_BYTES + size;
    if (next > first.length) throw refuse('the send stream\'s first command is malformed');
    if (type === ATTRIBUTE_PATH) {
      name = first.toString('utf8', offset + ATTRIBUTE_HEADER_BYTES, next);
      attributes.push(attribute(ATTRIBUTE_PATH, Buffer.from(replacement, 'utf8')));
    } else {
      attributes.push(first.subarray(offset, next));
    }
    offset = next;
  }
  if (name !== expected) {
    throw refuse(`the send stream holds snapshot ${JSON.stringify(name ?? '')}, not ${expected}`);
  }
  const payload = Buffer.concat(attributes);
  const header = Buffer.alloc(COMMAND_HEADER_BYTES);
  header.writeUInt32LE(payload.length, 0);
  header.writeUInt16LE(command, 4);
  const rewritten = Buffer.concat([header, payload]);
  rewritten.writeUInt32LE(crc32c(rewritten), CRC_OFFSET);
  return { output: Buffer.concat([buffer.subarray(0, start), rewritten]), consumed: end };
}

function attribute(type: number, value: Buffer): Buffer {
  const header = Buffer.alloc(ATTRIBUTE_HEADER_BYTES);
  header.writeUInt16LE(type, 0);
  header.writeUInt16LE(value.length, 2);
  return Buffer.concat([header, value]);
}

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * CRC-32C (Castagnoli) as btrfs computes it for send streams: seeded with `seed` (btrfs uses 0)
 * and without the final inversion, so the standard CRC-32C is `~crc32c(data, 0xffffffff)`.
 */
export function crc32c(data: Uint8Array, seed = 0): number {
  let crc = seed >>> 0;
  for (const byte of data) crc = (CRC32C_TABLE[(crc ^ byte) & 0xff] ?? 0) ^ (crc >>> 8);
  return crc >>> 0;
}
