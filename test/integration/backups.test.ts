import { expect } from 'chai';
import { randomBytes, createHash } from 'node:crypto';
import { chmod, mkdir, open, readFile, readdir, rename, rm, stat, symlink, truncate, writeFile, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BackupService } from '../../volume-driver/backups/backup-service.js';
import { DirectoryBackupTarget } from '../../volume-driver/backups/directory-backup-target.js';
import { generateBackupKey } from '../../volume-driver/backups/codec/encryption.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { checkCommand, runCommand } from '../helpers/run-command.js';
import { requirePrerequisites } from '../helpers/prerequisites.js';
import { startVolumeStack, type VolumeStack } from '../helpers/volume-stack.js';
import { makeTempDir } from '../helpers/temp-dir.js';

/** Every file's type, mode, owner, content hash and link target below `root`, for comparisons. */
async function fingerprint(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string, prefix: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const rel = prefix ? `${prefix}/${name}` : name;
      const info = await import('node:fs/promises').then((fs) => fs.lstat(path));
      const base = `${(info.mode & 0o170000).toString(8)} ${(info.mode & 0o7777).toString(8)} ${info.uid}:${info.gid}`;
      if (info.isDirectory()) {
        out[rel] = base;
        await walk(path, rel);
      } else if (info.isSymbolicLink()) {
        out[rel] = `${base} -> ${await import('node:fs/promises').then((fs) => fs.readlink(path))}`;
      } else {
        out[rel] = `${base} ${createHash('sha256').update(await readFile(path)).digest('hex')}`;
      }
    }
  };
  await walk(root, '');
  return out;
}

/**
 * Replaces one object of a committed backup with `bytes` and fixes the manifest's checksums, as a
 * forger (or a bug) would: every checksum is right, the content is not.
 */
async function forgeObject(backupDir: string, name: 'data' | 'index' | 'tree' | 'deltas', bytes: Buffer): Promise<void> {
  const manifestPath = join(backupDir, 'manifest.json');
  const manifest = JSON.parse(await readFile(manifestPath, 'utf8'));
  const file = manifest.objects[name].file as string;
  await writeFile(join(backupDir, file), bytes);
  manifest.objects[name] = { file, sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
  const text = `${JSON.stringify(manifest, null, 2)}\n`;
  await writeFile(manifestPath, text);
  await writeFile(`${manifestPath}.sha256`, `${createHash('sha256').update(text).digest('hex')}  manifest.json\n`);
}

/** `data` through the zstd CLI, compressing or decompressing. */
async function zstd(direction: 'compress' | 'decompress', data: Buffer): Promise<Buffer> {
  const { compressStream, decompressStream } = await import('../../volume-driver/backups/codec/compression.js');
  const stream = (direction === 'compress' ? compressStream : decompressStream)('zstd');
  const parts: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of stream) parts.push(chunk as Buffer);
  })();
  stream.end(data);
  await collected;
  return Buffer.concat(parts);
}

