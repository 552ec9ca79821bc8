import { lstat, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BerthError, isBerthError, translateError } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import { runTool } from '../../plugins/util/run-tool.js';
import { indexFile } from '../backups/block-index.js';
import type { TreeEntry } from '../backups/tree/tree-entry.js';
import { walkTree } from '../backups/tree/walk-tree.js';
import type { VolumeOptions } from '../volume-options.js';
import { copyLiveTree, copyTree } from './copy-tree.js';
import { baselineOf, readBaseline, unchangedSinceBaseline, writeBaseline, type LiveBaseline } from './dir-chain-baseline.js';
import { changedBytes, type VerifiedFiles } from './dir-chain-changes.js';
import { buildManifest, manifestDigest, readManifest, writeManifest, type ChainManifest } from './dir-chain-manifest.js';
import { applyChainStream } from './dir-chain-receive.js';
import { chainStream } from './dir-chain-send.js';
import { CHAIN_STREAM_FORMAT, ChainStreamReader } from './dir-chain-stream.js';
import { REPLICATION_SNAPSHOT_ID, type ReplicationStore } from './storage-backend.js';
import { present, syncDirectory, type StorageLayout } from './storage-layout.js';

/** Manifests kept in memory (send needs two, the owner's checks one or two more). */
const CACHED_MANIFESTS = 6;
/** `.<id>.manifest`, `.<id>.live` and their temporary files. */
const SIDE_FILE = /^\.(.+)\.(manifest|live)(\.tmp-[0-9a-f]+)?$/;

/** What the replication chain needs from DirBackend. */
export interface DirReplicationHost {
  readonly layout: StorageLayout;
  readonly log: Logger | undefined;
  /** Fails with ERR_VOLUME_NOT_FOUND when the volume has no live data. */
  requireVolume(volume: string): Promise<void>;
  /** The backend's remove(): live data, user snapshots and restore leftovers, never the chain. */
  remove(volume: string): Promise<void>;
  /** Moves a tree to trash/ and deletes it; succeeds when it is gone. */
  removeTree(path: string, volume: string, what: string): Promise<void>;
  /**
   * Makes the volume's live data a copy of the tree `source` with the options' ownership
   * (ERR_VOLUME_EXISTS when it has some); `prepared` sees the complete copy right before it is
   * renamed into place.
   */
  volumeFromTree(source: string, volume: string, options: VolumeOptions, what: string, prepared?: (staging: string) => Promise<void>): Promise<string>;
}

/**
 * The replication chain of the dir backend: `replicas/<volume>/<id>`, complete trees (read-only by
 * convention), each with a manifest beside it (dir-chain-manifest.ts), shipped as block-level diffs
 * (dir-chain-stream.ts).
 *
 * Design notes:
 * - Taking a snapshot copies the live tree with `cp -a --reflink=auto` into staging/ (cheap where
 *   the filesystem has reflinks, a full copy elsewhere), describes the copy in a manifest (per
 *   regular file the SHA-256 prefixes of its 4 KiB blocks) and renames it in. Hashing is what
 *   costs: a file is hashed again only when the live baseline of the previous snapshot taken here
 *   (dir-chain-baseline.ts: inode and ctime of every live file, racy ones excepted) cannot prove it
 *   unchanged, before and after the copy. A copy of a tree containers write to is not point-in-time
 *   consistent (as dir snapshots are not); a file that changed while copied differs from the
 *   baseline, so the next check counts it and the next snapshot carries it.
 * - Sending compares two manifests, so it reads from disk only what it ships: whole new files and
 *   the changed blocks of the others. Receiving starts from a copy of the parent snapshot (which
 *   the receiver must hold), applies the stream without trusting it (dir-chain-receive.ts), builds
 *   the new snapshot's manifest from its own tree, and refuses it unless its digest is the one the
 *   sender's end marker names: the trees are then equal, on every host that received the chain, so
 *   chains can be forwarded (A→B→C) and shipped back after a promotion.
 * - A snapshot appears under its id only once complete: its manifest is written first, then the
 *   tree is renamed in from staging/; deleting goes the other way. prepare() deletes manifests and
 *   baselines without a tree; staging/ is emptied by the backend.
 * - changedBytesSince walks the live tree (lstat only) against the manifest; see dir-chain-changes.ts
 *   for what it counts and the residual risk.
 * - Callers serialise work on one volume's chain (the replication service holds the volume's lock).
 */
export class DirReplication implements ReplicationStore {
  private readonly manifests = new Map<string, Promise<ChainManifest>>();
  private readonly baselines = new Map<string, Promise<LiveBaseline | undefined>>();
  private readonly verified = new Map<string, VerifiedFiles>();

  constructor(private readonly host: DirReplicationHost) {}

  private get layout(): StorageLayout {
    return this.host.layout;
  }

