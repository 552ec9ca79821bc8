import { expect } from 'chai';
import { hash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { compressStream, compressionSuffix, decompressStream, ToolStream, type Compression } from '../../volume-driver/backups/codec/compression.js';
import { DigestStream } from '../../volume-driver/backups/codec/digest-stream.js';
import { backupKeyId, decryptStream, encryptStream, FRAME_BYTES, generateBackupKey, loadBackupKey, type BackupKey } from '../../volume-driver/backups/codec/encryption.js';
import { isBerthError } from '../../plugins/errors/berth-error.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { runCommand } from '../helpers/run-command.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitUntil } from '../helpers/wait-until.js';

const MiB = 1024 * 1024;

/** A Writable keeping what it receives. */
class Collector extends Writable {
  readonly parts: Buffer[] = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.parts.push(chunk);
    callback();
  }
  get data(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** `data` cut into chunks of `size` bytes (the last may be shorter). */
function chunks(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let offset = 0; offset < data.length; offset += size) out.push(data.subarray(offset, offset + size));
  return out;
}

async function through(input: Buffer, streams: Duplex[], chunkSize = 64 * 1024): Promise<Buffer> {
  const sink = new Collector();
  await pipeline([Readable.from(chunks(input, chunkSize)), ...streams, sink]);
  return sink.data;
}

function text(bytes: number): Buffer {
  const words = ['volume', 'snapshot', 'backup', 'berth', 'docker', 'engine', 'mount', 'btrfs', 'restore', 'tar'];
  const lines: string[] = [];
  let length = 0;
  for (let i = 0; length < bytes; i++) {
    const line = `${i} ${words[i % 10]} ${words[(i * 7) % 10]} ${(i * 7919) % 10007} ${words[(i * 3) % 10]}\n`;
    lines.push(line);
    length += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, bytes);
}

function sameBytes(actual: Buffer, expected: Buffer): void {
  expect(actual.length).to.equal(expected.length);
  expect(actual.equals(expected), 'content differs').to.equal(true);
}