describe('backups: full, incremental, encrypted, verified, restored', function () {
  this.timeout(120_000);
  let stack: VolumeStack;
  let backups: BackupService;
  let targetDir: Awaited<ReturnType<typeof makeTempDir>>;
  let target: DirectoryBackupTarget;
  const live = (...parts: string[]) => join(stack.root, 'volumes', 'db', ...parts);

  before(() => requirePrerequisites(['tar', 'zstd', 'mount', 'umount', 'filefrag', 'sync']));
  beforeEach(async () => {
    stack = await startVolumeStack();
    backups = stack.backups;
    targetDir = await makeTempDir('berth-bk-');
    target = new DirectoryBackupTarget(targetDir.path);
    await stack.service.create('db', { mode: '0750', uid: '70', gid: '70' });
    await mkdir(live('base', 'deep'), { recursive: true });
    await writeFile(live('base', 'deep', 'table.dat'), randomBytes(16 * 1024 * 1024));
    await writeFile(live('notes.txt'), 'hello\n');
    await writeFile(live('empty'), '');
    await symlink('base/deep/table.dat', live('link'));
    await chmod(live('notes.txt'), 0o600);
  });
  afterEach(async () => {
    await stack.dispose();
    await targetDir.dispose();
  });

  it('a full backup is a standard tar that GNU tar alone restores', async () => {
    const { manifest } = await backups.create({ volume: 'db', target, compression: 'gzip' });
    expect(manifest.kind).to.equal('full');
    const out = join(targetDir.path, 'gnu-tar-out');
    await mkdir(out);
    await checkCommand(['tar', '-xzpf', join(targetDir.path, 'db', manifest.id, manifest.objects.data.file), '--numeric-owner', '-C', out]);
    expect(await fingerprint(out)).to.deep.equal(await fingerprint(live()));
    expect((await stat(out)).mode & 0o777).to.equal(0o750);
    // zstd is the default: tar --zstd reads it too.
    const zstd = await backups.create({ volume: 'db', target, full: true });
    const outZstd = join(targetDir.path, 'gnu-tar-zstd');
    await mkdir(outZstd);
    await checkCommand(['tar', '--zstd', '-xpf', join(targetDir.path, 'db', zstd.manifest.id, zstd.manifest.objects.data.file), '--numeric-owner', '-C', outZstd]);
    expect(await fingerprint(outZstd)).to.deep.equal(await fingerprint(live()));
  });

  it('an incremental after scattered 4 KiB writes and an append stores about what changed, and restores exactly', async () => {
    await backups.create({ volume: 'db', target });
    const handle = await open(live('base', 'deep', 'table.dat'), 'r+');
    for (let i = 0; i < 64; i++) await handle.write(randomBytes(4096), 0, 4096, Math.floor(Math.random() * 4095) * 4096);
    await handle.close();
    await appendFile(live('base', 'deep', 'table.dat'), randomBytes(1024 * 1024));
    // Other kinds of change: deletion, new file, type change, symlink retarget, chmod only.
    await rm(live('empty'));
    await writeFile(live('new.txt'), 'new\n');
    await rm(live('notes.txt'));
    await mkdir(live('notes.txt'));
    await rm(live('link'));
    await symlink('new.txt', live('link'));
    await chmod(live('base'), 0o711);
    const { manifest } = await backups.create({ volume: 'db', target });
    expect(manifest.kind).to.equal('incremental');
    const changed = 64 * 4096 + 1024 * 1024;
    expect(manifest.stats.changedBytes).to.be.at.most(changed + 64 * 1024);
    // Stored: the changed blocks (random, incompressible), the block index (16 B per 4 KiB), a little metadata.
    expect(manifest.stats.storedBytes).to.be.below(changed + (17 * 1024 * 1024 / 4096) * 16 + 128 * 1024);

    const expected = await fingerprint(live());
    await backups.restore({ target, volume: 'db', id: manifest.id, to: 'db-restored' });
    expect(await fingerprint(join(stack.root, 'volumes', 'db-restored'))).to.deep.equal(expected);
    expect((await stack.service.get('db-restored')).name).to.equal('db-restored');
  });

  it('verify names a corrupt and a truncated object; a damaged manifest lists as damaged', async () => {
    const { manifest } = await backups.create({ volume: 'db', target });
    const data = join(targetDir.path, 'db', manifest.id, manifest.objects.data.file);
    await backups.verify(target, 'db', manifest.id);
    const original = await readFile(data);
    const flipped = Buffer.from(original);
    flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
    await writeFile(data, flipped);
    const corrupt = await expectBerthError(backups.verify(target, 'db', manifest.id), 'ERR_BACKUP_CORRUPT');
    expect(corrupt.message).to.contain(`backup db/${manifest.id} ${manifest.objects.data.file}`);
    await writeFile(data, original.subarray(0, original.length - 1000));
    const truncated = await backups.verify(target, 'db', manifest.id).then(() => undefined, (error: Error & { code?: string }) => error);
    expect(truncated?.code).to.be.oneOf(['ERR_BACKUP_TRUNCATED', 'ERR_BACKUP_CORRUPT']);
    expect(truncated?.message).to.contain(manifest.objects.data.file);
    await writeFile(join(targetDir.path, 'db', manifest.id, 'manifest.json'), '{"format":"berth-backup/1"}');
    const [listed] = await backups.list(target, 'db');
    expect(listed).to.have.property('damaged').that.contains('manifest checksum mismatch');
    // A restore of a damaged backup creates nothing.
    await expectBerthError(backups.restore({ target, volume: 'db', id: manifest.id, to: 'never' }), 'ERR_BACKUP_CORRUPT');
    expect(await stack.service.exists('never')).to.equal(false);
  });

  it('encrypts with AES-256-GCM: restores with the key, names a wrong or missing key', async () => {
    const keys = await makeTempDir('berth-key-');
    try {
      const keyPath = join(keys.path, 'backup.key');
      const otherPath = join(keys.path, 'other.key');
      const key = await generateBackupKey(keyPath);
      const other = await generateBackupKey(otherPath);
      const { manifest } = await backups.create({ volume: 'db', target, keyPath });
      expect(manifest.encryption).to.deep.equal({ algorithm: 'aes-256-gcm', keyId: key.id });
      const raw = await readFile(join(targetDir.path, 'db', manifest.id, manifest.objects.data.file));
      expect(raw.includes(Buffer.from('hello\n')), 'plaintext must not appear').to.equal(false);
      const wrong = await expectBerthError(backups.restore({ target, volume: 'db', id: manifest.id, to: 'x', keyPath: otherPath }), 'ERR_BACKUP_WRONG_KEY');
      expect(wrong.message).to.equal(`backup db/${manifest.id} was encrypted with key ${key.id} but the given key is ${other.id}`);
      const missing = await expectBerthError(backups.restore({ target, volume: 'db', id: manifest.id, to: 'x' }), 'ERR_BACKUP_WRONG_KEY');
      expect(missing.message).to.contain('is encrypted');
      await backups.restore({ target, volume: 'db', id: manifest.id, to: 'db-decrypted', keyPath });
      expect(await fingerprint(join(stack.root, 'volumes', 'db-decrypted'))).to.deep.equal(await fingerprint(live()));
      // Incrementals chain only onto backups made with the same key.
      expect((await backups.create({ volume: 'db', target })).manifest.kind).to.equal('full');
      expect((await backups.create({ volume: 'db', target, keyPath })).manifest.parent).to.equal(manifest.id);
    } finally {
      await keys.dispose();
    }
  });

  it('a backup that fails midway leaves nothing that lists as complete', async () => {
    const small = join(targetDir.path, 'small');
    await mkdir(small);
    await checkCommand(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'berth-test-tmpfs', small]);
    try {
      const error = await backups.create({ volume: 'db', target: new DirectoryBackupTarget(small), compression: 'none' }).then(() => undefined, (caught: Error) => caught);
      expect(error, 'the backup must fail: 16 MiB do not fit in 2 MiB').to.not.equal(undefined);
      expect(await backups.list(new DirectoryBackupTarget(small))).to.deep.equal([]);
      expect(await readdir(join(small, 'db'))).to.deep.equal([]);
      expect((await stack.snapshots.list('db')).map((snapshot) => snapshot.origin)).to.not.include('backup');
    } finally {
      await runCommand(['umount', small]);
    }
  });

  it('retention keeps the newest N and every backup their chains need', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      await writeFile(live(`file-${i}`), `round ${i}`);
      ids.push((await backups.create({ volume: 'db', target, keepLast: 2 })).manifest.id);
    }
    const left = (await backups.list(target, 'db')).map((entry) => ('manifest' in entry ? entry.manifest.id : entry.id));
    // All four are one chain (full + 3 incrementals): keeping the newest two keeps everything they need.
    expect(left).to.deep.equal(ids);
    const full = (await backups.create({ volume: 'db', target, full: true, keepLast: 1 })).manifest.id;
    expect((await backups.list(target, 'db')).map((entry) => ('manifest' in entry ? entry.manifest.id : entry.id))).to.deep.equal([full]);
  });

  it('never restores over an existing volume, and refuses archives that would escape the volume', async () => {
    const { manifest } = await backups.create({ volume: 'db', target });
    const exists = await expectBerthError(backups.restore({ target, volume: 'db', id: manifest.id, to: 'db' }), 'ERR_VOLUME_EXISTS');
    expect(exists.message).to.contain('never overwrites');
    // Forge a backup whose tar climbs out through a symlink; its checksums are right, its content is not.
    const evil = join(targetDir.path, 'evil-src');
    await mkdir(evil);
    await symlink('/tmp', join(evil, 'escape'));
    const forged = join(targetDir.path, 'evil.tar.zst');
    await checkCommand(['tar', '--zstd', '-cf', forged, '-C', evil, '.']);
    await forgeObject(join(targetDir.path, 'db', manifest.id), 'data', await readFile(forged));
    const unsafe = await expectBerthError(backups.restore({ target, volume: 'db', id: manifest.id, to: 'db-evil' }), 'ERR_BACKUP_UNSAFE_ENTRY');
    expect(unsafe.message).to.contain('escape');
    expect(await stack.service.exists('db-evil')).to.equal(false);
    expect(await readdir(join(stack.root, 'volumes'))).to.deep.equal(['db']);
  });

  it('creates a volume from a backup with -o from-backup', async () => {
    const { manifest } = await backups.create({ volume: 'db', target });
    await stack.service.create('from-backup', { 'from-backup': join(targetDir.path, 'db', manifest.id) });
    expect(await fingerprint(join(stack.root, 'volumes', 'from-backup'))).to.deep.equal(await fingerprint(live()));
  });

  it('a volume made from a backup is on disk when it is ready: no extent left to allocate (delalloc)', async () => {
    const { manifest } = await backups.create({ volume: 'db', target });
    await stack.service.create('durable', { 'from-backup': join(targetDir.path, 'db', manifest.id) });
    // FIEMAP flags an extent still only in the page cache `delalloc` (ext4 and btrfs alike).
    for (const file of ['base/deep/table.dat', 'notes.txt']) {
      const extents = (await checkCommand(['filefrag', '-v', join(stack.root, 'volumes', 'durable', file)])).stdout;
      expect(extents, `extents of ${file}`).to.match(/extents? found/);
      expect(extents, `extents of ${file}`).to.not.include('delalloc');
    }
  });

  it('is always read from a snapshot: later writes do not leak into a running backup', async () => {
    // The backup reads the snapshot taken when it started, never the live tree.
    await truncate(live('base', 'deep', 'table.dat'), 8 * 1024 * 1024);
    const before = await fingerprint(live());
    const running = backups.create({ volume: 'db', target });
    await writeFile(live('written-during-backup'), 'late');
    const { manifest } = await running;
    await backups.restore({ target, volume: 'db', id: manifest.id, to: 'db-snapshot' });
    const restored = await fingerprint(join(stack.root, 'volumes', 'db-snapshot'));
    if ('written-during-backup' in restored) expect(restored).to.deep.equal({ ...before, 'written-during-backup': restored['written-during-backup']! });
    else expect(restored).to.deep.equal(before);
    await rename(live('written-during-backup'), live('renamed'));
  });

  it('warns about symlinks pointing outside the volume; restores them only when allowed', async () => {
    await symlink('/var/lib/app/current', live('current'));
    const result = await backups.create({ volume: 'db', target });
    expect(result.warnings).to.deep.equal(['1 symlink(s) point outside the volume (e.g. current -> /var/lib/app/current); restoring this backup needs --allow-escaping-symlinks']);
    const refused = await expectBerthError(backups.restore({ target, volume: 'db', id: result.manifest.id, to: 'refused' }), 'ERR_BACKUP_UNSAFE_ENTRY');
    expect(refused.message).to.contain('current');
    expect(await stack.service.exists('refused')).to.equal(false);
    await backups.restore({ target, volume: 'db', id: result.manifest.id, to: 'allowed', allowEscapingSymlinks: true });
    expect(await fingerprint(join(stack.root, 'volumes', 'allowed'))).to.deep.equal(await fingerprint(live()));
  });
  it("an incremental's index holds only the files it read again: an unchanged re-run stores next to nothing, and the chain restores exactly after retention", async () => {
    const full = (await backups.create({ volume: 'db', target })).manifest;
    expect(full.format).to.equal('berth-backup/1');
    await appendFile(live('notes.txt'), 'more\n');
    const first = (await backups.create({ volume: 'db', target })).manifest;
    expect(first.format).to.equal('berth-backup/2');
    // The appended file's hashes; not the 16 MiB table's 64 KiB of them (unchanged: read again here,
    // where snapshots are copies with new inodes, but none of its blocks changed).
    expect(first.objects.index.bytes).to.be.below(1024);
    const handle = await open(live('base', 'deep', 'table.dat'), 'r+');
    await handle.write(randomBytes(4096), 0, 4096, 4096 * 100);
    await handle.close();
    await rm(live('empty'));
    const second = (await backups.create({ volume: 'db', target })).manifest;
    // One page of the table changed: the hash of that block only.
    expect(second.objects.index.bytes).to.be.below(1024);
    const unchanged = await backups.create({ volume: 'db', target, keepLast: 1 });
    expect(unchanged.manifest.stats.storedBytes).to.be.below(4096);
    // Retention keeps what the newest needs: the whole chain.
    expect(unchanged.removedByRetention).to.deep.equal([]);
    expect((await backups.list(target, 'db')).map((entry) => ('manifest' in entry ? entry.manifest.id : entry.id))).to.deep.equal([full.id, first.id, second.id, unchanged.manifest.id]);
    await backups.verify(target, 'db', unchanged.manifest.id);

    const expected = await fingerprint(live());
    await backups.restore({ target, volume: 'db', id: unchanged.manifest.id, to: 'db-unchanged' });
    expect(await fingerprint(join(stack.root, 'volumes', 'db-unchanged'))).to.deep.equal(expected);
    // The next incremental chains onto the folded index: the table is not read again.
    await writeFile(live('later.txt'), 'later\n');
    const next = (await backups.create({ volume: 'db', target })).manifest;
    expect(next.parent).to.equal(unchanged.manifest.id);
    expect(next.stats.changedBytes).to.equal('later\n'.length);
    // A new full backup, then retention of one: the old chain goes, the new one restores alone.
    const fresh = (await backups.create({ volume: 'db', target, full: true, keepLast: 1 })).manifest;
    await writeFile(live('notes.txt'), 'rewritten\n');
    const after = await backups.create({ volume: 'db', target, keepLast: 1 });
    expect(after.manifest.chain).to.deep.equal([fresh.id]);
    expect((await backups.list(target, 'db')).map((entry) => ('manifest' in entry ? entry.manifest.id : entry.id))).to.deep.equal([fresh.id, after.manifest.id]);
    await backups.restore({ target, volume: 'db', id: after.manifest.id, to: 'db-after-retention' });
    expect(await fingerprint(join(stack.root, 'volumes', 'db-after-retention'))).to.deep.equal(await fingerprint(live()));
  });

  it('a corrupted block in an incremental chain is named on restore, and no volume is left', async () => {
    await backups.create({ volume: 'db', target });
    const handle = await open(live('base', 'deep', 'table.dat'), 'r+');
    for (const page of [3, 700, 2048]) await handle.write(randomBytes(4096), 0, 4096, page * 4096);
    await handle.close();
    const { manifest } = await backups.create({ volume: 'db', target });
    expect(manifest.stats.changedBytes).to.equal(3 * 4096);
    const backupDir = join(targetDir.path, 'db', manifest.id);
    const deltasPath = join(backupDir, manifest.objects.deltas!.file);
    const stored = await readFile(deltasPath);

    // Damaged bytes: the object's checksum names it.
    const flipped = Buffer.from(stored);
    flipped[flipped.length - 100]! ^= 0x01;
    await writeFile(deltasPath, flipped);
    const damaged = await expectBerthError(backups.restore({ target, volume: 'db', id: manifest.id, to: 'db-damaged' }), 'ERR_BACKUP_CORRUPT');
    expect(damaged.message).to.contain(`backup db/${manifest.id} ${manifest.objects.deltas!.file} is corrupt`);
    expect(await stack.service.exists('db-damaged')).to.equal(false);

    // A wrong block with every checksum right: the block hashes of the restored file name it.
    const deltas = await zstd('decompress', stored);
    // The first file record is the table's: [u32 header length][header][u32 block][u32 length][bytes]...
    expect(JSON.parse(deltas.subarray(4, 4 + deltas.readUInt32BE(0)).toString()).path).to.equal('base/deep/table.dat');
    deltas[4 + deltas.readUInt32BE(0) + 8 + 100]! ^= 0x01;
    await forgeObject(backupDir, 'deltas', await zstd('compress', deltas));
    const wrong = await expectBerthError(backups.restore({ target, volume: 'db', id: manifest.id, to: 'db-wrong' }), 'ERR_BACKUP_CORRUPT');
    expect(wrong.message).to.equal(`restored base/deep/table.dat does not match backup db/${manifest.id}`);
    expect(await stack.service.exists('db-wrong')).to.equal(false);
    expect(await readdir(join(stack.root, 'volumes'))).to.deep.equal(['db']);
  });

  it('names a corrupt or truncated large object on restore (zstd reads it, the checksum is computed beside it)', async () => {
    await writeFile(live('base', 'big.bin'), randomBytes(40 * 1024 * 1024));
    const { manifest } = await backups.create({ volume: 'db', target });
    const data = join(targetDir.path, 'db', manifest.id, manifest.objects.data.file);
    const original = await readFile(data);
    expect(original.length).to.be.above(32 * 1024 * 1024);
    await backups.restore({ target, volume: 'db', id: manifest.id, to: 'db-big' });
    expect(await fingerprint(join(stack.root, 'volumes', 'db-big'))).to.deep.equal(await fingerprint(live()));

    const flipped = Buffer.from(original);
    flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
    await writeFile(data, flipped);
    const corrupt = await expectBerthError(backups.restore({ target, volume: 'db', id: manifest.id, to: 'db-corrupt' }), 'ERR_BACKUP_CORRUPT');
    expect(corrupt.message).to.equal(`backup db/${manifest.id} ${manifest.objects.data.file} is corrupt: checksum mismatch`);
    await writeFile(data, original.subarray(0, original.length - 4096));
    const truncated = await expectBerthError(backups.restore({ target, volume: 'db', id: manifest.id, to: 'db-truncated' }), 'ERR_BACKUP_TRUNCATED');
    expect(truncated.message).to.contain(`backup db/${manifest.id} ${manifest.objects.data.file} is truncated`);
    await expectBerthError(backups.verify(target, 'db', manifest.id), 'ERR_BACKUP_TRUNCATED');
    expect(await readdir(join(stack.root, 'volumes'))).to.deep.equal(['db', 'db-big']);
  });
});
