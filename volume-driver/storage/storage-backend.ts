import type { VolumeOptions } from '../volume-options.js';

export interface VolumeUsage {
  /** Bytes of storage the volume occupies (allocated blocks, hard links counted once). */
  readonly usedBytes: number;
  readonly files: number;
}

/**
 * Where volume data lives. Services above never build data paths themselves; a backend maps a
 * validated volume name to storage and makes create and remove atomic on its medium.
 */
export interface StorageBackend {
  readonly kind: string;
  /** Creates the backend's directories and clears leftovers of interrupted work (staging, trash). */
  prepare(): Promise<void>;
  /** Creates the volume's data atomically: it either appears complete or not at all. Returns its path. */
  create(name: string, options: VolumeOptions): Promise<string>;
  /** Deletes the volume's data; succeeds when it is already gone. Touches nothing else. */
  remove(name: string): Promise<void>;
  /** Path the engine bind-mounts into containers. */
  path(name: string): string;
  exists(name: string): Promise<boolean>;
  usage(name: string): Promise<VolumeUsage>;
  /** Names with data present, for orphan detection by `berth doctor`. */
  listNames(): Promise<string[]>;
}
