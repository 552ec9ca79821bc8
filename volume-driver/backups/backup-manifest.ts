import { BerthError } from '../../plugins/errors/berth-error.js';

export const BACKUP_FORMAT = 'berth-backup/1';

export type BackupKind = 'full' | 'incremental';

export interface BackupObject {
  /** File name inside the backup's directory. */
  readonly file: string;
  /** SHA-256 of the stored bytes (after compression and encryption). */
  readonly sha256: string;
  readonly bytes: number;
}

export interface BackupManifest {
  readonly format: typeof BACKUP_FORMAT;
  readonly id: string;
  readonly volume: string;
  readonly kind: BackupKind;
  /** The backup this one is relative to; absent for a full backup. */
  readonly parent?: string;
  /** Ids from the full backup to this one's parent, oldest first: what a restore must apply. */
  readonly chain: readonly string[];
  readonly createdAt: string;
  /** The snapshot the backup was read from. */
  readonly snapshot: string;
  readonly compression: string;
  readonly encryption?: { readonly algorithm: 'aes-256-gcm'; readonly keyId: string };
  /**
   * `data`: a tar of the tree (full: all of it, restorable with GNU tar alone; incremental: every
   * entry except unchanged files and files shipped as deltas); `index`: block hashes of every file;
   * incremental only: `tree`, the complete listing of the tree, and `deltas`, changed blocks.
   */
  readonly objects: { readonly data: BackupObject; readonly index: BackupObject; readonly tree?: BackupObject; readonly deltas?: BackupObject };
  readonly root: { readonly mode: number; readonly uid: number; readonly gid: number };
  readonly stats: {
    readonly files: number;
    /** Bytes of file content in the volume. */
    readonly logicalBytes: number;
    /** Bytes of file content this backup carries (all of it for a full one). */
    readonly changedBytes: number;
    /** Bytes this backup adds to the target. */
    readonly storedBytes: number;
    readonly durationMs: number;
  };
  readonly agentVersion: string;
}

/** Validates a manifest read back from the target; anything off is named as corruption. */
export function parseManifest(text: string, where: string): BackupManifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: manifest is not JSON`);
  }
  const manifest = value as Partial<BackupManifest>;
  const problems: string[] = [];
  if (manifest.format !== BACKUP_FORMAT) problems.push(`format ${JSON.stringify(manifest.format)} is not ${BACKUP_FORMAT}`);
  if (typeof manifest.id !== 'string' || typeof manifest.volume !== 'string') problems.push('id or volume missing');
  if (manifest.kind !== 'full' && manifest.kind !== 'incremental') problems.push('kind invalid');
  if (!Array.isArray(manifest.chain) || (manifest.kind === 'incremental' && (manifest.chain.length === 0 || typeof manifest.parent !== 'string'))) problems.push('chain invalid');
  const required = manifest.kind === 'incremental' ? (['data', 'index', 'tree', 'deltas'] as const) : (['data', 'index'] as const);
  for (const name of required) {
    const object = manifest.objects?.[name];
    if (!object || typeof object.file !== 'string' || !/^[0-9a-f]{64}$/.test(object.sha256 ?? '') || !Number.isSafeInteger(object.bytes)) problems.push(`object ${name} invalid`);
  }
  if (problems.length > 0) throw new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: ${problems.join('; ')}`);
  return manifest as BackupManifest;
}

/** Sortable, unique enough ids: UTC time to the millisecond plus 4 random hex digits. */
export function newBackupId(now: Date, random: string): string {
  return `${now.toISOString().replace(/[-:]/g, '').replace(/\.(\d{3})Z$/, '$1Z')}-${random}`;
}

export const BACKUP_ID_PATTERN = /^\d{8}T\d{9}Z-[0-9a-f]{4}$/;
