import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { open, readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { blockCount, HASH_BYTES, indexFile } from '../../volume-driver/backups/block-index.js';
import { generateBackupKey } from '../../volume-driver/backups/codec/encryption.js';
import { HashThread } from '../../volume-driver/backups/codec/hash-thread.js';
import { loadObject, loadObjectBuffer, storeObject, type ObjectCodec } from '../../volume-driver/backups/object-pipeline.js';
import { RestoredBlocks } from '../../volume-driver/backups/restored-blocks.js';
import type { BackupObject } from '../../volume-driver/backups/backup-manifest.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { waitUntil } from '../helpers/wait-until.js';

const MiB = 1024 * 1024;

/** Half random, half text: large enough (over 32 MiB stored) for the local-file path. */
function payload(): Buffer {
  const lines: string[] = [];
  for (let i = 0; lines.length < 250_000; i++) lines.push(`INSERT INTO orders VALUES (${i}, 'berth', ${(i * 7919) % 10007});\n`);
  return Buffer.concat([randomBytes(36 * MiB), Buffer.from(lines.join(''))]);
}

async function store(dir: string, name: string, data: Buffer, codec: ObjectCodec): Promise<{ path: string; object: BackupObject }> {
  const path = join(dir, name);
  const { createWriteStream } = await import('node:fs');
  const object = await storeObject(Readable.from([data]), createWriteStream(path), name, codec);
  return { path, object };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** The zstd processes reading `path` through a descriptor (decompressFile), from /proc. */
async function zstdReading(path: string): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (!cmdline.startsWith('zstd\0')) continue;
    const stdin = await import('node:fs/promises').then((fs) => fs.readlink(`/proc/${pid}/fd/0`)).catch(() => '');
    if (stdin === path) pids.push(Number(pid));
  }
  return pids;
}

