import { BerthError } from '../../plugins/errors/berth-error.js';

/**
 * Manifest formats. The number says what a reader must understand, so an agent that knows only an
 * older one refuses a backup (names it damaged) instead of misreading it.
 *
 * - `berth-backup/1`: every backup's `index` lists every file of the volume.
 * - `berth-backup/2`, incrementals only: `index` lists only the files this backup read again (new,
 *   or size, mtime, ctime or inode changed since its parent), a file shipped as deltas by a patch
 *   record (the hashes of its changed blocks); every other file of its `tree` listing has its
 *   parent's entry (chain-index.ts). The objects are otherwise those of /1.
 *
 * Full backups are written as /1: nothing in them changed, so older agents still restore them.
 */
export const BACKUP_FORMAT_FULL_INDEX = 'berth-backup/1';
export const BACKUP_FORMAT_PARTIAL_INDEX = 'berth-backup/2';
export type BackupFormat = typeof BACKUP_FORMAT_FULL_INDEX | typeof BACKUP_FORMAT_PARTIAL_INDEX;
const BACKUP_FORMATS: readonly string[] = [BACKUP_FORMAT_FULL_INDEX, BACKUP_FORMAT_PARTIAL_INDEX];

/** The format a new backup of this kind is written in. */
export function formatFor(kind: BackupKind): BackupFormat {
  return kind === 'full' ? BACKUP_FORMAT_FULL_INDEX : BACKUP_FORMAT_PARTIAL_INDEX;
}

/** Whether the backup's own index lists only what it read again (the rest is its parent's). */
export function indexIsPartial(manifest: BackupManifest): boolean {
  return manifest.format === BACKUP_FORMAT_PARTIAL_INDEX;
}

export type BackupKind = 'full' | 'incremental';

export interface BackupObject {
  /** File name inside the backup's directory. */
  readonly file: string;
  /** SHA-256 of the stored bytes (after compression and encryption). */
  readonly sha256: string;
  readonly bytes: number;
}

export interface BackupManifest {
  readonly format: BackupFormat;
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
   * entry except unchanged files and files shipped as deltas); `index`: block hashes of every file
   * (berth-backup/2: of every file read again, see BACKUP_FORMAT_PARTIAL_INDEX); incremental only:
   * `tree`, the complete listing of the tree, and `deltas`, changed blocks.
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
  if (!BACKUP_FORMATS.includes(manifest.format as string)) problems.push(`format ${JSON.stringify(manifest.format)} is not one of ${BACKUP_FORMATS.join(', ')}`);
  else if (manifest.format === BACKUP_FORMAT_PARTIAL_INDEX && manifest.kind !== 'incremental') problems.push(`a ${manifest.kind} backup cannot be ${BACKUP_FORMAT_PARTIAL_INDEX}`);
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
