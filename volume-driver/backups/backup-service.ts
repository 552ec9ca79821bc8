import { randomBytes } from 'node:crypto';
import { BerthError, errorMessage, isBerthError } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import { KeyedMutex } from '../../plugins/util/keyed-mutex.js';
import type { SnapshotService } from '../snapshots/snapshot-service.js';
import { validateVolumeName } from '../volume-name.js';
import type { BlockIndex } from './block-index.js';
import { formatFor, newBackupId, type BackupManifest } from './backup-manifest.js';
import type { BackupTarget, ListedBackup } from './backup-target.js';
import { codecFor, loadChain, loadChainIndex, restoreChain } from './backup-restore.js';
import { verifyBackup, type VerifyReport } from './backup-verify.js';
import { DirectoryBackupTarget } from './directory-backup-target.js';
import type { VolumeService } from '../volume-service.js';
import { basename, dirname } from 'node:path';
import { writeBackup } from './backup-writer.js';
import { COMPRESSIONS, type Compression } from './codec/compression.js';
import { loadBackupKey, type BackupKey } from './codec/encryption.js';
import type { ObjectCodec } from './object-pipeline.js';
import { keepSet } from './retention.js';

export interface CreateBackupRequest {
  readonly volume: string;
  readonly target: BackupTarget;
  readonly keyPath?: string;
  readonly compression?: Compression;
  /** Force a full backup even when an incremental one is possible. */
  readonly full?: boolean;
  /** After a successful backup, keep this many newest backups of the volume (and what they need). */
  readonly keepLast?: number;
  readonly onProgress?: (phase: string, doneBytes?: number, totalBytes?: number) => void;
}

export interface BackupResult {
  readonly manifest: BackupManifest;
  readonly removedByRetention: readonly string[];
  readonly skipped: readonly string[];
  /** Things the operator must know to restore this backup. */
  readonly warnings: readonly string[];
}

export interface BackupServiceDeps {
  readonly snapshots: SnapshotService;
  /** Creates the volumes that restores fill. */
  readonly volumes: VolumeService;
  readonly log: Logger;
  readonly agentVersion: string;
  /** Chains longer than this start over with a full backup, bounding restore work. */
  readonly maxChainLength?: number;
}

const DEFAULT_MAX_CHAIN = 14;

/**
 * Backups of volumes: always read from a fresh snapshot (taken with the volume's quiesce mode),
 * written whole or not at all, incremental against the newest backup made with the same key.
 */
export class BackupService {
  /** One backup per volume at a time; snapshots and mounts are not blocked meanwhile. */
  private readonly running = new KeyedMutex();

  constructor(private readonly deps: BackupServiceDeps) {}

  async create(request: CreateBackupRequest): Promise<BackupResult> {
    const { volume, target } = request;
    validateVolumeName(volume);
    const compression = request.compression ?? 'zstd';
    if (!COMPRESSIONS.includes(compression)) throw new BerthError('ERR_INVALID_OPTION', `compression ${JSON.stringify(compression)} is not one of ${COMPRESSIONS.join(', ')}`);
    if (request.keepLast !== undefined && (!Number.isInteger(request.keepLast) || request.keepLast < 1)) throw new BerthError('ERR_INVALID_OPTION', `keep-last must be a whole number of at least 1, got ${request.keepLast}`);
    const key = request.keyPath === undefined ? undefined : await loadBackupKey(request.keyPath);
    const codec: ObjectCodec = key ? { compression, key } : { compression };
    return this.running.run(volume, async () => {
      const started = Date.now();
      const parent = request.full ? undefined : await this.findParent(target, volume, key);
      const progress = request.onProgress ?? (() => undefined);
      progress('snapshot');
      const snapshot = await this.deps.snapshots.create(volume, undefined, 'backup');
      const id = newBackupId(new Date(), randomBytes(2).toString('hex'));
      const skipped: string[] = [];
      let manifest: BackupManifest;
      const warnings: string[] = [];
      try {
        const pending = await target.begin(volume, id);
        try {
          const written = await writeBackup({
            snapshotPath: snapshot.path,
            pending,
            codec,
            ...(parent ? { parentIndex: parent.index } : {}),
            onProgress: (done, total) => progress(parent ? 'incremental' : 'full', Math.round(done), total),
            onSkip: (path, reason) => skipped.push(`${path}: ${reason}`),
          });
          if (written.escapingSymlinks.length > 0) {
            warnings.push(`${written.escapingSymlinks.length} symlink(s) point outside the volume (e.g. ${written.escapingSymlinks[0]}); restoring this backup needs --allow-escaping-symlinks`);
          }
          const storedBytes = Object.values(written.objects).reduce((sum, object) => sum + (object?.bytes ?? 0), 0);
          const kind = parent ? 'incremental' : 'full';
          manifest = {
            format: formatFor(kind),
            id,
            volume,
            kind,
            ...(parent ? { parent: parent.manifest.id } : {}),
            chain: parent ? [...parent.manifest.chain, parent.manifest.id] : [],
            createdAt: new Date(started).toISOString(),
            snapshot: snapshot.name,
            compression,
            ...(key ? { encryption: { algorithm: 'aes-256-gcm' as const, keyId: key.id } } : {}),
            objects: written.objects,
            root: { mode: written.root.mode, uid: written.root.uid, gid: written.root.gid },
            stats: { files: written.files, logicalBytes: written.logicalBytes, changedBytes: written.changedBytes, storedBytes, durationMs: Date.now() - started },
            agentVersion: this.deps.agentVersion,
          };
          progress('commit');
          await target.commit(pending, manifest);
        } catch (error) {
          await target.abort(pending).catch((abortError: unknown) => this.deps.log.error({ err: errorMessage(abortError) }, 'could not clear a failed backup'));
          throw error;
        }
      } finally {
        await this.deps.snapshots.remove(volume, snapshot.name).catch((error: unknown) => this.deps.log.error({ volume, snapshot: snapshot.name, err: errorMessage(error) }, 'could not remove the backup snapshot'));
      }
      if (skipped.length > 0) this.deps.log.warn({ volume, id, skipped }, 'entries a backup cannot carry were left out');
      this.deps.log.info({ volume, id, kind: manifest.kind, target: target.description, stats: manifest.stats }, 'backup created');
      const removedByRetention = request.keepLast === undefined ? [] : await this.applyRetention(target, volume, request.keepLast);
      return { manifest, removedByRetention, skipped, warnings };
    });
  }

