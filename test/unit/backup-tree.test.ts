import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, createReadStream } from 'node:fs';
import { appendFile, chmod, lchown, lstat, lutimes, mkdir, readdir, readFile, readlink, rm, symlink, link, utimes, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { pack as tarPack } from 'tar-stream';
import { compareTreePaths, parentTreePath } from '../../volume-driver/backups/tree/tree-entry.js';
import { readRootMetadata, walkTree } from '../../volume-driver/backups/tree/walk-tree.js';
import { packTree } from '../../volume-driver/backups/tree/tar-pack.js';
import { extractTree, openForPatch, removePath, safeResolve, writeFileFrom } from '../../volume-driver/backups/tree/safe-extract.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { requirePrerequisites } from '../helpers/prerequisites.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const run = promisify(execFile);
const OWNER = { uid: 1234, gid: 5678 };
const OLD = new Date('2001-09-09T01:46:40Z');
const LONG_DIRS = `long/${'d'.repeat(80)}/${'e'.repeat(80)}`;
const LONG_FILE = `${LONG_DIRS}/${'f'.repeat(120)}.txt`;
const MiB = 1024 * 1024;

interface Spec {
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'hardlink' | 'fifo';
  mode?: number;
  content?: Buffer | string;
  target?: string;
  uid?: number;
  gid?: number;
  mtime?: Date;
}

/** Everything the format must carry: types, special modes, owners, odd names, long paths, old and far mtimes. */
function treeSpec(random: Buffer): Spec[] {
  return [
    { path: 'docs', type: 'directory', mode: 0o755 },
    { path: 'docs/readme.txt', type: 'file', mode: 0o644, content: 'hello\n' },
    { path: 'empty', type: 'file', mode: 0o644, content: '' },
    { path: 'random.bin', type: 'file', mode: 0o644, content: random },
    { path: 'nested', type: 'directory', mode: 0o755 },
    { path: 'nested/a', type: 'directory', mode: 0o755 },
    { path: 'nested/a/b', type: 'directory', mode: 0o700 },
    { path: 'nested/a/b/deep.txt', type: 'file', mode: 0o600, content: 'deep' },
    { path: 'nested/a/up', type: 'symlink', target: '../../docs' },
    { path: 'empty-dir', type: 'directory', mode: 0o700 },
    { path: 'sticky', type: 'directory', mode: 0o1777 },
    { path: 'setgid-dir', type: 'directory', mode: 0o2755 },
    { path: 'setuid-tool', type: 'file', mode: 0o4755, content: '#!/bin/sh\n' },
    { path: 'no-perms', type: 'file', mode: 0o000, content: 'secret' },
    { path: 'with space.txt', type: 'file', mode: 0o644, content: 'space' },
    { path: 'ünïcödé 名前.txt', type: 'file', mode: 0o644, content: 'unicode' },
    { path: 'new\nline.txt', type: 'file', mode: 0o644, content: 'newline' },
    { path: 'long', type: 'directory', mode: 0o755 },
    { path: `long/${'d'.repeat(80)}`, type: 'directory', mode: 0o755 },
    { path: LONG_DIRS, type: 'directory', mode: 0o755 },
    { path: LONG_FILE, type: 'file', mode: 0o644, content: 'long' },
    { path: 'long-link', type: 'symlink', target: LONG_FILE },
    { path: 'link-inside', type: 'symlink', target: 'docs/readme.txt' },
    { path: 'dangling', type: 'symlink', target: 'missing-target' },
    { path: 'hard-1', type: 'hardlink', target: 'docs/readme.txt' },
    { path: 'nested/hard-2', type: 'hardlink', target: 'docs/readme.txt' },
    { path: 'pipe', type: 'fifo', mode: 0o640 },
    { path: 'big-ids', type: 'file', mode: 0o644, content: 'ids', uid: 3_000_000, gid: 3_000_001 },
    { path: 'ancient', type: 'file', mode: 0o644, content: '1969', mtime: new Date('1969-01-01T00:00:00Z') },
    { path: 'future', type: 'file', mode: 0o644, content: '2040', mtime: new Date('2040-01-01T00:00:00Z') },
  ];
}

async function buildTree(root: string, specs: Spec[]): Promise<void> {
  for (const spec of specs) {
    const path = join(root, spec.path);
    if (spec.type === 'directory') await mkdir(path);
    else if (spec.type === 'file') await writeFile(path, spec.content ?? '');
    else if (spec.type === 'symlink') await symlink(spec.target!, path);
    else if (spec.type === 'hardlink') await link(join(root, spec.target!), path);
    else await run('mkfifo', ['--', path]);
    if (spec.type === 'hardlink') continue;
    await lchown(path, spec.uid ?? OWNER.uid, spec.gid ?? OWNER.gid);
    if (spec.type !== 'symlink') await chmod(path, spec.mode!);
  }
  // mtimes last, directories deepest first, so nothing created later bumps them.
  for (const spec of [...specs].reverse()) {
    if (spec.type === 'hardlink') continue;
    const time = spec.mtime ?? OLD;
    if (spec.type === 'symlink') await lutimes(join(root, spec.path), time, time);
    else await utimes(join(root, spec.path), time, time);
  }
  await lchown(root, OWNER.uid, OWNER.gid);
  await chmod(root, 0o750);
  await utimes(root, OLD, OLD);
}

interface Described {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size: number;
  sha256?: string;
  link?: string;
}

/** An independent description of a tree (not walkTree): per path metadata, content hashes, link targets, hard-link groups. */
async function describeTree(root: string): Promise<{ entries: Record<string, Described>; hardlinkGroups: string[][] }> {
  const entries: Record<string, Described> = {};
  const inodes = new Map<number, string[]>();
  const visit = async (relative: string): Promise<void> => {
    const absolute = relative === '.' ? root : join(root, relative);
    const stats = await lstat(absolute);
    const type = stats.isFile() ? 'file' : stats.isDirectory() ? 'directory' : stats.isSymbolicLink() ? 'symlink' : stats.isFIFO() ? 'fifo' : 'other';
    const described: Described = { type, mode: stats.mode & 0o7777, uid: stats.uid, gid: stats.gid, mtime: Math.floor(stats.mtimeMs / 1000), size: type === 'file' ? stats.size : 0 };
    if (type === 'file') described.sha256 = await sha256(absolute);
    if (type === 'symlink') described.link = await readlink(absolute);
    entries[relative] = described;
    if (type !== 'directory' && stats.nlink > 1) inodes.set(stats.ino, [...(inodes.get(stats.ino) ?? []), relative]);
    if (type === 'directory') {
      for (const name of (await readdir(absolute)).sort()) await visit(relative === '.' ? name : `${relative}/${name}`);
    }
  };
  await visit('.');
  const hardlinkGroups = [...inodes.values()].map((group) => group.sort()).sort((a, b) => a[0]!.localeCompare(b[0]!));
  return { entries, hardlinkGroups };
}

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) all.push(item);
  return all;
}