  /** Creates replicas/ and deletes manifests and baselines whose tree is gone (a crash between the two). */
  async prepare(): Promise<void> {
    for (const { path, entries } of await this.layout.chainDirectories()) {
      for (const entry of entries) {
        const side = SIDE_FILE.exec(entry);
        if (side && (side[3] !== undefined || !entries.includes(side[1]!))) await rm(join(path, entry), { force: true });
      }
    }
  }

  async takeReplicationSnapshot(volume: string, id: string): Promise<void> {
    const target = this.layout.replicaPath(volume, id);
    await this.host.requireVolume(volume);
    if (await present(target)) throw snapshotExists(volume, id);
    const what = `cannot take chain snapshot ${id} of volume ${volume}`;
    const live = this.layout.volumePath(volume);
    const staging = this.layout.scratchPath('staging', id);
    try {
      const previous = await this.newestBaseline(volume);
      const atMs = Date.now();
      const before = new Map<string, TreeEntry>();
      for await (const entry of walkTree(live)) if (entry.type === 'file') before.set(entry.path, entry);
      await copyLiveTree(live, staging, what);
      const skipped: string[] = [];
      const manifest = await buildManifest(
        staging,
        id,
        async (entry, absolute) => (previous && (await reusableHashes(entry, live, before.get(entry.path), previous))) ?? (await indexFile(absolute, entry.path, fileStat(entry))).entry.hashes,
        (path, reason) => skipped.push(`${path} (${reason})`),
      );
      if (skipped.length > 0) this.host.log?.warn({ volume, snapshot: id, skipped: skipped.slice(0, 20), count: skipped.length }, 'entries the chain cannot carry were left out');
      await runTool(['sync', '-f', staging], what);
      await this.install(volume, id, staging, manifest, baselineOf(before.values(), atMs));
    } catch (error) {
      await rm(staging, { recursive: true, force: true }).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', what);
    }
  }

  replicationSnapshots(volume: string): Promise<string[]> {
    return this.layout.replicationSnapshotIds(volume);
  }

  async deleteReplicationSnapshot(volume: string, id: string): Promise<void> {
    const path = this.layout.replicaPath(volume, id);
    await this.host.removeTree(path, volume, `chain snapshot ${id}`);
    await this.removeSideFiles(volume, id);
  }

  async removeReplication(volume: string): Promise<void> {
    await this.host.removeTree(this.layout.replicasOf(volume), volume, 'replication chain');
    this.forget(volume);
  }

  replicationVolumes(): Promise<string[]> {
    return this.layout.replicationVolumeNames();
  }

  /**
   * Names are validated at once (a bad one throws here); everything later errors the stream,
   * which reads the tree as it is consumed (a Readable: its consumer's pace, no buffering beyond a
   * chunk) and closes what it opened when the consumer stops.
   */
  sendReplicationSnapshot(volume: string, id: string, parent?: string): Readable {
    const tree = this.layout.replicaPath(volume, id);
    if (parent !== undefined) this.layout.replicaPath(volume, parent);
    const what = `cannot send chain snapshot ${id} of volume ${volume}${parent === undefined ? '' : ` relative to ${parent}`}`;
    const produce = async function* (this: DirReplication): AsyncGenerator<Buffer> {
      try {
        await this.layout.requireReplica(volume, id);
        if (parent !== undefined) await this.layout.requireReplica(volume, parent);
        const manifest = await this.manifest(volume, id);
        const base = parent === undefined ? undefined : await this.manifest(volume, parent);
        yield* chainStream(tree, { format: CHAIN_STREAM_FORMAT, volume, id, parent: parent ?? null }, manifest, base, what);
      } catch (error) {
        throw translateError(error, 'ERR_REPLICATION', what);
      }
    };
    return Readable.from(produce.call(this), { objectMode: false });
  }

