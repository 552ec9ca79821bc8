import { randomBytes } from 'node:crypto';
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BerthError, isBerthError, translateError } from '../../plugins/errors/berth-error.js';
import { runTool, spawnTool, toolError, type SpawnedTool } from '../../plugins/util/run-tool.js';
import type { VolumeOptions } from '../volume-options.js';
import { renameSendStream } from './btrfs-send-stream.js';
import type { ReplicationStore } from './storage-backend.js';
import { present, syncDirectory, type StorageLayout } from './storage-layout.js';

/** Prefix of a snapshot being received in its chain directory; ids never start with a dot. */
const RECEIVING_PREFIX = '.receiving-';
/** Larger than any transid (btrfs-progs refuses 2^64-1): `find-new` then prints only the subvolume's generation. */
const MAX_GENERATION = '9223372036854775807';
const FIND_NEW_EXTENT = /^inode \d+ file offset \d+ len (\d+) /;

/** What the replication chain needs from BtrfsBackend (its private helpers, bound). */
export interface BtrfsReplicationHost {
  readonly layout: StorageLayout;
  /** Fails with ERR_VOLUME_NOT_FOUND, or ERR_STORAGE when the live data is not a subvolume. */
  requireSubvolume(volume: string): Promise<void>;
  /** Read-only snapshot of the live subvolume created atomically at `target`; ERR_SNAPSHOT_EXISTS when taken. */
  snapshotLive(volume: string, target: string, label: string, what: string): Promise<void>;
  /** Makes the volume's live data a writable snapshot of `source` (ownership and size from options); ERR_VOLUME_EXISTS when it has some. */
  volumeFromSnapshot(source: string, volume: string, options: VolumeOptions, what: string): Promise<string>;
  /** Moves a tree to trash/ and deletes it; succeeds when it is gone. */
  removeTree(path: string, volume: string, what: string): Promise<void>;
  /** The backend's remove(): live data, user snapshots and restore leftovers, never the chain. */
  remove(volume: string): Promise<void>;
  /** Deletes a subvolume (read-only or not) or a directory of them; succeeds when it is gone. `durable` (default) waits for the commit. */
  discard(path: string, what: string, durable?: boolean): Promise<void>;
}

/**
 * The replication chain of the btrfs backend: `replicas/<volume>/<id>`, read-only subvolumes.
 *
 * Design notes:
 * - The owner snapshots the live subvolume straight into the chain (the snapshot ioctl is atomic).
 *   Replicas receive `btrfs send -p <parent> <id>` streams; receive finds the parent by the uuid
 *   the stream names, matched against each subvolume's received_uuid first and its own uuid second.
 *   A received snapshot keeps the sender's identity as received_uuid, and a sender that received
 *   the snapshot itself names it by that received_uuid, so chains can be forwarded (A→B→C, C
 *   relative to a snapshot it got from A) and sent back after a promotion (B's new snapshots
 *   relative to one B received from A, which A holds as the original).
 * - received_uuid is why nothing here may copy or re-flag a received snapshot: a snapshot of it
 *   loses it, and btrfs-progs refuses to make it writable without clearing it.
 * - A read-only subvolume cannot move to another directory (its `..` would change), so a snapshot
 *   cannot be received in staging/ and moved in. It is received in its chain directory under a
 *   temporary dot-name (the stream's first command is rewritten, see renameSendStream) and renamed
 *   to its id within that directory, which is allowed: an id appears only once complete, on disk and
 *   verified. prepare() deletes dot-names left by a crash (the remains of the stream may have been
 *   finished by btrfs receive as if complete: that is why they are never used).
 * - Callers serialise work on one volume's chain (the replication service holds the volume's lock).
 */
export class BtrfsReplication implements ReplicationStore {
  constructor(private readonly host: BtrfsReplicationHost) {}

  private get layout(): StorageLayout {
    return this.host.layout;
  }

  /** Creates replicas/ and deletes snapshots whose receive a crash interrupted. */
  async prepare(): Promise<void> {
    for (const { volume, path, entries } of await this.layout.chainDirectories()) {
      for (const entry of entries) {
        if (entry.startsWith(RECEIVING_PREFIX)) await this.host.discard(join(path, entry), `cannot delete the interrupted receive ${entry} of volume ${volume}`);
      }
    }
  }