async function* iterate<T>(items: T[]): AsyncGenerator<T> {
  yield* items;
}

async function consume(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Runs GNU tar with `input` on stdin; rejects with its stderr on failure. */
function gnuTar(args: string[], input?: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', args, { stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`tar ${args.join(' ')} exited ${code}: ${stderr}`))));
    if (input) {
      input.on('error', (error) => {
        child.kill();
        reject(error);
      });
      input.pipe(child.stdin!);
    }
  });
}

describe('backup file trees', function () {
  this.timeout(60_000);
  let temp: { path: string; dispose(): Promise<void> };
  let source: string;
  let expected: Awaited<ReturnType<typeof describeTree>>;

  before(async () => {
    // Owners, setuid bits and fifos need root; GNU tar is the reference extractor and archiver.
    requirePrerequisites(['tar', 'mkfifo']);
    temp = await makeTempDir('berth-tree-');
    source = join(temp.path, 'source');
    await mkdir(source);
    await buildTree(source, treeSpec(randomBytes(5 * MiB)));
    expected = await describeTree(source);
  });
  after(async () => temp.dispose());

  const freshDir = async (name: string): Promise<string> => {
    const path = join(temp.path, name);
    await mkdir(path);
    return path;
  };

  it('orders paths component by component, by code point', () => {
    const paths = ['a-c', '\u{1F600}', 'a/b', 'b', '\uFFFD', 'a', 'a/b/c', 'é'];
    expect([...paths].sort(compareTreePaths)).to.deep.equal(['a', 'a/b', 'a/b/c', 'a-c', 'b', 'é', '\uFFFD', '\u{1F600}']);
  });

  it('walks deterministically, parents first, without following symlinks, with hard links named once', async () => {
    const entries = await collect(walkTree(source));
    const paths = entries.map((entry) => entry.path);
    expect(paths).to.deep.equal([...paths].sort(compareTreePaths));
    expect(await collect(walkTree(source))).to.deep.equal(entries);
    const seen = new Set<string>(['']);
    for (const entry of entries) {
      expect(seen.has(parentTreePath(entry.path)), entry.path).to.equal(true);
      seen.add(entry.path);
    }
    expect(Object.keys(expected.entries).filter((path) => path !== '.').sort()).to.deep.equal([...paths].sort());
    const byPath = new Map(entries.map((entry) => [entry.path, entry]));
    expect(byPath.get('docs/readme.txt')).to.include({ type: 'file', size: 6, mode: 0o644 });
    expect(byPath.get('hard-1')).to.include({ type: 'hardlink', linkTarget: 'docs/readme.txt', size: 0 });
    expect(byPath.get('nested/hard-2')).to.include({ type: 'hardlink', linkTarget: 'docs/readme.txt' });
    expect(byPath.get('nested/a/up')).to.include({ type: 'symlink', linkTarget: '../../docs' });
    expect(byPath.get('setuid-tool')).to.include({ mode: 0o4755 });
    expect(byPath.get('sticky')).to.include({ type: 'directory', mode: 0o1777 });
    expect(byPath.get('pipe')).to.include({ type: 'fifo', mode: 0o640 });
    expect(byPath.get('new\nline.txt')).to.include({ type: 'file' });
    expect(byPath.get('big-ids')).to.include({ uid: 3_000_000, gid: 3_000_001 });
    expect(await readRootMetadata(source)).to.include({ mode: 0o750, mtimeMs: OLD.getTime() });
  });

  it('reports and skips sockets', async () => {
    const root = await freshDir('with-socket');
    await writeFile(join(root, 'file'), 'x');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(root, 'sock'), resolve));
    try {
      const skipped: Array<[string, string]> = [];
      const entries = await collect(walkTree(root, { onSkip: (path, reason) => skipped.push([path, reason]) }));
      expect(entries.map((entry) => entry.path)).to.deep.equal(['file']);
      expect(skipped).to.deep.equal([['sock', 'it is a socket']]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('packs a tree that extractTree restores faithfully', async () => {
    const target = await freshDir('restored-by-extract-tree');
    let progress = 0;
    const summary = await extractTree(packTree(source, walkTree(source)), target, { onProgress: (bytes) => (progress = bytes) });
    expect(await describeTree(target)).to.deep.equal(expected);
    expect(summary).to.include({ symlinks: 4, hardlinks: 2, fifos: 1, files: 13, directories: 10 });
    expect(summary.bytes).to.be.greaterThan(5 * MiB);
    expect(progress).to.equal(summary.bytes);
  });

  it('packs a standard tar that GNU tar extracts faithfully', async () => {
    const target = await freshDir('restored-by-gnu-tar');
    await gnuTar(['-xpf', '-', '--numeric-owner', '-C', target], packTree(source, walkTree(source)));
    expect(await describeTree(target)).to.deep.equal(expected);
  });

  for (const format of ['gnu', 'posix']) {
    it(`extracts archives GNU tar made (${format} format)`, async () => {
      const target = await freshDir(`from-gnu-${format}`);
      const archive = join(temp.path, `source-${format}.tar`);
      await gnuTar(['-C', source, `--format=${format}`, '-cf', archive, '.']);
      await extractTree(createReadStream(archive), target);
      expect(await describeTree(target)).to.deep.equal(expected);
    });
  }

  it('carries extra entries and hands them to onEntry; replaced content goes in as given', async () => {
    const root = await freshDir('small');
    await writeFile(join(root, 'f'), 'original');
    await writeFile(join(root, 'g'), 'kept');
    const archive = await consume(
      packTree(root, walkTree(root), {
        extraEntries: [{ name: '.berth/', type: 'directory' }, { name: '.berth/meta.json', content: Buffer.from('{"a":1}') }],
        trailingEntries: () => [{ name: '.berth/trailer', content: Buffer.from('end') }],
        contentFor: (entry) => (entry.path === 'f' ? { content: [Buffer.from('replaced!!')], size: 10 } : undefined),
      }),
    );
    const listing = await gnuTar(['-tf', '-'], Readable.from([archive]));
    expect(listing.split('\n').filter(Boolean)).to.deep.equal(['./', '.berth', '.berth/meta.json', 'f', 'g', '.berth/trailer']);
    const target = await freshDir('small-restored');
    const seen: Record<string, string> = {};
    const summary = await extractTree(Readable.from([archive]), target, {
      onEntry: (entry) => {
        if (!entry.path.startsWith('.berth')) return 'extract';
        if (entry.type !== 'file') return 'skip';
        return async (content) => {
          const chunks: Buffer[] = [];
          for await (const chunk of content) chunks.push(chunk);
          seen[entry.path] = Buffer.concat(chunks).toString();
        };
      },
    });
    expect(seen).to.deep.equal({ '.berth/meta.json': '{"a":1}', '.berth/trailer': 'end' });
    expect(summary).to.include({ files: 2, skipped: 3 });
    expect((await readdir(target)).sort()).to.deep.equal(['f', 'g']);
    expect(await readFile(join(target, 'f'), 'utf8')).to.equal('replaced!!');

    const wrongSize = packTree(root, walkTree(root), { contentFor: () => ({ content: [Buffer.from('abc')], size: 5 }) });
    expect((await expectBerthError(consume(wrongSize), 'ERR_BACKUP_SOURCE_CHANGED')).message).to.equal('content for f is 3 bytes, not the 5 announced');
  });

  it('tells a corrupt archive, a truncated one and a failing input apart', async () => {
    const root = await freshDir('malformed');
    await writeFile(join(root, 'a'), randomBytes(4096));
    await writeFile(join(root, 'b'), 'b');
    const archive = await consume(packTree(root, walkTree(root)));
    const corrupt = Buffer.from(archive);
    corrupt.fill(7, 512 * 10, 512 * 10 + 100); // the header of 'b', after './' (1 block) and 'a' (1 + 8 blocks)
    let attempts = 0;
    const attempt = async (input: Readable) => extractTree(input, await freshDir(`malformed-${++attempts}`));
    expect((await expectBerthError(attempt(Readable.from([corrupt])), 'ERR_BACKUP_CORRUPT')).message).to.match(/^archive is corrupt: /);
    await expectBerthError(attempt(Readable.from([archive.subarray(0, 512 * 5)])), 'ERR_BACKUP_TRUNCATED');
    const target = await freshDir('malformed-input');
    const failing = new Readable({ read() {} });
    failing.push(archive.subarray(0, 1024));
    setImmediate(() => failing.destroy(new Error('connection reset')));
    expect((await expectBerthError(extractTree(failing, target), 'ERR_STORAGE')).message).to.equal('cannot read the archive: connection reset');
  });

  describe('refuses unsafe archives made by GNU tar, writing nothing outside the target', () => {
    let parent: string;
    let target: string;
    let work: string;
    let count = 0;

    beforeEach(async () => {
      count++;
      parent = await freshDir(`unsafe-${count}`);
      target = join(parent, 'target');
      await mkdir(target);
      work = await freshDir(`unsafe-work-${count}`);
    });

    const expectRefused = async (archive: string, entry: string, reason: string, options: { allowEscapingSymlinks?: boolean } = {}): Promise<void> => {
      const before = (await readdir(parent)).sort();
      const error = await expectBerthError(extractTree(createReadStream(archive), target, options), 'ERR_BACKUP_UNSAFE_ENTRY');
      expect(error.message).to.equal(`archive entry ${JSON.stringify(entry)} is unsafe: ${reason}`);
      expect((await readdir(parent)).sort()).to.deep.equal(before);
    };

    it('a ../ path', async () => {
      await mkdir(join(work, 'sub'));
      await writeFile(join(work, 'evil'), 'evil');
      const archive = join(work, 'x.tar');
      await gnuTar(['-C', join(work, 'sub'), '-cPf', archive, '../evil']);
      await expectRefused(archive, '../evil', 'the name has a ".." component');
    });

    it('an absolute path', async () => {
      const outside = join(parent, 'abs');
      await writeFile(outside, 'abs');
      const archive = join(work, 'x.tar');
      await gnuTar(['-cPf', archive, outside]);
      await rm(outside);
      await expectRefused(archive, outside, 'the name is an absolute path');
    });

    it('a file under a symlink to .. (and under any symlink)', async () => {
      await mkdir(join(work, 's1'));
      await symlink('..', join(work, 's1', 'a'));
      await mkdir(join(work, 's2', 'a'), { recursive: true });
      await writeFile(join(work, 's2', 'a', 'x'), 'x');
      const archive = join(work, 'x.tar');
      await gnuTar(['-cf', archive, '-C', join(work, 's1'), 'a', '-C', join(work, 's2'), 'a/x']);
      await expectRefused(archive, 'a', 'its symlink target ".." leads outside the tree');
      await rm(target, { recursive: true });
      await mkdir(target);
      await expectRefused(archive, 'a/x', 'its parent "a" is not a directory extracted before it', { allowEscapingSymlinks: true });
      expect(await readdir(target)).to.deep.equal(['a']);

      await mkdir(join(work, 's3', 'sub'), { recursive: true });
      await symlink('sub', join(work, 's3', 'a'));
      const inside = join(work, 'inside.tar');
      await gnuTar(['-cf', inside, '-C', join(work, 's3'), 'sub', 'a', '-C', join(work, 's2'), 'a/x']);
      await rm(target, { recursive: true });
      await mkdir(target);
      await expectRefused(inside, 'a/x', 'its parent "a" is not a directory extracted before it');
      expect(await readdir(join(target, 'sub'))).to.deep.equal([]);
    });

    it('symlinks to absolute paths or out of the tree', async () => {
      await symlink('/etc/passwd', join(work, 'p'));
      const archive = join(work, 'x.tar');
      await gnuTar(['-C', work, '-cf', archive, 'p']);
      await expectRefused(archive, 'p', 'its symlink target "/etc/passwd" is absolute');

      await mkdir(join(work, 'd'));
      await symlink('../../x', join(work, 'd', 'l'));
      await symlink('d/../..', join(work, 'm'));
      const climbing = join(work, 'climb.tar');
      await gnuTar(['-C', work, '-cf', climbing, 'd']);
      await expectRefused(climbing, 'd/l', 'its symlink target "../../x" leads outside the tree');
      const sneaky = join(work, 'sneaky.tar');
      await gnuTar(['-C', work, '-cf', sneaky, 'm']);
      await rm(target, { recursive: true });
      await mkdir(target);
      await expectRefused(sneaky, 'm', 'its symlink target "d/../.." has ".." after a name');
    });

    it('a hard link to ../outside', async () => {
      await writeFile(join(parent, 'outside'), 'secret');
      await writeFile(join(work, 't'), 'hi');
      await link(join(work, 't'), join(work, 'link'));
      const archive = join(work, 'x.tar');
      await gnuTar(['-C', work, '-cPf', archive, '--transform', 's,^t$,../outside,RS', 't', 'link']);
      await expectRefused(archive, 'link', 'its hard link target "../outside": the name has a ".." component');
      expect((await lstat(join(parent, 'outside'))).nlink).to.equal(1);
      expect(await readdir(target)).to.deep.equal(['t']);
    });

    it('device nodes', async () => {
      const archive = join(work, 'x.tar');
      await gnuTar(['-C', '/dev', '-cf', archive, 'null']);
      await expectRefused(archive, 'null', 'it is a device node');
    });

    it('NUL bytes in names (pax) and hard links to entries not extracted yet', async () => {
      const pack = tarPack();
      pack.entry({ name: 'x', pax: { path: 'a\0b' } }, 'data');
      pack.finalize();
      const archive = join(work, 'nul.tar');
      await writeFile(archive, await consume(Readable.from(pack)));
      await expectRefused(archive, 'a\0b', 'the name contains a NUL byte');

      const early = tarPack();
      early.entry({ name: 'link', type: 'link', linkname: 'later' });
      early.entry({ name: 'later' }, 'data');
      early.finalize();
      const earlyArchive = join(work, 'early.tar');
      await writeFile(earlyArchive, await consume(Readable.from(early)));
      await expectRefused(earlyArchive, 'link', 'its hard link target "later" was not extracted before it');
    });
  });

  describe('a source that changes while packing', () => {
    let root: string;
    let count = 0;
    beforeEach(async () => {
      root = await freshDir(`changing-${++count}`);
      await writeFile(join(root, 'grow.bin'), randomBytes(5 * MiB));
    });

    it('fails when a file changed after the walk', async () => {
      const entries = await collect(walkTree(root));
      await appendFile(join(root, 'grow.bin'), 'more');
      const error = await expectBerthError(consume(packTree(root, iterate(entries))), 'ERR_BACKUP_SOURCE_CHANGED');
      expect(error.message).to.equal(`file grow.bin changed size after being walked (${5 * MiB} bytes, now ${5 * MiB + 4}); back up from a snapshot`);
    });

    it('fails when a file grows while being read, before the archive is complete', async () => {
      let grown = false;
      const stream = packTree(root, walkTree(root), {
        onProgress: () => {
          if (grown) return;
          grown = true;
          appendFileSync(join(root, 'grow.bin'), 'more');
        },
      });
      const error = await expectBerthError(consume(stream), 'ERR_BACKUP_SOURCE_CHANGED');
      expect(error.message).to.equal('file grow.bin grew while being read; back up from a snapshot');
      expect(grown).to.equal(true);
    });
  });

  describe('building blocks for an incremental applier', () => {
    let target: string;
    const meta = { mode: 0o640, uid: 0, gid: 0, mtimeMs: OLD.getTime() };
    beforeEach(async () => {
      target = await freshDir(`applier-${Date.now()}`);
      await mkdir(join(target, 'real'));
      await writeFile(join(target, 'real', 'keep'), 'keep');
      await symlink('real', join(target, 'link'));
    });

    it('resolves only through real directories inside the target', async () => {
      expect(await safeResolve(target, 'real/x')).to.equal(join(target, 'real/x'));
      expect(await safeResolve(target, '')).to.equal(target);
      expect((await expectBerthError(safeResolve(target, 'link/x'), 'ERR_BACKUP_UNSAFE_ENTRY')).message).to.equal('path "link/x" is unsafe: its parent "link" is not a directory');
      await expectBerthError(safeResolve(target, '../x'), 'ERR_BACKUP_UNSAFE_ENTRY');
      await expectBerthError(safeResolve(target, '/etc/passwd'), 'ERR_BACKUP_UNSAFE_ENTRY');
      await expectBerthError(safeResolve(target, 'missing/x'), 'ERR_BACKUP_UNSAFE_ENTRY');
    });

    it('writes new files, replaces a symlink rather than writing through it, patches only regular files', async () => {
      await expectBerthError(writeFileFrom([Buffer.from('x')], join(target, 'link'), meta), 'ERR_BACKUP_UNSAFE_ENTRY');
      const progress: number[] = [];
      const written = await writeFileFrom([Buffer.from('ne'), Buffer.from('w')], await safeResolve(target, 'link'), meta, { replace: true, onBytes: (bytes) => progress.push(bytes) });
      // Progress is a running total, reported per write batch (small chunks are gathered).
      expect([written, progress.at(-1)]).to.deep.equal([3, 3]);
      const stats = await lstat(join(target, 'link'));
      expect(stats.isFile()).to.equal(true);
      expect(stats.mode & 0o7777).to.equal(0o640);
      expect(stats.mtimeMs).to.equal(OLD.getTime());
      expect(await readdir(join(target, 'real'))).to.deep.equal(['keep']);
      await symlink('real/keep', join(target, 'keep-link'));
      await expectBerthError(openForPatch(join(target, 'keep-link')), 'ERR_BACKUP_UNSAFE_ENTRY');
      const handle = await openForPatch(join(target, 'real', 'keep'));
      await handle.write(Buffer.from('K'), 0, 1, 0);
      await handle.close();
      expect(await readFile(join(target, 'real', 'keep'), 'utf8')).to.equal('Keep');
    });

    it('removes a symlink to a directory without touching the directory', async () => {
      await removePath(target, 'link');
      await removePath(target, 'link');
      expect((await readdir(target)).sort()).to.deep.equal(['real']);
      expect(await readdir(join(target, 'real'))).to.deep.equal(['keep']);
    });
  });
});