  /**
   * Builds the snapshot in staging/ from a copy of the parent the stream names, and renames it in
   * once the stream ended with its end marker, its digest matched and `verify` passed; on any
   * failure staging is deleted and `id` does not appear (verify's error is rethrown as is).
   */
  async receiveReplicationSnapshot(volume: string, id: string, stream: AsyncIterable<Buffer>, verify?: () => Promise<void>): Promise<void> {
    const target = this.layout.replicaPath(volume, id);
    const what = `cannot receive chain snapshot ${id} of volume ${volume}`;
    if (await present(target)) throw snapshotExists(volume, id);
    const refuse = (reason: string) => new BerthError('ERR_REPLICATION', `${what}: ${reason}`);
    const staging = this.layout.scratchPath('staging', id);
    const reader = new ChainStreamReader(stream, refuse);
    let manifest: ChainManifest;
    try {
      const head = await reader.start();
      if (head.id !== id) throw refuse(`the stream holds snapshot ${JSON.stringify(head.id)}, not ${id}`);
      if (head.volume !== volume) throw refuse(`the stream holds a snapshot of volume ${JSON.stringify(head.volume)}`);
      let parent: ChainManifest | undefined;
      if (head.parent === null) {
        await mkdir(staging, { mode: 0o700 });
      } else {
        if (!REPLICATION_SNAPSHOT_ID.test(head.parent)) throw refuse(`the stream names an invalid parent ${JSON.stringify(head.parent)}`);
        const parentTree = this.layout.replicaPath(volume, head.parent);
        if (!(await present(parentTree))) throw refuse(`its parent, chain snapshot ${head.parent}, is not on this host`);
        parent = await this.manifest(volume, head.parent);
        await copyTree(parentTree, staging, what);
      }
      const applied = await applyChainStream(reader, staging, parent, refuse);
      manifest = await buildManifest(
        staging,
        id,
        async (entry) => {
          const known = applied.hashesOf(entry.path);
          if (known?.size !== entry.size) throw refuse(`the received tree holds ${entry.path}, whose content neither the stream nor the parent snapshot gives`);
          return known.hashes;
        },
        (path, reason) => {
          throw refuse(`the received tree holds ${path}, which the chain cannot carry: ${reason}`);
        },
      );
      if (manifestDigest(manifest) !== applied.digest) {
        throw refuse(`the received tree does not match snapshot ${id} as sent${parent ? ` (chain snapshot ${parent.id} differs between the two hosts)` : ''}`);
      }
      await runTool(['sync', '-f', staging], what);
    } catch (error) {
      await reader.cancel();
      await rm(staging, { recursive: true, force: true }).catch(() => undefined);
      throw replicationError(error, what);
    }
    try {
      await verify?.();
    } catch (error) {
      await rm(staging, { recursive: true, force: true }).catch(() => undefined);
      throw error;
    }
    try {
      await this.install(volume, id, staging, manifest);
    } catch (error) {
      await rm(staging, { recursive: true, force: true }).catch(() => undefined);
      throw translateError(error, 'ERR_STORAGE', what);
    }
  }

  /** A copy of the chain snapshot, with the options of a new volume (no size: the dir backend cannot enforce one). */
  async materializeReplicationSnapshot(volume: string, id: string, options: VolumeOptions): Promise<string> {
    const source = await this.layout.requireReplica(volume, id);
    const what = `cannot make the live data of volume ${volume} from chain snapshot ${id}`;
    return this.host.volumeFromTree(source, volume, options, what, async (staging) => {
      // Nothing writes the copy before it is renamed in: its stat now is a baseline that is racy only for files written right before.
      const entries: TreeEntry[] = [];
      for await (const entry of walkTree(staging)) entries.push(entry);
      await writeBaseline(this.baselinePath(volume, id), baselineOf(entries, Date.now()));
      this.forget(volume, id);
    });
  }

  async changedBytesSince(volume: string, id: string): Promise<number> {
    await this.layout.requireReplica(volume, id);
    await this.host.requireVolume(volume);
    const key = `${volume}/${id}`;
    let verified = this.verified.get(key);
    if (!verified) this.verified.set(key, (verified = new Map()));
    try {
      return await changedBytes(this.layout.volumePath(volume), await this.manifest(volume, id), await this.baseline(volume, id), verified);
    } catch (error) {
      throw translateError(error, 'ERR_STORAGE', `cannot measure the changes of volume ${volume} since chain snapshot ${id}`);
    }
  }

  /** The live data and user snapshots go; the chain stays, without its baselines (they described the live data). */
  async dropLiveData(volume: string): Promise<void> {
    await this.host.remove(volume);
    for (const id of await this.replicationSnapshots(volume)) await rm(this.baselinePath(volume, id), { force: true });
    this.forget(volume);
  }

  /** Writes the manifest (and baseline) of `id`, then renames the complete tree from staging into the chain. */
  private async install(volume: string, id: string, staging: string, manifest: ChainManifest, baseline?: LiveBaseline): Promise<void> {
    const chain = this.layout.replicasOf(volume);
    const target = this.layout.replicaPath(volume, id);
    await mkdir(chain, { recursive: true, mode: 0o700 });
    // rename(2) would silently replace an empty directory: check right before.
    if (await present(target)) throw snapshotExists(volume, id);
    try {
      await writeManifest(this.manifestPath(volume, id), manifest);
      if (baseline) await writeBaseline(this.baselinePath(volume, id), baseline);
      else await rm(this.baselinePath(volume, id), { force: true });
      await rename(staging, target);
    } catch (error) {
      if (!(await present(target))) await this.removeSideFiles(volume, id);
      throw error;
    }
    this.forget(volume, id);
    await syncDirectory(chain);
  }

