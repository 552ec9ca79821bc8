import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { BerthError, errorMessage, isBerthError, translateError } from '../../plugins/errors/berth-error.js';
import { isValidVolumeName } from '../volume-name.js';
import { BACKUP_ID_PATTERN, parseManifest, type BackupManifest } from './backup-manifest.js';
import type { BackupTarget, ListedBackup, PendingBackup } from './backup-target.js';
import { readObjectFile } from './object-pipeline.js';

const MANIFEST = 'manifest.json';
const MANIFEST_SUM = 'manifest.json.sha256';
const PARTIAL_PREFIX = '.partial-';
const DELETING_PREFIX = '.deleting-';
/** A partial backup untouched this long belongs to a run that died. */
const LEFTOVER_AGE_MS = 24 * 3600 * 1000;

/**
 * Backups in a directory (local disk, NFS mount): `<dir>/<volume>/<id>/` holding the objects,
 * `manifest.json` and its checksum. A backup is written to `.partial-<id>/`, synced, and renamed
 * into place only once whole; removal renames to `.deleting-<id>/` first. Either way a crash
 * leaves nothing that lists as a complete backup.
 */
export class DirectoryBackupTarget implements BackupTarget {
  constructor(readonly root: string) {}

  get description(): string {
    return `directory ${this.root}`;
  }

  async begin(volume: string, id: string): Promise<PendingBackup> {
    const dir = this.volumeDir(volume);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await this.sweep(volume);
      const staging = join(dir, PARTIAL_PREFIX + id);
      await mkdir(staging, { mode: 0o700 });
      return { volume, id, createObject: (file: string): Writable => createWriteStream(join(staging, safeFile(file)), { flags: 'wx', mode: 0o600 }) };
    } catch (error) {
      throw translateError(error, 'ERR_BACKUP_TARGET', `cannot write backups to ${dir}`);
    }
  }

  async commit(pending: PendingBackup, manifest: BackupManifest): Promise<void> {
    const staging = join(this.volumeDir(pending.volume), PARTIAL_PREFIX + pending.id);
    const text = `${JSON.stringify(manifest, null, 2)}\n`;
    try {
      await writeFile(join(staging, MANIFEST), text, { mode: 0o600 });
      await writeFile(join(staging, MANIFEST_SUM), `${sha256(text)}  ${MANIFEST}\n`, { mode: 0o600 });
      for (const file of await readdir(staging)) await syncPath(join(staging, file));
      await syncPath(staging);
      await rename(staging, join(this.volumeDir(pending.volume), pending.id));
      await syncPath(this.volumeDir(pending.volume));
    } catch (error) {
      throw translateError(error, 'ERR_BACKUP_TARGET', `cannot complete backup ${pending.volume}/${pending.id} in ${this.root}`);
    }
  }

  async abort(pending: PendingBackup): Promise<void> {
    await rm(join(this.volumeDir(pending.volume), PARTIAL_PREFIX + pending.id), { recursive: true, force: true });
  }

  async list(volume?: string): Promise<ListedBackup[]> {
    const volumes = volume === undefined ? await this.volumes() : [volume];
    const listed: ListedBackup[] = [];
    for (const name of volumes) {
      const ids = (await readdir(this.volumeDir(name)).catch(() => [] as string[])).filter((entry) => BACKUP_ID_PATTERN.test(entry)).sort();
      for (const id of ids) {
        try {
          listed.push({ manifest: await this.readManifest(name, id) });
        } catch (error) {
          if (!isBerthError(error)) throw error;
          listed.push({ volume: name, id, damaged: error.message });
        }
      }
    }
    return listed;
  }

  async readManifest(volume: string, id: string): Promise<BackupManifest> {
    const where = `backup ${volume}/${id}`;
    const dir = join(this.volumeDir(volume), safeFile(id));
    let text: string;
    let sum: string;
    try {
      text = await readFile(join(dir, MANIFEST), 'utf8');
      sum = await readFile(join(dir, MANIFEST_SUM), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        const exists = await readdir(dir).then(() => true, () => false);
        throw exists ? new BerthError('ERR_BACKUP_CORRUPT', `${where} is incomplete: its manifest is missing`) : new BerthError('ERR_BACKUP_NOT_FOUND', `${where} does not exist in ${this.root}`);
      }
      throw translateError(error, 'ERR_BACKUP_TARGET', `cannot read ${where}`);
    }
    if (sum.split(/\s+/)[0] !== sha256(text)) throw new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: manifest checksum mismatch`);
    const manifest = parseManifest(text, where);
    if (manifest.id !== id || manifest.volume !== volume) throw new BerthError('ERR_BACKUP_CORRUPT', `${where} is corrupt: manifest names ${manifest.volume}/${manifest.id}`);
    return manifest;
  }

  openObject(volume: string, id: string, file: string): Readable {
    return readObjectFile(this.objectPath(volume, id, file));
  }

  objectPath(volume: string, id: string, file: string): string {
    return join(this.volumeDir(volume), safeFile(id), safeFile(file));
  }

  async remove(volume: string, id: string): Promise<void> {
    const dir = this.volumeDir(volume);
    const doomed = join(dir, DELETING_PREFIX + safeFile(id));
    try {
      await rename(join(dir, safeFile(id)), doomed);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw translateError(error, 'ERR_BACKUP_TARGET', `cannot remove backup ${volume}/${id}`);
    }
    await rm(doomed, { recursive: true, force: true });
  }

  private volumeDir(volume: string): string {
    if (!isValidVolumeName(volume)) throw new BerthError('ERR_INVALID_NAME', `volume name ${JSON.stringify(volume)} is invalid`);
    return join(this.root, volume);
  }

  private async volumes(): Promise<string[]> {
    try {
      const entries = await readdir(this.root, { withFileTypes: true });
      return entries.filter((entry) => entry.isDirectory() && isValidVolumeName(entry.name)).map((entry) => entry.name).sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new BerthError('ERR_BACKUP_TARGET', `backup directory ${this.root} does not exist`);
      throw translateError(error, 'ERR_BACKUP_TARGET', `cannot read backup directory ${this.root}`);
    }
  }

  /**
   * Leftovers of crashed runs: partial backups never completed, removals never finished. Only
   * old ones: another agent may be writing a partial backup of its own into a shared directory.
   */
  private async sweep(volume: string): Promise<void> {
    for (const entry of await readdir(this.volumeDir(volume))) {
      if (!entry.startsWith(PARTIAL_PREFIX) && !entry.startsWith(DELETING_PREFIX)) continue;
      const modified = await stat(join(this.volumeDir(volume), entry)).then((info) => info.mtimeMs, () => Date.now());
      if (entry.startsWith(DELETING_PREFIX) || Date.now() - modified > LEFTOVER_AGE_MS) {
        await rm(join(this.volumeDir(volume), entry), { recursive: true, force: true }).catch((error: unknown) => {
          throw new BerthError('ERR_BACKUP_TARGET', `cannot clear leftover ${entry} in ${this.volumeDir(volume)}: ${errorMessage(error)}`);
        });
      }
    }
  }
}

function safeFile(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new BerthError('ERR_INVALID_REQUEST', `invalid backup object name ${JSON.stringify(name)}`);
  return name;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

async function syncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