  async list(target: BackupTarget, volume?: string): Promise<ListedBackup[]> {
    if (volume !== undefined) validateVolumeName(volume);
    return target.list(volume);
  }

  /** Reads back everything a restore of this backup needs: the backup and its whole chain. */
  async verify(target: BackupTarget, volume: string, id: string, keyPath?: string, onProgress?: CreateBackupRequest['onProgress']): Promise<{ verified: VerifyReport[] }> {
    const key = keyPath === undefined ? undefined : await loadBackupKey(keyPath);
    const chain = await loadChain(target, volume, id);
    const total = chain.reduce((sum, manifest) => sum + manifest.stats.changedBytes, 0);
    const verified: VerifyReport[] = [];
    let done = 0;
    for (const manifest of chain) {
      const base = done;
      verified.push(await verifyBackup(target, manifest, key, (bytes) => onProgress?.('verify', base + bytes, total)));
      done = base + manifest.stats.changedBytes;
    }
    // The indexes fit together: every file of the last backup has its block hashes somewhere in the chain.
    await loadChainIndex(target, chain, key);
    this.deps.log.info({ volume, id, chain: chain.map((manifest) => manifest.id) }, 'backup verified');
    return { verified };
  }

  /** Restores into a new volume; an existing volume is never overwritten. */
  async restore(request: {
    target: BackupTarget;
    volume: string;
    id: string;
    to: string;
    keyPath?: string;
    options?: Readonly<Record<string, string>>;
    /** Accept symlinks pointing outside the volume (never followed by the restore itself). */
    allowEscapingSymlinks?: boolean;
    onProgress?: CreateBackupRequest['onProgress'];
  }): Promise<{ volume: string; chain: string[] }> {
    validateVolumeName(request.to);
    const volumes = this.deps.volumes;
    const key = request.keyPath === undefined ? undefined : await loadBackupKey(request.keyPath);
    const chain = await loadChain(request.target, request.volume, request.id);
    for (const manifest of chain) codecFor(manifest, key); // names a missing or wrong key before anything is created
    if (await volumes.exists(request.to)) throw new BerthError('ERR_VOLUME_EXISTS', `volume ${request.to} already exists; restore never overwrites a volume, choose a new name`);
    await volumes.createFilled(request.to, request.options ?? {}, (destination) =>
      restoreChain(request.target, chain, key, destination, request.onProgress, { allowEscapingSymlinks: request.allowEscapingSymlinks === true }),
    );
    this.deps.log.info({ backup: `${request.volume}/${request.id}`, volume: request.to }, 'backup restored into a new volume');
    return { volume: request.to, chain: chain.map((manifest) => manifest.id) };
  }

  /** For `-o from-backup=TARGET/VOLUME/ID`: restores that backup into `destination`. */
  async restoreFromPath(source: string, keyPath: string | undefined, destination: string): Promise<void> {
    const id = basename(source);
    const volume = basename(dirname(source));
    const target = new DirectoryBackupTarget(dirname(dirname(source)));
    const key = keyPath === undefined ? undefined : await loadBackupKey(keyPath);
    const chain = await loadChain(target, volume, id);
    await restoreChain(target, chain, key, destination);
  }

  /** Deletes backups outside the newest `keepLast` and their chains; never breaks a chain. */
  async applyRetention(target: BackupTarget, volume: string, keepLast: number): Promise<string[]> {
    const listed = await target.list(volume);
    const complete = listed.flatMap((entry) => ('manifest' in entry ? [entry.manifest] : []));
    const keep = keepSet(complete, keepLast);
    const removed: string[] = [];
    for (const manifest of complete) {
      if (keep.has(manifest.id)) continue;
      await target.remove(volume, manifest.id);
      removed.push(manifest.id);
    }
    if (removed.length > 0) this.deps.log.info({ volume, removed }, 'retention removed backups');
    return removed;
  }

  /** The newest complete backup made with the same key whose index can be read, if the chain may grow. */
  private async findParent(target: BackupTarget, volume: string, key: BackupKey | undefined): Promise<{ manifest: BackupManifest; index: BlockIndex } | undefined> {
    const listed = await target.list(volume).catch((error: unknown) => {
      if (isBerthError(error, 'ERR_BACKUP_TARGET')) return [];
      throw error;
    });
    const candidates = listed.flatMap((entry) => ('manifest' in entry ? [entry.manifest] : [])).reverse();
    for (const manifest of candidates) {
      if ((manifest.encryption?.keyId ?? null) !== (key?.id ?? null)) continue;
      if (manifest.chain.length + 1 >= (this.deps.maxChainLength ?? DEFAULT_MAX_CHAIN)) return undefined;
      try {
        const chain = await loadChain(target, volume, manifest.id);
        return { manifest, index: await loadChainIndex(target, chain, key) };
      } catch (error) {
        this.deps.log.warn({ volume, parent: manifest.id, err: errorMessage(error) }, 'newest backup cannot serve as a parent; taking a full backup');
        return undefined;
      }
    }
    return undefined;
  }
}