  async takeReplicationSnapshot(volume: string, id: string): Promise<void> {
    await this.host.snapshotLive(volume, this.layout.replicaPath(volume, id), `chain snapshot ${id} of volume ${volume}`, `cannot take chain snapshot ${id} of volume ${volume}`);
  }

  replicationSnapshots(volume: string): Promise<string[]> {
    return this.layout.replicationSnapshotIds(volume);
  }

  /**
   * Waits for the commit: btrfs reclaims a deleted subvolume in its cleaner thread, which runs after a
   * commit, and left to the periodic one (every 30 s) a chain losing one snapshot per cycle gets dozens
   * reclaimed in one burst, whose metadata updates held a replica's receives for 3 to 6 s in
   * bench/replication. After the commit the cleaner reclaims the one snapshot at once (25 ms median per
   * deletion there, under the database's own fsyncs).
   */
  async deleteReplicationSnapshot(volume: string, id: string): Promise<void> {
    await this.host.discard(this.layout.replicaPath(volume, id), `cannot delete chain snapshot ${id} of volume ${volume}`);
  }

  async removeReplication(volume: string): Promise<void> {
    await this.host.removeTree(this.layout.replicasOf(volume), volume, 'replication chain');
  }

  replicationVolumes(): Promise<string[]> {
    return this.layout.replicationVolumeNames();
  }

  /**
   * Names are validated at once (a bad one throws here); everything later errors the stream. The
   * stream ends only after btrfs send exited 0, so a consumer that saw its end has all of it.
   * Protocol version 1, which every btrfs-progs receives (version 2 adds little here: it sends
   * compressed extents as they are, and pools are not mounted with compression).
   */
  sendReplicationSnapshot(volume: string, id: string, parent?: string): Readable {
    const source = this.layout.replicaPath(volume, id);
    const parentPath = parent === undefined ? undefined : this.layout.replicaPath(volume, parent);
    const what = `cannot send chain snapshot ${id} of volume ${volume}${parent === undefined ? '' : ` relative to ${parent}`}`;
    const output = new PassThrough();
    let tool: SpawnedTool | undefined;
    // A consumer that stops reading (a dropped connection) must not leave btrfs send blocked on a full pipe.
    output.once('close', () => tool?.kill());
    const run = async (): Promise<void> => {
      await this.layout.requireReplica(volume, id);
      if (parent !== undefined) await this.layout.requireReplica(volume, parent);
      if (output.destroyed) return;
      const command = ['btrfs', '-q', 'send', ...(parentPath === undefined ? [] : ['-p', parentPath]), source];
      tool = spawnTool(command, what, { streamOutput: true }, 'ERR_REPLICATION');
      tool.stdout?.pipe(output, { end: false });
      const result = await tool.exited;
      if (result.code !== 0) throw toolError(command, what, result, 'ERR_REPLICATION');
      output.end();
    };
    run().catch((error: unknown) => output.destroy(translateError(error, 'ERR_REPLICATION', what)));
    return output;
  }

