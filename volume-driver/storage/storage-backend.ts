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
  /** Present when the backend can ship volumes between hosts (replicas, handoff, failover). */
  readonly replication?: ReplicationStore;
}

/**
 * A volume's replication chain: read-only snapshots kept apart from the user's snapshots (they never
 * appear in `berth snapshot ls`), made on the owner and shipped to replicas, each relative to one the
 * receiver already holds. Ids sort in the order they were taken (`e<epoch>-<seq>`, zero-padded) and match
 * REPLICATION_SNAPSHOT_ID.
 *
 * Layout (beside volumes/ and snapshots/, on the same filesystem):
 *   replicas/<volume>/<id>   read-only trees of the chain
 * A snapshot appears under its id only once complete: receives land in staging/ and are renamed in.
 */
export interface ReplicationStore {
  /** Read-only snapshot of the volume's live data as `id`; refuses an id already taken. */
  takeReplicationSnapshot(volume: string, id: string): Promise<void>;
  /** Ids of the volume's chain, sorted ascending; empty when it has none. */
  replicationSnapshots(volume: string): Promise<string[]>;
  /**
   * Deletes one chain snapshot and has its space reclaimed at once, not with later deletions (a filesystem
   * that reclaims in the background, btrfs, would otherwise do many at a time and stall other work on the
   * pool meanwhile); succeeds when it is already gone.
   */
  deleteReplicationSnapshot(volume: string, id: string): Promise<void>;
  /**
   * A stream of chain snapshot `id`, relative to chain snapshot `parent` when given (the receiver must
   * hold `parent`), else whole. The stream errors if producing it fails.
   */
  sendReplicationSnapshot(volume: string, id: string, parent?: string): NodeJS.ReadableStream & AsyncIterable<Buffer>;
  /**
   * Receives a stream made by sendReplicationSnapshot into the chain as `id`. `verify` runs after the
   * stream is fully consumed and before the snapshot appears (the transport's end-to-end checksum); if
   * anything fails, whatever was received is deleted and `id` does not appear.
   */
  receiveReplicationSnapshot(volume: string, id: string, stream: AsyncIterable<Buffer>, verify?: () => Promise<void>): Promise<void>;
  /** Makes the volume's live data a writable copy of chain snapshot `id`; refuses when live data exists. Returns its path. */
  materializeReplicationSnapshot(volume: string, id: string, options: VolumeOptions): Promise<string>;
  /** Bytes the live data changed since chain snapshot `id` was taken (from changed extents; an estimate). */
  changedBytesSince(volume: string, id: string): Promise<number>;
  /** Deletes the volume's live data and its user snapshots, keeping its chain; succeeds when gone. */
  dropLiveData(volume: string): Promise<void>;
  /** Deletes the whole chain of the volume; succeeds when it is already gone. */
  removeReplication(volume: string): Promise<void>;
  /** Volumes that have a chain on this host. */
  replicationVolumes(): Promise<string[]>;
}

export const REPLICATION_SNAPSHOT_ID = /^[a-z0-9][a-z0-9._-]{0,127}$/;
