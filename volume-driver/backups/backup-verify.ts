import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { parseBlockIndex } from './block-index.js';
import { readDeltas } from './block-delta.js';
import type { BackupManifest } from './backup-manifest.js';
import type { BackupTarget } from './backup-target.js';
import type { BackupKey } from './codec/encryption.js';
import { codecFor, openVerified } from './backup-restore.js';
import { loadObjectBuffer } from './object-pipeline.js';
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
 * paths, block index, tree listing, deltas). Writes nothing. Throws the first problem, naming
 * the backup and object.
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
    const index = manifest.objects.index;
    parseBlockIndex(await loadObjectBuffer(target.openObject(manifest.volume, manifest.id, index.file), index, where(index.file), codec), where(index.file));
    const { tree, deltas } = manifest.objects;
    if (tree) {
      const listing = await loadObjectBuffer(target.openObject(manifest.volume, manifest.id, tree.file), tree, where(tree.file), codec);
      for (const line of listing.toString('utf8').split('\n')) {
        if (line === '') continue;
        try {
          JSON.parse(line);
        } catch {
          throw new BerthError('ERR_BACKUP_CORRUPT', `${where(tree.file)} is corrupt: unreadable tree listing`);
        }
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