  /**
   * The stream goes through renameSendStream into `btrfs receive -C <chain dir>` (confined there by
   * chroot: a stream names paths, and it comes from another host). `verify` runs after btrfs
   * receive exited 0 and before the rename that makes `id` appear; its error is rethrown as is.
   */
  async receiveReplicationSnapshot(volume: string, id: string, stream: AsyncIterable<Buffer>, verify?: () => Promise<void>): Promise<void> {
    const target = this.layout.replicaPath(volume, id);
    const chain = this.layout.replicasOf(volume);
    const what = `cannot receive chain snapshot ${id} of volume ${volume}`;
    if (await present(target)) throw new BerthError('ERR_SNAPSHOT_EXISTS', `chain snapshot ${id} of volume ${volume} already exists`);
    const incomingName = `${RECEIVING_PREFIX}${randomBytes(6).toString('hex')}`;
    const incoming = join(chain, incomingName);
    const command = ['btrfs', '-q', 'receive', '-C', chain];
    let tool: SpawnedTool | undefined;
    try {
      await mkdir(chain, { recursive: true, mode: 0o700 });
      tool = spawnTool(command, what, { input: true }, 'ERR_REPLICATION');
      const exited = tool.exited;
      exited.catch(() => undefined); // awaited below; a start failure must not be an unhandled rejection meanwhile
      try {
        if (!tool.stdin) throw new BerthError('ERR_INTERNAL', `${what}: btrfs receive has no stdin`);
        await pipeline(renameSendStream(stream, id, incomingName, what), tool.stdin);
      } catch (error) {
        tool.kill();
        const result = await exited;
        // The stream's own failures (truncated, trailing bytes, a cut transfer) are the cause. Otherwise btrfs
        // receive gave up by itself (a missing parent) and the pipe broke, with EPIPE or another write error
        // depending on timing: its own exit status and message say why.
        if (!isBerthError(error) && result.code !== null && result.code !== 0) throw toolError(command, what, result, 'ERR_REPLICATION');
        throw error;
      }
      const result = await exited;
      if (result.code !== 0) throw toolError(command, what, result, 'ERR_REPLICATION');
      if (!(await present(incoming))) throw new BerthError('ERR_REPLICATION', `${what}: btrfs receive exited 0 but made no snapshot`);
    } catch (error) {
      await this.abandon(tool, incoming, what);
      throw translateError(error, 'ERR_REPLICATION', what);
    }
    try {
      await verify?.();
    } catch (error) {
      await this.abandon(tool, incoming, what);
      throw error;
    }
    try {
      // btrfs receive exits with the data it wrote still in the page cache, not even allocated on disk:
      // after a power loss the snapshot would be there, complete-looking, with its parent's blocks.
      // Written back and committed before the rename makes the id appear.
      await runTool(['sync', '-f', incoming], what, 'ERR_STORAGE');
      if (await present(target)) throw new BerthError('ERR_SNAPSHOT_EXISTS', `chain snapshot ${id} of volume ${volume} already exists`);
      await rename(incoming, target);
      await syncDirectory(chain);
    } catch (error) {
      await this.abandon(tool, incoming, what);
      throw translateError(error, 'ERR_STORAGE', what);
    }
  }

  async materializeReplicationSnapshot(volume: string, id: string, options: VolumeOptions): Promise<string> {
    const source = await this.layout.requireReplica(volume, id);
    return this.host.volumeFromSnapshot(source, volume, options, `cannot make the live data of volume ${volume} from chain snapshot ${id}`);
  }

  /**
   * Sums the extents of the live subvolume written in transactions after the snapshot's
   * (`btrfs subvolume find-new`, a tree search that skips whatever is older, so its cost follows
   * the changes, not the volume). An estimate: data still in the page cache is not counted until
   * written back (within the 30 s commit interval), deletions and metadata count nothing, and an
   * extent rewritten twice counts once. It assumes the live data descends from the snapshot.
   */
  async changedBytesSince(volume: string, id: string): Promise<number> {
    const snapshot = await this.layout.requireReplica(volume, id);
    await this.host.requireSubvolume(volume);
    const what = `cannot measure the changes of volume ${volume} since chain snapshot ${id}`;
    const marker = await runTool(['btrfs', 'subvolume', 'find-new', snapshot, MAX_GENERATION], what, 'ERR_REPLICATION');
    const generation = /transid marker was (\d+)/.exec(marker.stdout)?.[1];
    if (generation === undefined) throw new BerthError('ERR_REPLICATION', `${what}: unexpected output of btrfs subvolume find-new: ${marker.stdout.trim()}`);
    // Extents of the snapshot's own transaction are in the snapshot; later ones are changes.
    const command = ['btrfs', 'subvolume', 'find-new', this.layout.volumePath(volume), String(BigInt(generation) + 1n)];
    const tool = spawnTool(command, what, { streamOutput: true }, 'ERR_REPLICATION');
    let bytes = 0;
    if (tool.stdout) {
      // Streamed: a busy volume lists an extent a line, more than a collected output may hold.
      for await (const line of createInterface({ input: tool.stdout, crlfDelay: Infinity })) {
        const length = FIND_NEW_EXTENT.exec(line)?.[1];
        if (length !== undefined) bytes += Number(length);
      }
    }
    const result = await tool.exited;
    if (result.code !== 0) throw toolError(command, what, result, 'ERR_REPLICATION');
    return bytes;
  }

  dropLiveData(volume: string): Promise<void> {
    return this.host.remove(volume);
  }

  /** Stops a receive and deletes what it made (best effort: prepare() retries what is left). */
  private async abandon(tool: SpawnedTool | undefined, incoming: string, what: string): Promise<void> {
    tool?.kill();
    await tool?.exited.catch(() => undefined);
    await this.host.discard(incoming, `${what}: cannot delete the partial snapshot`).catch(() => undefined);
  }
}
