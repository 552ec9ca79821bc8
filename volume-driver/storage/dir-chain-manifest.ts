/**
 * The manifest of a dir-backend chain snapshot: what its tree holds, so that two snapshots can be
 * compared without reading their files. It lives beside the tree as `replicas/<volume>/.<id>.manifest`
 * (never inside it: the tree is exactly the volume's content), is written before the tree is
 * renamed into place and deleted after it, so every snapshot has one.
 *
 * File format 1: the line "berth-dir-manifest/1\n"; [u32 length][header JSON {id, root}];
 * [u32 length][tree listing: one JSON entry a line in tree order, as walkTree yields them, without
 * inode fields]; then the block index of every regular file (block-index.ts records: per 4 KiB
 * block the first 16 bytes of its SHA-256). Hard links are listing entries naming the first path
 * of their inode; sockets, device nodes and names that are not UTF-8 are left out, as in backups.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError, errorMessage } from '../../plugins/errors/berth-error.js';
import { parseTreeListing } from '../backups/chain-index.js';
import { parseBlockIndex, serializeBlockIndex, type BlockIndex } from '../backups/block-index.js';
import { withoutInode, type PortableTreeEntry, type RootMetadata, type TreeEntry } from '../backups/tree/tree-entry.js';
import { readRootMetadata, walkTree } from '../backups/tree/walk-tree.js';
import { writeFileDurably } from './storage-layout.js';

const MAGIC = Buffer.from('berth-dir-manifest/1\n', 'latin1');

export type ManifestEntry = PortableTreeEntry;

export interface ChainManifest {
  readonly id: string;
  readonly root: RootMetadata;
  /** Every entry below the root, in tree order (compareTreePaths). */
  readonly entries: readonly ManifestEntry[];
  /** The block hashes of every 'file' entry, by path. */
  readonly index: BlockIndex;
}

/** The block hashes of a regular file of the tree being described (`entry` as walked, inode fields included). */
export type HashesFor = (entry: TreeEntry, absolute: string) => Promise<Buffer>;

/** Describes the tree at `tree`; `hashesFor` hashes each regular file (or knows its hashes already). */
export async function buildManifest(tree: string, id: string, hashesFor: HashesFor, onSkip?: (path: string, reason: string) => void): Promise<ChainManifest> {
  const root = await readRootMetadata(tree);
  const entries: ManifestEntry[] = [];
  const index: BlockIndex = new Map();
  for await (const entry of walkTree(tree, onSkip ? { onSkip } : {})) {
    entries.push(withoutInode(entry));
    if (entry.type !== 'file') continue;
    const hashes = await hashesFor(entry, join(tree, entry.path));
    index.set(entry.path, { path: entry.path, size: entry.size, mtimeMs: entry.mtimeMs, ctimeMs: 0, ino: 0, hashes });
  }
  return { id, root, entries, index };
}

/**
 * SHA-256 of the content and shape of the tree a manifest describes: paths, types, modes, owners,
 * sizes, link targets and block hashes, not times (a receiver sets them to the millisecond). Equal
 * digests mean equal trees, whichever host built them.
 */
export function manifestDigest(manifest: ChainManifest): string {
  const digest = createHash('sha256');
  const { mode, uid, gid } = manifest.root;
  digest.update(`${JSON.stringify([mode, uid, gid])}\n`);
  for (const entry of manifest.entries) {
    digest.update(`${JSON.stringify([entry.path, entry.type, entry.mode, entry.uid, entry.gid, entry.size, entry.linkTarget ?? null])}\n`);
    const indexed = manifest.index.get(entry.path);
    if (entry.type === 'file' && indexed) digest.update(indexed.hashes);
  }
  return digest.digest('hex');
}

export async function writeManifest(path: string, manifest: ChainManifest): Promise<void> {
  const header = Buffer.from(JSON.stringify({ id: manifest.id, root: manifest.root }), 'utf8');
  const listing = Buffer.from(manifest.entries.map((entry) => `${JSON.stringify(entry)}\n`).join(''), 'utf8');
  const files = manifest.entries.flatMap((entry) => manifest.index.get(entry.path) ?? []);
  await writeFileDurably(path, [MAGIC, u32(header.length), header, u32(listing.length), listing, ...serializeBlockIndex(files)]);
}

/** Reads a manifest written by writeManifest; a damaged one is ERR_STORAGE naming `where`. */
export async function readManifest(path: string, where: string): Promise<ChainManifest> {
  const data = await readFile(path);
  const corrupt = (why: string, cause?: unknown) => new BerthError('ERR_STORAGE', `the manifest of ${where} (${path}) is damaged: ${why}`, cause === undefined ? {} : { cause });
  if (!data.subarray(0, MAGIC.length).equals(MAGIC)) throw corrupt('it does not start with the manifest header');
  let offset = MAGIC.length;
  const section = (what: string): Buffer => {
    if (offset + 4 > data.length) throw corrupt(`its ${what} is truncated`);
    const length = data.readUInt32BE(offset);
    if (offset + 4 + length > data.length) throw corrupt(`its ${what} is truncated`);
    offset += 4 + length;
    return data.subarray(offset - length, offset);
  };
  let header: { id?: unknown; root?: RootMetadata };
  try {
    header = JSON.parse(section('header').toString('utf8')) as typeof header;
  } catch (error) {
    if (error instanceof BerthError) throw error;
    throw corrupt('its header is unreadable', error);
  }
  const { id, root } = header;
  if (typeof id !== 'string' || typeof root?.mode !== 'number' || typeof root.uid !== 'number' || typeof root.gid !== 'number' || typeof root.mtimeMs !== 'number') throw corrupt('its header is invalid');
  const listingData = section('listing');
  let entries: ManifestEntry[];
  let index: BlockIndex;
  try {
    entries = [...parseTreeListing(listingData, where).values()];
    index = parseBlockIndex(data.subarray(offset), where);
  } catch (error) {
    throw corrupt(errorMessage(error), error);
  }
  const files = entries.filter((entry) => entry.type === 'file');
  if (files.length !== index.size || files.some((entry) => index.get(entry.path)?.size !== entry.size)) throw corrupt('its listing and its block index disagree');
  return { id, root: { mode: root.mode, uid: root.uid, gid: root.gid, mtimeMs: root.mtimeMs }, entries, index };
}

function u32(value: number): Buffer {
  const buffer = Buffer.allocUnsafe(4);
  buffer.writeUInt32BE(value);
  return buffer;
}
