// What run.ts sends to berth-worker.ts and what it answers (kept apart: importing the worker runs it).
import type { BackupManifest } from '../../volume-driver/backups/backup-manifest.js';

export const RESULT_PREFIX = 'BERTH-BENCH-RESULT ';

interface Common {
  /** Data root on btrfs, and the state store file. */
  readonly root: string;
  readonly state: string;
}

/** One operation; the worker's request adds where Berth's data root and state are. */
export type WorkerOp =
  | { readonly op: 'create-volume'; readonly volume: string }
  | { readonly op: 'remove-volume'; readonly volume: string }
  | { readonly op: 'backup'; readonly volume: string; readonly target: string; readonly keyPath?: string }
  | { readonly op: 'restore'; readonly volume: string; readonly target: string; readonly id: string; readonly to: string; readonly keyPath?: string };

export type WorkerRequest = WorkerOp & Common;

export interface WorkerResult {
  /** Opening the state store and preparing the backend (the agent does this once, at start). */
  readonly openMs: number;
  /** The operation itself, in-process. */
  readonly opMs: number;
  /** Consecutive phases of the operation (from its progress callback), in order. */
  readonly phases: ReadonlyArray<{ readonly name: string; readonly ms: number }>;
  readonly manifest?: BackupManifest;
  readonly chain?: readonly string[];
  readonly path?: string;
  /** This process alone (not its zstd children): peak RSS in KiB and CPU seconds. */
  readonly nodeMaxRssKiB: number;
  readonly nodeCpuSeconds: number;
}
