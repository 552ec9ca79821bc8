import { BerthError } from '../plugins/errors/berth-error.js';

/**
 * A volume's durable record. `state` makes create and remove crash-safe: a record is written
 * as `creating` before any data exists and as `removing` before any data is deleted, so the
 * next start knows exactly what was in flight. Only `ready` volumes are visible to the engine.
 */
export type VolumeState = 'creating' | 'ready' | 'removing';

export interface VolumeRecord {
  readonly name: string;
  readonly state: VolumeState;
  readonly backend: string;
  /** Options as the user gave them (strings), kept for inspect and idempotent re-create. */
  readonly options: Readonly<Record<string, string>>;
  readonly createdAt: string;
  /** Mount references per engine mount ID; a count, because one ID may be mounted twice. */
  readonly mounts: Readonly<Record<string, number>>;
}

const STATES: ReadonlySet<string> = new Set(['creating', 'ready', 'removing']);

export function mountCount(record: VolumeRecord): number {
  return Object.values(record.mounts).reduce((sum, count) => sum + count, 0);
}

export function serializeVolumeRecord(record: VolumeRecord): string {
  return JSON.stringify(record);
}

/** Validates what is read back: a damaged record is reported, never half-trusted. */
export function parseVolumeRecord(key: string, text: string): VolumeRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw corrupt(key, 'not JSON');
  }
  if (typeof value !== 'object' || value === null) throw corrupt(key, 'not an object');
  const record = value as Record<string, unknown>;
  if (typeof record.name !== 'string') throw corrupt(key, 'name is missing');
  if (typeof record.state !== 'string' || !STATES.has(record.state)) throw corrupt(key, 'state is invalid');
  if (typeof record.backend !== 'string') throw corrupt(key, 'backend is missing');
  if (typeof record.createdAt !== 'string' || Number.isNaN(Date.parse(record.createdAt))) throw corrupt(key, 'createdAt is invalid');
  if (!isStringMap(record.options)) throw corrupt(key, 'options are invalid');
  if (!isCountMap(record.mounts)) throw corrupt(key, 'mounts are invalid');
  return {
    name: record.name,
    state: record.state as VolumeState,
    backend: record.backend,
    options: record.options,
    createdAt: record.createdAt,
    mounts: record.mounts,
  };
}

function isStringMap(value: unknown): value is Record<string, string> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every((entry) => typeof entry === 'string');
}

function isCountMap(value: unknown): value is Record<string, number> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every((entry) => Number.isInteger(entry) && (entry as number) > 0);
}

function corrupt(key: string, reason: string): BerthError {
  return new BerthError('ERR_STATE_CORRUPT', `volume record ${key} is damaged: ${reason}`);
}
