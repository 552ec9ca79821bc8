import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { encodeDeltaBlock } from '../backups/block-delta.js';
import { BLOCK_SIZE, blockLength, changedBlocks } from '../backups/block-index.js';
import { manifestDigest, type ChainManifest, type ManifestEntry } from './dir-chain-manifest.js';
import { encodeRecord, encodeStreamStart, sameMetadata, type ChainRecord, type Metadata, type StreamHead } from './dir-chain-stream.js';

/** File content and runs of changed blocks are read this much at a time. */
const READ_BYTES = 1024 * 1024;
/** Small records are gathered into chunks of about this size. */
const CHUNK_BYTES = 64 * 1024;

/**
 * The chain stream (dir-chain-stream.ts) of the snapshot whose tree is `tree` and manifest
 * `manifest`, relative to `parent` (a manifest of the same volume the receiver holds too) or whole.
 * File content comes from the tree, read as the stream is consumed; a tree that no longer matches
 * its manifest fails the stream with ERR_REPLICATION, its message starting with `what`.
 */
export async function* chainStream(tree: string, head: StreamHead, manifest: ChainManifest, parent: ChainManifest | undefined, what: string): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [encodeStreamStart(head)];
  let pendingBytes = pending[0]!.length;
  let records = 0;
  const flush = (): Buffer => {
    const chunk = Buffer.concat(pending);
    pending = [];
    pendingBytes = 0;
    return chunk;
  };
  /** Passes large pieces on as they are, small ones gathered. */
  function* add(piece: Buffer): Generator<Buffer> {
    if (piece.length >= CHUNK_BYTES) {
      if (pendingBytes > 0) yield flush();
      yield piece;
      return;
    }
    pending.push(piece);
    pendingBytes += piece.length;
    if (pendingBytes >= CHUNK_BYTES) yield flush();
  }
  function* record(entry: ChainRecord): Generator<Buffer> {
    records++;
    yield* add(encodeRecord(entry));
  }

  for (const path of removedPaths(manifest, parent)) yield* record({ type: 'R', path });
  const before = new Map(parent?.entries.map((entry) => [entry.path, entry]));
  /** Files sent whole are new inodes on the receiver: hard links to them must be made again. */
  const sentWhole = new Set<string>();
  for (const entry of manifest.entries) {
    const old = before.get(entry.path);
    const { path } = entry;
    switch (entry.type) {
      case 'directory':
        if (old?.type !== 'directory' || !sameMetadata(old, entry)) yield* record({ type: 'D', path, ...metadataOf(entry) });
        break;
      case 'fifo':
        if (old?.type !== 'fifo' || !sameMetadata(old, entry)) yield* record({ type: 'Q', path, ...metadataOf(entry) });
        break;
      case 'symlink':
        if (old?.type !== 'symlink' || old.linkTarget !== entry.linkTarget || !sameMetadata(old, entry)) {
          yield* record({ type: 'S', path, target: entry.linkTarget ?? '', uid: entry.uid, gid: entry.gid, mtimeMs: entry.mtimeMs });
        }
        break;
      case 'hardlink': {
        const target = entry.linkTarget ?? '';
        if (old?.type !== 'hardlink' || old.linkTarget !== target || sentWhole.has(target)) yield* record({ type: 'L', path, target });
        break;
      }
      case 'file': {
        const current = manifest.index.get(path);
        if (!current) throw new BerthError('ERR_REPLICATION', `${what}: its manifest lists ${path} without its block hashes`);
        const previous = old?.type === 'file' ? parent?.index.get(path) : undefined;
        if (!previous) {
          yield* record({ type: 'F', path, size: entry.size, ...metadataOf(entry) });
          for await (const piece of fileContent(tree, path, entry.size, what)) yield* add(piece);
          sentWhole.add(path);
          break;
        }
        const blocks = changedBlocks(previous, current);
        if (blocks.length === 0 && previous.size === entry.size && sameMetadata(old!, entry)) break;
        yield* record({ type: 'P', path, size: entry.size, blocks: blocks.length, ...metadataOf(entry) });
        for await (const piece of blockRecords(tree, path, entry.size, blocks, what)) yield* add(piece);
        break;
      }
    }
  }
  yield* record({ type: 'T', ...manifest.root });
  pending.push(encodeRecord({ type: 'E', records, digest: manifestDigest(manifest) }));
  yield flush();
}

/**
 * Paths of the parent the snapshot does not have, or has as a directory where the parent has
 * none or the other way round (another kind of non-directory is simply replaced). A removed
 * directory takes its subtree with it, so paths below it are not listed.
 */
function removedPaths(manifest: ChainManifest, parent: ChainManifest | undefined): string[] {
  if (!parent) return [];
  const now = new Map(manifest.entries.map((entry) => [entry.path, entry.type]));
  const removed: string[] = [];
  for (const entry of parent.entries) {
    const last = removed.at(-1);
    if (last !== undefined && entry.path.startsWith(`${last}/`)) continue;
    const type = now.get(entry.path);
    if (type === undefined || (type === 'directory') !== (entry.type === 'directory')) removed.push(entry.path);
  }
  return removed;
}

function metadataOf(entry: ManifestEntry): Metadata {
  return { mode: entry.mode, uid: entry.uid, gid: entry.gid, mtimeMs: entry.mtimeMs };
}

async function* fileContent(tree: string, path: string, size: number, what: string): AsyncGenerator<Buffer> {
  const handle = await open(join(tree, path), constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    for (let offset = 0; offset < size; ) {
      const buffer = Buffer.allocUnsafe(Math.min(READ_BYTES, size - offset));
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
      if (bytesRead === 0) throw changed(path, what);
      offset += bytesRead;
      yield buffer.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

/** The P record payload: runs of adjacent blocks are read with one call each. */
async function* blockRecords(tree: string, path: string, size: number, blocks: readonly number[], what: string): AsyncGenerator<Buffer> {
  if (blocks.length === 0) return;
  const handle = await open(join(tree, path), constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    for (let first = 0; first < blocks.length; ) {
      let last = first;
      while (last + 1 < blocks.length && blocks[last + 1] === blocks[last]! + 1 && (last + 2 - first) * BLOCK_SIZE <= READ_BYTES) last++;
      const start = blocks[first]!;
      const bytes = (blocks[last]! - start) * BLOCK_SIZE + blockLength(size, blocks[last]!);
      const buffer = Buffer.allocUnsafe(bytes);
      const { bytesRead } = await handle.read(buffer, 0, bytes, start * BLOCK_SIZE);
      if (bytesRead !== bytes) throw changed(path, what);
      const out: Buffer[] = [];
      for (let index = first; index <= last; index++) {
        const offset = (blocks[index]! - start) * BLOCK_SIZE;
        out.push(encodeDeltaBlock(blocks[index]!, buffer.subarray(offset, offset + blockLength(size, blocks[index]!))));
      }
      yield Buffer.concat(out);
      first = last + 1;
    }
  } finally {
    await handle.close();
  }
}

function changed(path: string, what: string): BerthError {
  return new BerthError('ERR_REPLICATION', `${what}: the snapshot was changed on disk: ${path} is shorter than its manifest says`);
}
