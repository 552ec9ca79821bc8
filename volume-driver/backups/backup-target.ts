import type { Readable, Writable } from 'node:stream';
import type { BackupManifest } from './backup-manifest.js';

/** A backup being written: objects go to a staging area that nothing lists until `commit`. */
export interface PendingBackup {
  readonly volume: string;
  readonly id: string;
  createObject(file: string): Writable;
}

export type ListedBackup = { readonly manifest: BackupManifest } | { readonly volume: string; readonly id: string; readonly damaged: string };

/**
 * Where backups go. A backup becomes visible only when committed, whole: a failure at any
 * point leaves nothing that lists as complete.
 */
export interface BackupTarget {
  readonly description: string;
  begin(volume: string, id: string): Promise<PendingBackup>;
  /** Makes the backup visible with its manifest, atomically. */
  commit(pending: PendingBackup, manifest: BackupManifest): Promise<void>;
  /** Removes a pending backup's staged objects; idempotent. */
  abort(pending: PendingBackup): Promise<void>;
  /** Committed backups, damaged ones included (named as such), oldest first. */
  list(volume?: string): Promise<ListedBackup[]>;
  readManifest(volume: string, id: string): Promise<BackupManifest>;
  openObject(volume: string, id: string, file: string): Readable;
  /**
   * The object as a file on this machine, for targets that have one: a reader may then read it
   * more than once at the same time (decompressor and checksum side by side) instead of streaming
   * it through one pipe. Nothing is checked; opening a missing file fails like openObject's stream.
   */
  objectPath?(volume: string, id: string, file: string): string;
  remove(volume: string, id: string): Promise<void>;
}