  /** The manifest of chain snapshot `id` (rebuilt by hashing the tree if it went missing). */
  private manifest(volume: string, id: string): Promise<ChainManifest> {
    const key = `${volume}/${id}`;
    let loading = this.manifests.get(key);
    if (!loading) {
      loading = this.loadManifest(volume, id);
      this.manifests.set(key, loading);
      loading.catch(() => this.manifests.delete(key));
      for (const old of this.manifests.keys()) if (this.manifests.size > CACHED_MANIFESTS) this.manifests.delete(old);
    }
    return loading;
  }

  private async loadManifest(volume: string, id: string): Promise<ChainManifest> {
    const path = this.manifestPath(volume, id);
    const where = `chain snapshot ${id} of volume ${volume}`;
    try {
      return await readManifest(path, where);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    const tree = await this.layout.requireReplica(volume, id);
    this.host.log?.warn({ volume, snapshot: id }, 'chain snapshot has no manifest; hashing its tree again');
    const manifest = await buildManifest(tree, id, async (entry, absolute) => (await indexFile(absolute, entry.path, fileStat(entry))).entry.hashes);
    await writeManifest(path, manifest);
    return manifest;
  }

  private baseline(volume: string, id: string): Promise<LiveBaseline | undefined> {
    const key = `${volume}/${id}`;
    let loading = this.baselines.get(key);
    if (!loading) {
      loading = readBaseline(this.baselinePath(volume, id), `chain snapshot ${id} of volume ${volume}`);
      this.baselines.set(key, loading);
      loading.catch(() => this.baselines.delete(key));
    }
    return loading;
  }

  /** The snapshot whose live baseline is the most recent: the best source of hashes for the next one. */
  private async newestBaseline(volume: string): Promise<{ manifest: ChainManifest; baseline: LiveBaseline } | undefined> {
    let newest: { id: string; baseline: LiveBaseline } | undefined;
    for (const id of await this.replicationSnapshots(volume)) {
      const baseline = await this.baseline(volume, id);
      if (baseline && (!newest || baseline.atMs > newest.baseline.atMs)) newest = { id, baseline };
    }
    return newest && { manifest: await this.manifest(volume, newest.id), baseline: newest.baseline };
  }

  private async removeSideFiles(volume: string, id: string): Promise<void> {
    await rm(this.manifestPath(volume, id), { force: true });
    await rm(this.baselinePath(volume, id), { force: true });
    this.forget(volume, id);
  }

  /** Drops what is cached of one snapshot, or of the whole chain. */
  private forget(volume: string, id?: string): void {
    const matches = (key: string) => (id === undefined ? key.startsWith(`${volume}/`) : key === `${volume}/${id}`);
    for (const cache of [this.manifests, this.baselines, this.verified]) for (const key of cache.keys()) if (matches(key)) cache.delete(key);
  }

  private manifestPath(volume: string, id: string): string {
    return join(this.layout.replicasOf(volume), `.${id}.manifest`);
  }

  private baselinePath(volume: string, id: string): string {
    return join(this.layout.replicasOf(volume), `.${id}.live`);
  }
}

/**
 * The previous snapshot's hashes of a file, when they certainly describe the copy just made: the
 * live file was unchanged since that snapshot's baseline when the walk before the copy saw it, and
 * is still the same inode with the same ctime, mtime and size after the copy.
 */
async function reusableHashes(copied: TreeEntry, live: string, before: TreeEntry | undefined, previous: { manifest: ChainManifest; baseline: LiveBaseline }): Promise<Buffer | undefined> {
  const old = previous.manifest.index.get(copied.path);
  if (!old || !before || old.size !== copied.size || old.mtimeMs !== copied.mtimeMs || !unchangedSinceBaseline(previous.baseline, before)) return undefined;
  const after = await lstat(join(live, copied.path)).catch(() => undefined);
  if (!after || after.ino !== before.ino || after.ctimeMs !== before.ctimeMs || after.mtimeMs !== before.mtimeMs || after.size !== before.size) return undefined;
  return old.hashes;
}

function fileStat(entry: TreeEntry): { size: number; mtimeMs: number; ctimeMs: number; ino: number } {
  return { size: entry.size, mtimeMs: entry.mtimeMs, ctimeMs: entry.ctimeMs ?? 0, ino: entry.ino ?? 0 };
}

/** Refusals of the tree helpers (made for backups) are replication errors here; storage errors stay what they are. */
function replicationError(error: unknown, what: string): BerthError {
  if (isBerthError(error) && error.code.startsWith('ERR_BACKUP_')) return new BerthError('ERR_REPLICATION', `${what}: ${error.message}`, { cause: error });
  return translateError(error, 'ERR_REPLICATION', what);
}

function snapshotExists(volume: string, id: string): BerthError {
  return new BerthError('ERR_SNAPSHOT_EXISTS', `chain snapshot ${id} of volume ${volume} already exists`);
}