describe('backup codec', () => {
  describe('compression', () => {
    const random = randomBytes(20 * MiB);
    const prose = text(20 * MiB);

    it('names the suffix of each kind', () => {
      expect(compressionSuffix('zstd')).to.equal('.zst');
      expect(compressionSuffix('gzip')).to.equal('.gz');
      expect(compressionSuffix('none')).to.equal('');
    });

    for (const kind of ['zstd', 'gzip', 'none'] as const) {
      it(`round-trips ${kind}: empty, 20 MiB random, 20 MiB text`, async function () {
        this.timeout(120_000);
        sameBytes(await through(Buffer.alloc(0), [compressStream(kind), decompressStream(kind)]), Buffer.alloc(0));
        sameBytes(await through(Buffer.from('x'), [compressStream(kind), decompressStream(kind)]), Buffer.from('x'));
        sameBytes(await through(random, [compressStream(kind), decompressStream(kind)]), random);
        const compressed = await through(prose, [compressStream(kind)]);
        if (kind !== 'none') expect(compressed.length).to.be.below(prose.length / 4);
        sameBytes(await through(compressed, [decompressStream(kind)], 1000), prose);
      });
    }

    it('writes output GNU tar, zstd and gzip read by themselves', async function () {
      this.timeout(120_000);
      const temp = await makeTempDir();
      try {
        const tree = join(temp.path, 'tree');
        await mkdir(join(tree, 'sub'), { recursive: true });
        await writeFile(join(tree, 'random.bin'), randomBytes(3 * MiB + 17));
        await writeFile(join(tree, 'sub', 'notes.txt'), text(2 * MiB));
        for (const kind of ['zstd', 'gzip'] as const) {
          const archive = join(temp.path, `full.tar${compressionSuffix(kind)}`);
          const tar = await runCommand(['tar', '-C', tree, '-cf', join(temp.path, 'full.tar'), '.']);
          expect(tar.code, tar.stderr).to.equal(0);
          await pipeline(createReadStream(join(temp.path, 'full.tar')), compressStream(kind), createWriteStream(archive));
          const check = kind === 'zstd' ? ['zstd', '-q', '-t', archive] : ['gzip', '-t', archive];
          const tested = await runCommand(check);
          expect(tested.code, tested.stderr).to.equal(0);
          const listed = await runCommand(['tar', kind === 'zstd' ? '--zstd' : '-z', '-tf', archive]);
          expect(listed.code, listed.stderr).to.equal(0);
          expect(listed.stdout.split('\n')).to.include.members(['./random.bin', './sub/notes.txt']);
          const out = join(temp.path, `out-${kind}`);
          await mkdir(out);
          const extracted = await runCommand(['tar', kind === 'zstd' ? '--zstd' : '-z', '-xf', archive, '-C', out]);
          expect(extracted.code, extracted.stderr).to.equal(0);
          sameBytes(await readFile(join(out, 'random.bin')), await readFile(join(tree, 'random.bin')));
          sameBytes(await readFile(join(out, 'sub', 'notes.txt')), await readFile(join(tree, 'sub', 'notes.txt')));
        }
      } finally {
        await temp.dispose();
      }
    });

    it('reads what the zstd and gzip tools wrote', async () => {
      const data = text(300_000);
      const temp = await makeTempDir();
      try {
        const file = join(temp.path, 'in');
        await writeFile(file, data);
        for (const [kind, command] of [
          ['zstd', ['zstd', '-q', '-19', '-k', file]],
          ['gzip', ['gzip', '-9', '-k', file]],
        ] as const) {
          const result = await runCommand(command);
          expect(result.code, result.stderr).to.equal(0);
          const sink = new Collector();
          await pipeline(createReadStream(`${file}${compressionSuffix(kind)}`), decompressStream(kind), sink);
          sameBytes(sink.data, data);
        }
      } finally {
        await temp.dispose();
      }
    });

    it('tells to install zstd when the binary is missing', async () => {
      for (const make of [compressStream, decompressStream]) {
        const error = await expectBerthError(through(randomBytes(200_000), [make('zstd', { zstdPath: '/nonexistent/zstd' })]), 'ERR_STORAGE');
        expect(error.message).to.match(/\/nonexistent\/zstd does not exist; install the Debian zstd package/);
      }
    });

    it('fails corrupt and truncated input with the subject named and the tool stderr', async () => {
      const subject = 'backups/v1/full.tar.zst';
      const garbage = randomBytes(100_000);
      const corrupt = await expectBerthError(through(garbage, [decompressStream('zstd', { subject })]), 'ERR_BACKUP_CORRUPT');
      expect(corrupt.message).to.match(/^backups\/v1\/full\.tar\.zst is corrupt: zstd -q -d -c failed with exit code 1: .*unsupported format/);
      const gzCorrupt = await expectBerthError(through(garbage, [decompressStream('gzip', { subject: 'x.gz' })]), 'ERR_BACKUP_CORRUPT');
      expect(gzCorrupt.message).to.match(/^x\.gz is corrupt: /);

      const data = randomBytes(2 * MiB);
      for (const kind of ['zstd', 'gzip'] as const) {
        const compressed = await through(data, [compressStream(kind)]);
        const cut = compressed.subarray(0, compressed.length - 1000);
        const truncated = await expectBerthError(through(cut, [decompressStream(kind, { subject: `obj${compressionSuffix(kind)}` })]), 'ERR_BACKUP_TRUNCATED');
        expect(truncated.message).to.match(new RegExp(`^obj${compressionSuffix(kind).replace('.', '\\.')} is truncated`));
        await expectBerthError(through(Buffer.alloc(0), [decompressStream(kind)]), 'ERR_BACKUP_TRUNCATED');
        const flipped = Buffer.from(compressed);
        flipped[Math.floor(flipped.length / 2)]! ^= 0x55;
        // zstd checks its frame checksum; gzip its CRC-32.
        const error = await through(flipped, [decompressStream(kind)]).then(
          () => undefined,
          (failure: unknown) => failure,
        );
        expect(isBerthError(error, 'ERR_BACKUP_CORRUPT') || isBerthError(error, 'ERR_BACKUP_TRUNCATED'), `flipped byte in ${kind} data: ${String(error)}`).to.equal(true);
      }
    });

    it('kills zstd when the stream is destroyed early', async () => {
      const gone = (pid: number) => waitUntil(() => !existsSync(`/proc/${pid}`), { description: `zstd ${pid} to be gone`, timeoutMs: 5000, intervalMs: 20 });
      // Blocked on a full pipe: written to and never read.
      const blocked = compressStream('zstd');
      expect(blocked).to.be.instanceOf(ToolStream);
      const pid = (blocked as ToolStream).pid;
      expect(pid).to.be.a('number');
      for (const chunk of chunks(randomBytes(4 * MiB), 64 * 1024)) blocked.write(chunk);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(existsSync(`/proc/${pid}`)).to.equal(true);
      blocked.destroy();
      await gone(pid as number);

      // In a pipeline whose source fails half way.
      const failing = new Readable({ read() {} });
      failing.push(randomBytes(MiB));
      const decompress = decompressStream('zstd');
      const compress = compressStream('zstd');
      const pids = [(compress as ToolStream).pid, (decompress as ToolStream).pid];
      setTimeout(() => failing.destroy(new Error('source broke')), 100);
      let error: unknown;
      await pipeline(failing, compress, decompress, new Collector()).catch((failure: unknown) => (error = failure));
      expect(String(error)).to.match(/source broke/);
      for (const each of pids) await gone(each as number);
    });

    it('passes backpressure through zstd instead of buffering its output', async function () {
      this.timeout(60_000);
      const compress = compressStream('zstd');
      // Distinct random chunks: incompressible, so zstd's output is as large as its input.
      for (const chunk of chunks(randomBytes(32 * MiB), 64 * 1024)) compress.write(chunk);
      await new Promise((resolve) => setTimeout(resolve, 500));
      // Nobody reads: zstd blocks on its full stdout, stops reading stdin, and the input waits here.
      expect(compress.writableNeedDrain).to.equal(true);
      expect(compress.writableLength).to.be.above(16 * MiB);
      expect(compress.readableLength).to.be.at.most(compress.readableHighWaterMark + 64 * 1024);
      compress.destroy();
      await waitUntil(() => !existsSync(`/proc/${(compress as ToolStream).pid}`), { description: 'zstd to be gone', timeoutMs: 5000, intervalMs: 20 });
    });
  });

  describe('encryption', () => {
    const key: BackupKey = { key: randomBytes(32), id: '' };
    Object.assign(key, { id: backupKeyId(key.key) });
    const HEADER = 29;
    const frameAt = (index: number) => HEADER + index * (4 + FRAME_BYTES + 16);

    const encrypt = (data: Buffer, chunkSize?: number) => through(data, [encryptStream(key)], chunkSize);
    const decrypt = (data: Buffer, chunkSize?: number, withKey: BackupKey = key) => through(data, [decryptStream(withKey, 'vol1/full-0001.tar.zst.enc')], chunkSize);

    it('derives the key id from the key with HMAC-SHA256', () => {
      expect(key.id).to.match(/^[0-9a-f]{16}$/);
      expect(backupKeyId(key.key)).to.equal(key.id);
      expect(backupKeyId(randomBytes(32))).not.to.equal(key.id);
    });

    for (const size of [0, 1, FRAME_BYTES - 1, FRAME_BYTES, FRAME_BYTES + 1, 5 * MiB]) {
      it(`round-trips ${size} bytes`, async function () {
        this.timeout(60_000);
        const data = randomBytes(size);
        const sealed = await encrypt(data, 100_000);
        const frames = Math.floor(size / FRAME_BYTES) + 1;
        expect(sealed.length).to.equal(HEADER + size + frames * (4 + 16));
        expect(sealed.subarray(0, 8).toString('latin1')).to.equal('BERTHENC');
        expect(sealed[8]).to.equal(1);
        expect(sealed.subarray(21, 29).toString('hex')).to.equal(key.id);
        sameBytes(await decrypt(sealed), data);
        sameBytes(await decrypt(sealed, 7 * 1024 + 3), data);
        const again = await encrypt(data);
        expect(again.subarray(9, 21).equals(sealed.subarray(9, 21)), 'a fresh nonce per object').to.equal(false);
      });
    }

    it('takes its input in any chunking, a byte at a time too', async () => {
      const data = randomBytes(3000);
      sameBytes(await decrypt(await encrypt(data, 1)), data);
    });

    it('names both keys when the key is wrong', async () => {
      const other: BackupKey = { key: randomBytes(32), id: '' };
      Object.assign(other, { id: backupKeyId(other.key) });
      const sealed = await encrypt(randomBytes(1000));
      const error = await expectBerthError(decrypt(sealed, undefined, other), 'ERR_BACKUP_WRONG_KEY');
      expect(error.message).to.equal(`vol1/full-0001.tar.zst.enc was encrypted with key ${key.id} but the given key is ${other.id}`);
    });

    describe('detects tampering', () => {
      let data: Buffer;
      let sealed: Buffer;
      before(async function () {
        this.timeout(30_000);
        data = randomBytes(3 * FRAME_BYTES + 100);
        sealed = await encrypt(data);
        expect(sealed.length).to.equal(frameAt(3) + 4 + 100 + 16);
      });

      const flip = (offset: number, mask = 0x01) => {
        const copy = Buffer.from(sealed);
        copy[offset]! ^= mask;
        return copy;
      };
      const corrupt = async (input: Buffer, message: RegExp) => {
        const error = await expectBerthError(decrypt(input), 'ERR_BACKUP_CORRUPT');
        expect(error.message).to.match(message);
      };
      const truncated = async (input: Buffer, message: RegExp) => {
        const error = await expectBerthError(decrypt(input), 'ERR_BACKUP_TRUNCATED');
        expect(error.message).to.match(message);
      };

      it('in the ciphertext, emitting only the frames before', async () => {
        await corrupt(flip(frameAt(1) + 4 + 1000), /^vol1\/full-0001\.tar\.zst\.enc is corrupt: authentication failed in frame 1$/);
        const sink = new Collector();
        await pipeline(Readable.from(chunks(flip(frameAt(1) + 4 + 1000), 64 * 1024)), decryptStream(key, 'x'), sink).catch(() => undefined);
        sameBytes(sink.data, data.subarray(0, FRAME_BYTES));
        await corrupt(flip(frameAt(3) + 4 + 50, 0x80), /authentication failed in frame 3$/);
      });

      it('in a tag', async () => {
        await corrupt(flip(frameAt(1) - 1), /authentication failed in frame 0$/);
        await corrupt(flip(sealed.length - 16), /authentication failed in frame 3$/);
      });

      it('in the header', async () => {
        await corrupt(flip(0), /is corrupt: it does not start with the Berth encryption header/);
        await corrupt(flip(8), /is corrupt: its encryption format version 0 is not the supported version 1/);
        await corrupt(flip(9), /authentication failed in frame 0$/);
        await corrupt(flip(20), /authentication failed in frame 0$/);
        // The key id is compared first: an altered id reads as another key.
        await expectBerthError(decrypt(flip(21)), 'ERR_BACKUP_WRONG_KEY');
      });

      it('in a length word or final flag', async () => {
        await corrupt(flip(frameAt(0)), /frame 0 claims \d+ bytes, more than the 1048576 a frame holds/);
        await corrupt(flip(frameAt(2) + 1, 0x10), /authentication failed in frame 2$/);
        // Marking a middle frame final: its tag fails (the flag is authenticated).
        await corrupt(flip(frameAt(1), 0x80), /authentication failed in frame 1$/);
        // Clearing the final flag: the tag fails too.
        await corrupt(flip(frameAt(3), 0x80), /authentication failed in frame 3$/);
      });

      it('swapped frames', async () => {
        const swapped = Buffer.concat([sealed.subarray(0, frameAt(0)), sealed.subarray(frameAt(1), frameAt(2)), sealed.subarray(frameAt(0), frameAt(1)), sealed.subarray(frameAt(2))]);
        expect(swapped.length).to.equal(sealed.length);
        await corrupt(swapped, /authentication failed in frame 0$/);
      });

      it('a dropped frame', async () => {
        await truncated(sealed.subarray(0, frameAt(3)), /^vol1\/full-0001\.tar\.zst\.enc is truncated: input ended after frame 2, which is not the final frame$/);
        await corrupt(Buffer.concat([sealed.subarray(0, frameAt(1)), sealed.subarray(frameAt(2))]), /authentication failed in frame 1$/);
      });

      it('truncation anywhere', async () => {
        await truncated(sealed.subarray(0, frameAt(2) + 4 + 1000), /is truncated: input ended in frame 2$/);
        await truncated(sealed.subarray(0, frameAt(2) + 2), /is truncated: input ended in frame 2$/);
        await truncated(sealed.subarray(0, sealed.length - 1), /is truncated: input ended in frame 3$/);
        await truncated(sealed.subarray(0, HEADER), /is truncated: input ended before the first frame$/);
        await truncated(sealed.subarray(0, 10), /is truncated: input ended after 10 of the 29 header bytes$/);
        await truncated(Buffer.alloc(0), /is truncated: input ended after 0 of the 29 header bytes$/);
      });

      it('bytes after the final frame', async () => {
        await corrupt(Buffer.concat([sealed, Buffer.of(0)]), /is corrupt: unexpected data follows the final frame$/);
        const empty = await encrypt(Buffer.alloc(0));
        await corrupt(Buffer.concat([empty, randomBytes(5000)]), /unexpected data follows the final frame$/);
        // Arriving in a later chunk.
        const sink = new Collector();
        const late = pipeline(Readable.from([sealed, Buffer.from('more')]), decryptStream(key, 'late'), sink);
        const error = await expectBerthError(late, 'ERR_BACKUP_CORRUPT');
        expect(error.message).to.equal('late is corrupt: unexpected data follows the final frame');
      });

      it('an object moved into another one', async () => {
        const other = await encrypt(data);
        const spliced = Buffer.concat([sealed.subarray(0, frameAt(1)), other.subarray(frameAt(1))]);
        await corrupt(spliced, /authentication failed in frame 1$/);
      });
    });
  });

  describe('backup key files', () => {
    let temp: { path: string; dispose(): Promise<void> };
    beforeEach(async () => {
      temp = await makeTempDir();
    });
    afterEach(() => temp.dispose());

    it('reads raw, hex and base64 keys', async () => {
      const key = randomBytes(32);
      const id = backupKeyId(key);
      const forms: Array<[string, string | Buffer]> = [
        ['raw', key],
        ['hex', `${key.toString('hex')}\n`],
        ['HEX', `  ${key.toString('hex').toUpperCase()}  \r\n`],
        ['base64', `${key.toString('base64')}\n`],
        ['base64-unpadded', key.toString('base64').replace(/=$/, '')],
        ['base64url', `${key.toString('base64url')}\n`],
      ];
      for (const [name, content] of forms) {
        const file = join(temp.path, name);
        await writeFile(file, content);
        const loaded = await loadBackupKey(file);
        expect(loaded.key.equals(key), name).to.equal(true);
        expect(loaded.id, name).to.equal(id);
      }
      // 32 raw bytes are raw even when they end in whitespace.
      const spacey = Buffer.concat([randomBytes(30), Buffer.from(' \n')]);
      await writeFile(join(temp.path, 'spacey'), spacey);
      expect((await loadBackupKey(join(temp.path, 'spacey'))).key.equals(spacey)).to.equal(true);
    });

    it('refuses keys of the wrong length or format, naming the file', async () => {
      const key = randomBytes(32);
      const bad: Array<[string, string | Buffer]> = [
        ['short-raw', randomBytes(31)],
        ['long-raw', randomBytes(33)],
        ['short-hex', key.toString('hex').slice(2)],
        ['long-hex', `${key.toString('hex')}00`],
        ['not-hex', `${key.toString('hex').slice(1)}g`],
        ['short-base64', randomBytes(31).toString('base64')],
        ['long-base64', randomBytes(33).toString('base64')],
        ['empty', ''],
      ];
      for (const [name, content] of bad) {
        const file = join(temp.path, name);
        await writeFile(file, content);
        const error = await expectBerthError(loadBackupKey(file), 'ERR_INVALID_OPTION');
        expect(error.message, name).to.contain(`backup key file ${file} must hold exactly 32 raw bytes, 64 hex digits, or 32 bytes in base64`);
        expect(error.message, name).not.to.contain(key.toString('hex').slice(4, 20));
      }
    });

    it('reports a missing key file', async () => {
      const file = join(temp.path, 'missing.key');
      const error = await expectBerthError(loadBackupKey(file), 'ERR_INVALID_OPTION');
      expect(error.message).to.match(new RegExp(`^cannot read backup key file ${file}: ENOENT`));
    });

    it('generates a key file with mode 0600 and never overwrites one', async () => {
      const file = join(temp.path, 'backup.key');
      const generated = await generateBackupKey(file);
      expect(generated.key.length).to.equal(32);
      expect(generated.id).to.equal(backupKeyId(generated.key));
      expect((await stat(file)).mode & 0o777).to.equal(0o600);
      const loaded = await loadBackupKey(file);
      expect(loaded.key.equals(generated.key)).to.equal(true);
      const before = await readFile(file);
      const error = await expectBerthError(generateBackupKey(file), 'ERR_INVALID_OPTION');
      expect(error.message).to.equal(`backup key file ${file} already exists; refusing to overwrite it`);
      expect((await readFile(file)).equals(before)).to.equal(true);
      const other = await generateBackupKey(join(temp.path, 'second.key'));
      expect(other.key.equals(generated.key)).to.equal(false);
      await expectBerthError(generateBackupKey(join(temp.path, 'no', 'such', 'dir.key')), 'ERR_INVALID_OPTION');
    });
  });

  describe('digest stream', () => {
    it('computes the SHA-256 and byte count of what passes, unchanged', async () => {
      for (const data of [Buffer.alloc(0), Buffer.from('berth'), randomBytes(3 * MiB + 5)]) {
        const digest = new DigestStream();
        const seen: number[] = [];
        digest.on('data', () => seen.push(digest.bytes));
        const out = await through(data, [digest], 100_000);
        sameBytes(out, data);
        expect(digest.bytes).to.equal(data.length);
        expect(digest.digest()).to.equal(hash('sha256', data));
        if (data.length > 100_000) expect(seen.length).to.be.above(1);
      }
    });

    it('refuses the digest before the stream finished', () => {
      const digest = new DigestStream();
      digest.write(Buffer.from('partial'));
      expect(digest.bytes).to.equal(7);
      expect(() => digest.digest()).to.throw(/before the stream finished/);
      digest.destroy();
    });

    it('composes: digest of the stored object and of the plaintext in one pass', async function () {
      this.timeout(30_000);
      const key: BackupKey = { key: randomBytes(32), id: '' };
      Object.assign(key, { id: backupKeyId(key.key) });
      const data = text(3 * MiB);
      const plain = new DigestStream();
      const stored = new DigestStream();
      const kind: Compression = 'zstd';
      const object = await through(data, [plain, compressStream(kind), encryptStream(key), stored]);
      expect(plain.digest()).to.equal(hash('sha256', data));
      expect(stored.digest()).to.equal(hash('sha256', object));
      expect(stored.bytes).to.equal(object.length);
      sameBytes(await through(object, [decryptStream(key, 'o'), decompressStream(kind)]), data);
    });
  });
});
