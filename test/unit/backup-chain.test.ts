import { expect } from 'chai';
import { BACKUP_FORMAT_FULL_INDEX, BACKUP_FORMAT_PARTIAL_INDEX, formatFor, parseManifest, type BackupManifest } from '../../volume-driver/backups/backup-manifest.js';
import { parseBlockIndex, parseIndexRecords, patchOf, serializeBlockIndex, type BlockIndex, type FileIndexEntry } from '../../volume-driver/backups/block-index.js';
import { applyPatch, chainIndex, foldIndex, parseTreeListing } from '../../volume-driver/backups/chain-index.js';
import type { TreeEntry } from '../../volume-driver/backups/tree/tree-entry.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';

function entry(path: string, size: number, fill: number): FileIndexEntry {
  return { path, size, mtimeMs: fill, ctimeMs: fill, ino: fill, hashes: Buffer.alloc(Math.ceil(size / 4096) * 16, fill) };
}

function indexOf(...entries: FileIndexEntry[]): BlockIndex {
  return new Map(entries.map((each) => [each.path, each]));
}

function listingOf(...entries: Array<[string, TreeEntry['type'], number?]>): Map<string, TreeEntry> {
  return new Map(entries.map(([path, type, size]) => [path, { path, type, mode: 0o644, uid: 0, gid: 0, mtimeMs: 0, size: size ?? 0 }]));
}

function manifest(id: string, kind: 'full' | 'incremental', format: string): BackupManifest {
  const object = { file: 'x', sha256: 'a'.repeat(64), bytes: 1 };
  return {
    format,
    id,
    volume: 'v',
    kind,
    ...(kind === 'incremental' ? { parent: 'p' } : {}),
    chain: kind === 'incremental' ? ['p'] : [],
    createdAt: '',
    snapshot: '',
    compression: 'zstd',
    objects: kind === 'incremental' ? { data: object, index: object, tree: object, deltas: object } : { data: object, index: object },
    root: { mode: 0o755, uid: 0, gid: 0 },
    stats: { files: 0, logicalBytes: 0, changedBytes: 0, storedBytes: 0, durationMs: 0 },
    agentVersion: 'test',
  } as BackupManifest;
}

