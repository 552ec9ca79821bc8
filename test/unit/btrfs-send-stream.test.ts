import { expect } from 'chai';
import { crc32c, renameSendStream } from '../../volume-driver/storage/btrfs-send-stream.js';
import { collect, pieces } from '../helpers/byte-streams.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';

const SUBVOL = 1;
const SNAPSHOT = 2;
const WRITE = 15;
const END = 21;
const PATH = 15;
const UUID = 1;

function attribute(type: number, value: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt16LE(type, 0);
  header.writeUInt16LE(value.length, 2);
  return Buffer.concat([header, value]);
}

function command(type: number, ...attributes: Buffer[]): Buffer {
  const payload = Buffer.concat(attributes);
  const header = Buffer.alloc(10);
  header.writeUInt32LE(payload.length, 0);
  header.writeUInt16LE(type, 4);
  const whole = Buffer.concat([header, payload]);
  whole.writeUInt32LE(crc32c(whole), 6);
  return whole;
}

function stream(...commands: Buffer[]): Buffer {
  const header = Buffer.alloc(17);
  header.write('btrfs-stream\0', 'latin1');
  header.writeUInt32LE(1, 13);
  return Buffer.concat([header, ...commands]);
}

const uuid = Buffer.alloc(16, 7);
const whole = stream(
  command(SUBVOL, attribute(PATH, Buffer.from('e0000001-00000001')), attribute(UUID, uuid)),
  command(WRITE, attribute(PATH, Buffer.from('file')), attribute(3, Buffer.alloc(3000, 1))),
  command(END),
);

describe('btrfs send stream renaming', () => {
  it('computes CRC-32C the way btrfs does (the standard one is its inverted form)', () => {
    expect((~crc32c(Buffer.from('123456789'), 0xffffffff)) >>> 0).to.equal(0xe3069283);
    expect(crc32c(Buffer.alloc(0))).to.equal(0);
  });

  it('renames the subvolume of the first command, keeps its other attributes, and passes the rest untouched, however the stream is split', async () => {
    const expected = stream(
      command(SUBVOL, attribute(PATH, Buffer.from('.receiving-abc')), attribute(UUID, uuid)),
      command(WRITE, attribute(PATH, Buffer.from('file')), attribute(3, Buffer.alloc(3000, 1))),
      command(END),
    );
    for (const size of [1, 7, 10, 17, 27, 64, 4096, whole.length]) {
      const output = await collect(renameSendStream(pieces(whole, size), 'e0000001-00000001', '.receiving-abc', 'cannot receive'));
      expect(output.equals(expected), `split into ${size}-byte pieces`).to.equal(true);
    }
  });

  it('renames the snapshot of an incremental stream', async () => {
    const incremental = stream(command(SNAPSHOT, attribute(PATH, Buffer.from('s2')), attribute(UUID, uuid)), command(END));
    const output = await collect(renameSendStream(pieces(incremental, 5), 's2', 'tmp', 'cannot receive'));
    expect(output.equals(stream(command(SNAPSHOT, attribute(PATH, Buffer.from('tmp')), attribute(UUID, uuid)), command(END)))).to.equal(true);
  });

  it('refuses a stream that is not one whole snapshot of the expected name', async () => {
    const cases: Array<[string, Buffer, RegExp]> = [
      ['another name', whole, /holds snapshot "e0000001-00000001", not other/],
      ['no header', Buffer.from('not a stream at all, not at all'), /not a btrfs send stream/],
      ['truncated in a command', whole.subarray(0, whole.length - 100), /truncated/],
      ['truncated before the end marker', whole.subarray(0, whole.length - 10), /truncated/],
      ['cut before the first command', whole.subarray(0, 20), /before its first command/],
      ['bytes after the end marker', Buffer.concat([whole, Buffer.from([0])]), /after its end marker/],
      ['a second subvolume', stream(command(SUBVOL, attribute(PATH, Buffer.from('e0000001-00000001'))), command(SUBVOL, attribute(PATH, Buffer.from('x'))), command(END)), /more than one snapshot/],
      ['a first command that is no subvolume', stream(command(WRITE), command(END)), /starts with command 15/],
    ];
    for (const [label, data, message] of cases) {
      const name = label === 'another name' ? 'other' : 'e0000001-00000001';
      const error = await expectBerthError(collect(renameSendStream(pieces(data, 9), name, 'tmp', 'cannot receive s')), 'ERR_REPLICATION');
      expect(error.message, label).to.match(message).and.match(/^cannot receive s: /);
    }
    const corrupt = Buffer.from(whole);
    corrupt[30] = (corrupt[30] ?? 0) ^ 0xff;
    await expectBerthError(collect(renameSendStream(pieces(corrupt, 64), 'e0000001-00000001', 'tmp', 'cannot receive')), 'ERR_REPLICATION', /checksum/);
  });
});
