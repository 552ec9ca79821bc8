import type { VolumeOptions } from '../volume-options.js';

export interface VolumeUsage {
  /** Bytes of storage the volume occupies (allocated blocks, hard links counted once). */
  readonly usedBytes: number;
  readonly files: number;
}

export interface BackendSnapshot {
  readonly volume: string;
  readonly name: string;
  /** When the backend made it (RFC 3339). */
  readonly createdAt: string;
  /** A read-only tree with the volume's content at snapshot time (backups read from here). */
  readonly path: string;
}

export interface BackendCapabilities {
  /** Snapshots cost O(1) whatever the volume's size (copy-on-write). */
  readonly instantSnapshots: boolean;
  /** The `size` option can be enforced. */
  readonly sizeLimit: boolean;
}

/**
 * Where volume data lives. Services above never build data paths themselves; a backend maps a
 * validated volume name to storage and makes create, remove, snapshot and restore atomic on its
 * medium: each either happens whole or not at all, and is idempotent where the doc says so.
 */
export interface StorageBackend {
  readonly kind: string;
  readonly capabilities: BackendCapabilities;
  /** Creates the backend's directories and clears leftovers of interrupted work (staging, trash). */
  prepare(): Promise<void>;
  /** Creates the volume's data atomically: it either appears complete or not at all. Returns its path. */
  create(name: string, options: VolumeOptions): Promise<string>;
  /** Deletes the volume's data and its snapshots; succeeds when already gone. Touches nothing else. */
  remove(name: string): Promise<void>;
  /** Path the engine bind-mounts into containers. */
  path(name: string): string;
  exists(name: string): Promise<boolean>;
  usage(name: string): Promise<VolumeUsage>;
  /** Names with data present, for orphan detection by `berth doctor`. */
  listNames(): Promise<string[]>;

  /** Takes a read-only point-in-time snapshot; refuses a name already taken. */
  createSnapshot(volume: string, snapshot: string): Promise<BackendSnapshot>;
  listSnapshots(volume: string): Promise<BackendSnapshot[]>;
  /** Just the names: cheap enough for the engine's Get, which runs before every Mount. */
  snapshotNames(volume: string): Promise<string[]>;
  /** Deletes one snapshot; succeeds when already gone. */
  deleteSnapshot(volume: string, snapshot: string): Promise<void>;
  /** Replaces the volume's live data with the snapshot's content in one atomic switch. */
  restoreSnapshot(volume: string, snapshot: string): Promise<void>;
  /** Creates a new volume whose content is the snapshot's (writable, independent of the source). */
  cloneSnapshot(volume: string, snapshot: string, newVolume: string, options: VolumeOptions): Promise<string>;
}
