import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { parseBlockIndex, parseIndexRecords } from './block-index.js';
import { readDeltas } from './block-delta.js';
import { indexIsPartial, type BackupManifest } from './backup-manifest.js';
import type { BackupTarget } from './backup-target.js';
import type { BackupKey } from './codec/encryption.js';
import { codecFor, loadVerifiedBuffer, openVerified } from './backup-restore.js';
import { parseTreeListing } from './chain-index.js';
import { extractTree } from './tree/safe-extract.js';

export interface VerifyReport {
  readonly id: string;
  readonly volume: string;
  readonly objects: number;
  readonly bytes: number;
}

/**
 * Reads every object of the backup back in full: stored bytes against the manifest checksums,
 * decryption (authenticated), decompression, and the structure inside (tar entries and their
 * paths, block index, tree listing and that the index lists only files of it, deltas). Writes
 * nothing. Throws the first problem, naming the backup and object. Whether the indexes of a chain
 * fit together is for loadChainIndex.
 */
export async function verifyBackup(target: BackupTarget, manifest: BackupManifest, key: BackupKey | undefined, onBytes: (bytes: number) => void = () => undefined): Promise<VerifyReport> {
  const codec = codecFor(manifest, key);
  const where = (file: string) => `backup ${manifest.volume}/${manifest.id} ${file}`;
  const scratch = await mkdtemp(join(tmpdir(), 'berth-verify-'));
  let bytes = 0;
  try {
    await extractTree(openVerified(target, manifest, manifest.objects.data, codec), scratch, {
      onEntry: () => async (content: AsyncIterable<Buffer>) => {
        for await (const chunk of content) {
          bytes += chunk.length;
          onBytes(bytes);
        }
      },
    });
    const index = (indexIsPartial(manifest) ? parseIndexRecords : parseBlockIndex)(await loadVerifiedBuffer(target, manifest, manifest.objects.index, codec), where(manifest.objects.index.file));
    const { tree, deltas } = manifest.objects;
    if (tree) {
      const listing = parseTreeListing(await loadVerifiedBuffer(target, manifest, tree, codec), where(tree.file));
      for (const path of index.keys()) {
        if (listing.get(path)?.type !== 'file') throw new BerthError('ERR_BACKUP_CORRUPT', `${where(manifest.objects.index.file)} is corrupt: it lists ${path}, which the tree listing has as no file`);
      }
    }
    if (deltas) {
      for await (const event of readDeltas(openVerified(target, manifest, deltas, codec), where(deltas.file))) {
        if (event.kind === 'block') {
          bytes += event.data.length;
          onBytes(bytes);
        }
      }
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return { id: manifest.id, volume: manifest.volume, objects: Object.keys(manifest.objects).length, bytes };
}