describe('backup restore I/O', function () {
  this.timeout(120_000);
  let dir: Awaited<ReturnType<typeof makeTempDir>>;
  let data: Buffer;
  before(async () => {
    dir = await makeTempDir('berth-rio-');
    data = payload();
  });
  after(() => dir.dispose());

  describe('loading a large local object', () => {
    it('reads zstd, gzip, none and encrypted objects back exactly', async () => {
      const key = await generateBackupKey(join(dir.path, 'key'));
      const codecs: Array<[string, ObjectCodec]> = [
        ['zstd', { compression: 'zstd' }],
        ['zstd-enc', { compression: 'zstd', key }],
        ['gzip', { compression: 'gzip' }],
        ['none', { compression: 'none' }],
      ];
      for (const [name, codec] of codecs) {
        const { path, object } = await store(dir.path, `ok-${name}`, data, codec);
        expect(object.bytes, name).to.be.at.least(32 * MiB);
        const back = await readAll(loadObject({ path }, object, `obj ${name}`, codec));
        expect(back.equals(data), `${name} content`).to.equal(true);
        expect((await loadObjectBuffer({ path }, object, `obj ${name}`, codec)).equals(data)).to.equal(true);
      }
    });

    it('names a truncated object before decoding, a corrupt one by its checksum, a missing one as missing', async () => {
      const codec: ObjectCodec = { compression: 'zstd' };
      const { path, object } = await store(dir.path, 'damaged.zst', data, codec);
      const original = await readFile(path);

      await writeFile(path, original.subarray(0, original.length - 1000));
      const truncated = await expectBerthError(readAll(loadObject({ path }, object, 'backup v/1 damaged.zst', codec)), 'ERR_BACKUP_TRUNCATED');
      expect(truncated.message).to.equal(`backup v/1 damaged.zst is truncated: ${original.length - 1000} bytes stored, the manifest says ${original.length}`);

      const flipped = Buffer.from(original);
      flipped[Math.floor(flipped.length / 3)]! ^= 0x40;
      await writeFile(path, flipped);
      const corrupt = await expectBerthError(readAll(loadObject({ path }, object, 'backup v/1 damaged.zst', codec)), 'ERR_BACKUP_CORRUPT');
      expect(corrupt.message).to.equal('backup v/1 damaged.zst is corrupt: checksum mismatch');

      // Bytes zstd decodes happily but the manifest does not know: the checksum fails at the end.
      await writeFile(path, original);
      const other = { ...object, sha256: '0'.repeat(64) };
      const mismatch = await expectBerthError(readAll(loadObject({ path }, other, 'backup v/1 damaged.zst', codec)), 'ERR_BACKUP_CORRUPT');
      expect(mismatch.message).to.equal('backup v/1 damaged.zst is corrupt: checksum mismatch');

      const missing = await expectBerthError(readAll(loadObject({ path: join(dir.path, 'nope.zst') }, object, 'backup v/1 nope.zst', codec)), 'ERR_BACKUP_CORRUPT');
      expect(missing.message).to.equal('backup v/1 nope.zst is missing from the backup');
    });

    it('stops zstd when the reader gives up early', async () => {
      const codec: ObjectCodec = { compression: 'zstd' };
      const { path, object } = await store(dir.path, 'early.zst', data, codec);
      const stream = loadObject({ path }, object, 'early', codec);
      for await (const chunk of stream) {
        expect((chunk as Buffer).length).to.be.above(0);
        break;
      }
      await waitUntil(async () => (await zstdReading(path)).length === 0, { description: 'zstd to be gone', timeoutMs: 5000, intervalMs: 20 });
    });
  });

  describe('block hashes of restored files', () => {
    async function expectedHashes(path: string): Promise<Buffer> {
      const info = await stat(path);
      return (await indexFile(path, 'f', { size: info.size, mtimeMs: 0, ctimeMs: 0, ino: 0 })).entry.hashes;
    }

    it('hashes content as it is written, in any chunking', async () => {
      const blocks = new RestoredBlocks();
      const path = join(dir.path, 'tapped');
      await writeFile(path, data);
      for (const size of [65_536 + 13, 100, 4096, 3 * MiB + 1]) {
        const tap = blocks.tapContent({ dev: 1n, ino: BigInt(size) });
        for (let offset = 0; offset < data.length; offset += size) tap.write(data.subarray(offset, offset + size));
        tap.end();
        const hashes = blocks.hashesOf(1n, BigInt(size), data.length);
        expect(hashes?.length).to.equal(blockCount(data.length) * HASH_BYTES);
        expect(hashes!.equals(await expectedHashes(path)), `chunks of ${size}`).to.equal(true);
      }
      // Another size, or content never seen whole: nothing to offer.
      expect(blocks.hashesOf(1n, 100n, data.length - 1)).to.equal(undefined);
      expect(blocks.hashesOf(1n, 5n, data.length)).to.equal(undefined);
      const aborted = blocks.tapContent({ dev: 1n, ino: 4n });
      aborted.write(data.subarray(0, 3 * MiB));
      aborted.abort();
      expect(blocks.hashesOf(1n, 4n, 3 * MiB)).to.equal(undefined);
      // A new file with the same inode number forgets the old content.
      blocks.tapContent({ dev: 1n, ino: 100n });
      expect(blocks.hashesOf(1n, 100n, data.length)).to.equal(undefined);
    });

    it('keeps hashes right through patches in place: growing, cutting, partial block writes', async () => {
      const blocks = new RestoredBlocks();
      const path = join(dir.path, 'patched');
      const original = randomBytes(10 * 4096 + 100);
      await writeFile(path, original);
      const { dev, ino } = await stat(path, { bigint: true });
      const tap = blocks.tapContent({ dev, ino });
      tap.write(original);
      tap.end();

      const patchWith = async (size: number, writes: Array<[number, Buffer]>): Promise<void> => {
        const handle = await open(path, 'r+');
        try {
          const patch = await blocks.patch(handle);
          await handle.truncate(size);
          patch.resize(size);
          for (const [index, bytes] of writes) {
            await handle.write(bytes, 0, bytes.length, index * 4096);
            patch.wrote(index, bytes);
          }
          await patch.finish(handle);
        } finally {
          await handle.close();
        }
        const hashes = blocks.hashesOf(dev, ino, size);
        expect(hashes, `hashes after patching to ${size}`).to.not.equal(undefined);
        expect(hashes!.equals(await expectedHashes(path)), `hashes after patching to ${size}`).to.equal(true);
      };
      // Grows past a partial last block, writing only some of the new blocks.
      await patchWith(14 * 4096 + 7, [
        [3, randomBytes(4096)],
        [13, randomBytes(4096)],
      ]);
      // Cut inside a block, with a write shorter than its block.
      await patchWith(6 * 4096 + 1000, [[2, randomBytes(100)]]);
      // Cut on a block boundary, nothing written.
      await patchWith(5 * 4096, []);
      await truncate(path, 0);
    });
  });

  it('a hash thread reports read failures, and closing it settles what was pending', async () => {
    const thread = new HashThread();
    const failed = await thread.hashFile(987_654).then(
      () => undefined,
      (error: NodeJS.ErrnoException) => error,
    );
    expect(failed?.code).to.equal('EBADF');
    await writeFile(join(dir.path, 'to-hash'), data);
    const handle = await open(join(dir.path, 'to-hash'), 'r');
    try {
      const pending = thread.hashFile(handle.fd);
      await thread.close();
      expect(await pending.then(() => 'hashed', () => 'failed')).to.be.oneOf(['hashed', 'failed']);
      await expectBerthError(thread.hashFile(handle.fd), 'ERR_INTERNAL');
    } finally {
      await handle.close();
    }
  });
});