describe('backup chains and their block indexes', () => {
  it('writes full backups as berth-backup/1 and incrementals as /2; reads both, refuses a /2 full and unknown formats', () => {
    expect(formatFor('full')).to.equal(BACKUP_FORMAT_FULL_INDEX);
    expect(formatFor('incremental')).to.equal(BACKUP_FORMAT_PARTIAL_INDEX);
    for (const [kind, format] of [
      ['full', 'berth-backup/1'],
      ['incremental', 'berth-backup/1'],
      ['incremental', 'berth-backup/2'],
    ] as const) {
      expect(parseManifest(JSON.stringify(manifest('i', kind, format)), 'm').format).to.equal(format);
    }
    return Promise.all([
      expectBerthError(Promise.resolve().then(() => parseManifest(JSON.stringify(manifest('i', 'full', 'berth-backup/2')), 'backup v/i')), 'ERR_BACKUP_CORRUPT').then((error) =>
        expect(error.message).to.equal('backup v/i is corrupt: a full backup cannot be berth-backup/2'),
      ),
      expectBerthError(Promise.resolve().then(() => parseManifest(JSON.stringify(manifest('i', 'incremental', 'berth-backup/3')), 'backup v/i')), 'ERR_BACKUP_CORRUPT').then((error) =>
        expect(error.message).to.contain('format "berth-backup/3" is not one of berth-backup/1, berth-backup/2'),
      ),
    ]);
  });

  it('folds an index of the files read again onto its parent: unchanged files inherit, deleted ones drop out', () => {
    const parent = indexOf(entry('a', 5000, 1), entry('b', 100, 2), entry('gone', 10, 3));
    const own = indexOf(entry('b', 9000, 4), entry('new', 1, 5));
    const listing = listingOf(['a', 'file', 5000], ['b', 'file', 9000], ['d', 'directory'], ['new', 'file', 1], ['link', 'hardlink']);
    const folded = foldIndex(parent, own, listing, 'backup v/2');
    expect([...folded.keys()]).to.deep.equal(['a', 'b', 'new']);
    expect(folded.get('a')).to.equal(parent.get('a'));
    expect(folded.get('b')).to.equal(own.get('b'));
  });

  it('names an index that does not fit the tree listing', () => {
    const parent = indexOf(entry('a', 5000, 1));
    expect(() => foldIndex(parent, new Map(), listingOf(['a', 'file', 5000], ['b', 'file', 1]), 'backup v/2')).to.throw("backup v/2 is corrupt: its tree lists b, which neither its index nor its parent's has");
    expect(() => foldIndex(parent, indexOf(entry('x', 1, 2)), listingOf(['a', 'file', 5000]), 'backup v/2')).to.throw('backup v/2 is corrupt: its index lists x, which its tree listing has as no file');
    expect(() => foldIndex(parent, new Map(), listingOf(['a', 'file', 4000]), 'backup v/2')).to.throw('backup v/2 is corrupt: its index and its tree listing disagree on the size of a');
  });

  it('starts from the last complete index of a chain: a full backup, or an incremental of format /1', async () => {
    const full = manifest('f', 'full', BACKUP_FORMAT_FULL_INDEX);
    const oldIncremental = manifest('i1', 'incremental', BACKUP_FORMAT_FULL_INDEX);
    const partial = manifest('i2', 'incremental', BACKUP_FORMAT_PARTIAL_INDEX);
    const asked: string[] = [];
    const indexes: Record<string, BlockIndex> = {
      f: indexOf(entry('a', 10, 1)),
      i1: indexOf(entry('a', 10, 1), entry('b', 20, 2)),
      i2: indexOf(entry('b', 30, 3)),
    };
    const sources = {
      index: async (each: BackupManifest) => {
        asked.push(`index ${each.id}`);
        return indexes[each.id]!;
      },
      listing: async (each: BackupManifest) => {
        asked.push(`tree ${each.id}`);
        return listingOf(['a', 'file', 10], ['b', 'file', each.id === 'i1' ? 20 : 30]);
      },
    };
    const index = await chainIndex([full, oldIncremental, partial], sources);
    expect(asked).to.deep.equal(['index i1', 'index i2', 'tree i2']);
    expect(index.get('a')?.hashes[0]).to.equal(1);
    expect(index.get('b')?.hashes[0]).to.equal(3);
    asked.length = 0;
    await chainIndex([full, { ...partial, id: 'i1' }, partial], { ...sources, index: async (each) => (asked.push(`index ${each.id}`), each.id === 'f' ? indexOf(entry('a', 10, 1), entry('b', 20, 2)) : indexes[each.id]!) });
    expect(asked).to.deep.equal(['index f', 'index i1', 'tree i1', 'index i2', 'tree i2']);
  });

  it('patch records: the changed blocks only, round-tripped, applied to the parent, refused where no parent is', async () => {
    const base = entry('db', 5 * 4096 + 100, 1);
    // Grown to 7 blocks and a bit: block 5 (was partial) and 6, 7 are new; block 2 changed.
    const after = entry('db', 7 * 4096 + 5, 9);
    const patch = patchOf(after, [2, 5, 6, 7]);
    const parts = serializeBlockIndex([patch]);
    const records = parseIndexRecords(Buffer.concat(parts), 'idx');
    const applied = applyPatch(base, records.get('db') as Parameters<typeof applyPatch>[1], 'backup v/2');
    expect(applied.size).to.equal(after.size);
    const expected = Buffer.from(after.hashes);
    for (const block of [0, 1, 3, 4]) base.hashes.copy(expected, block * 16, block * 16, (block + 1) * 16);
    expect(applied.hashes.equals(expected)).to.equal(true);
    // Cut inside block 3: that block's hash must come with the patch.
    const cut = entry('db', 3 * 4096 + 10, 7);
    expect(applyPatch(base, patchOf(cut, [3]), 'w').hashes.subarray(0, 48).equals(base.hashes.subarray(0, 48))).to.equal(true);
    expect(() => applyPatch(base, patchOf(cut, []), 'backup v/2')).to.throw('backup v/2 is corrupt: its index patches db, leaving block 3 without a hash');
    expect(() => applyPatch(base, patchOf(after, [2, 5, 6]), 'backup v/2')).to.throw('leaving block 7 without a hash');
    expect(() => applyPatch(undefined, patch, 'backup v/2')).to.throw("backup v/2 is corrupt: its index patches db, which its parent's index does not have");
    // Unchanged content, new inode (a copied snapshot): nothing patched, the parent's hashes.
    expect(applyPatch(base, patchOf({ ...base, ino: 99 }, []), 'w')).to.deep.include({ ino: 99, hashes: base.hashes });
    // A complete index has no patch records; a patch may not list blocks past the end or out of order.
    const complete = await expectBerthError(Promise.resolve().then(() => parseBlockIndex(Buffer.concat(parts), 'backup v/1 index.bin')), 'ERR_BACKUP_CORRUPT');
    expect(complete.message).to.contain('record of db is a patch, which this index may not hold');
    const backwards = serializeBlockIndex([patchOf(after, [5, 2])]);
    expect(() => parseIndexRecords(Buffer.concat(backwards), 'idx')).to.throw('patch of db lists block 2 out of order or past its end');
    const full = manifest('f', 'full', BACKUP_FORMAT_FULL_INDEX);
    const sources = { index: async () => records, listing: async () => listingOf(['db', 'file', after.size]) };
    await expectBerthError(chainIndex([full], sources), 'ERR_BACKUP_CORRUPT');
  });

  it('names an unreadable tree listing', () => {
    expect(parseTreeListing(Buffer.from('{"path":"a","type":"file","size":1}\n\n'), 'w').get('a')?.size).to.equal(1);
    expect(() => parseTreeListing(Buffer.from('{"path":"a"\n'), 'backup v/2')).to.throw('backup v/2 is corrupt: unreadable tree listing');
    expect(() => parseTreeListing(Buffer.from('[1]\n'), 'backup v/2')).to.throw('backup v/2 is corrupt: unreadable tree listing');
  });
});
