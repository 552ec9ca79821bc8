import { BerthError, isBerthError } from '../plugins/errors/berth-error.js';
import type { StateStore, StoredEntry } from '../plugins/state/state-store.js';
import { parseVolumeRecord, serializeVolumeRecord, type VolumeRecord } from './volume-record.js';

export interface VersionedVolume {
  readonly record: VolumeRecord;
  /** modRevision of the stored record, for compare-and-swap. */
  readonly revision: number;
}


/** Owns the key layout of volume records; services never touch raw keys. */
export class VolumeRepository {
  /** Parsed records by key, valid for one modRevision: List and Get stay cheap with many volumes. */
  private readonly parsed = new Map<string, VersionedVolume>();

  private readonly prefix: string;

  /**
   * `scope` namespaces the records: empty for the single-host file store; `hosts/<host>/` on a
   * shared etcd, where a volume's data lives on one host and other hosts must not see it.
   */
  constructor(
    private readonly store: StateStore,
    scope = '',
  ) {
    this.prefix = `${scope}volumes/`;
  }

  /** Store revision: changes whenever any record may have changed. */
  revision(): Promise<number> {
    return this.store.revision();
  }

  async get(name: string): Promise<VersionedVolume | undefined> {
    const entry = await this.store.get(this.prefix + name);
    return entry ? this.parse(entry) : undefined;
  }

  async list(): Promise<VersionedVolume[]> {
    const { entries } = await this.store.list(this.prefix);
    if (this.parsed.size > entries.length * 2) this.parsed.clear(); // drop records of removed volumes
    return entries.map((entry) => this.parse(entry));
  }

  private parse(entry: StoredEntry): VersionedVolume {
    const cached = this.parsed.get(entry.key);
    if (cached && cached.revision === entry.modRevision) return cached;
    const fresh = { record: parseVolumeRecord(entry.key, entry.value), revision: entry.modRevision };
    this.parsed.set(entry.key, fresh);
    return fresh;
  }

  /** Writes only if the record is still at `expectRevision` (0: must not exist); returns the new revision. */
  async put(record: VolumeRecord, expectRevision: number): Promise<number> {
    return this.store.put(this.prefix + record.name, serializeVolumeRecord(record), { expectRevision });
  }

  /** Like `put`, but reports a lost race as `false` instead of throwing. */
  async tryPut(record: VolumeRecord, expectRevision: number): Promise<boolean> {
    try {
      await this.put(record, expectRevision);
      return true;
    } catch (error) {
      if (isBerthError(error, 'ERR_STATE_CONFLICT')) return false;
      throw error;
    }
  }

  async delete(name: string, expectRevision: number): Promise<void> {
    const deleted = await this.store.delete(this.prefix + name, { expectRevision });
    if (!deleted) throw new BerthError('ERR_STATE_CONFLICT', `volume record ${name} vanished while being deleted`);
  }
}
