import { BerthError, isBerthError } from '../plugins/errors/berth-error.js';
import type { StateStore } from '../plugins/state/state-store.js';
import { parseVolumeRecord, serializeVolumeRecord, type VolumeRecord } from './volume-record.js';

export interface VersionedVolume {
  readonly record: VolumeRecord;
  /** modRevision of the stored record, for compare-and-swap. */
  readonly revision: number;
}

const PREFIX = 'volumes/';

/** Owns the key layout of volume records; services never touch raw keys. */
export class VolumeRepository {
  constructor(private readonly store: StateStore) {}

  async get(name: string): Promise<VersionedVolume | undefined> {
    const entry = await this.store.get(PREFIX + name);
    return entry ? { record: parseVolumeRecord(entry.key, entry.value), revision: entry.modRevision } : undefined;
  }

  async list(): Promise<VersionedVolume[]> {
    const { entries } = await this.store.list(PREFIX);
    return entries.map((entry) => ({ record: parseVolumeRecord(entry.key, entry.value), revision: entry.modRevision }));
  }

  /** Writes only if the record is still at `expectRevision` (0: must not exist); returns the new revision. */
  async put(record: VolumeRecord, expectRevision: number): Promise<number> {
    return this.store.put(PREFIX + record.name, serializeVolumeRecord(record), { expectRevision });
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
    const deleted = await this.store.delete(PREFIX + name, { expectRevision });
    if (!deleted) throw new BerthError('ERR_STATE_CONFLICT', `volume record ${name} vanished while being deleted`);
  }
}
