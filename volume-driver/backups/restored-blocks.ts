/**
 * Block hashes of the files a restore writes, taken from the bytes on their way to disk, so that
 * checking a restore against the backup's block index needs no second read of everything
 * restored. Files are known by inode (dev, ino): hard links share their content, a replaced file
 * is a new inode, a file patched in place keeps its own. Whatever was not seen whole (a file
 * written some other way, a patch of an unknown file) has no hashes here, and the verification
 * reads that file back instead.
 *
 * The hashing runs on the thread that writes, from the written chunks themselves: handing the
 * bytes to a worker thread costs a copy and messages, and measured slower on two cores, which
 * decompression, writing and the object checksum keep busy anyway.
 */
import type { FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE, blockCount, HASH_BYTES, hashBlockInto } from './block-index.js';
import type { ContentTap, TapContent } from './tree/safe-extract.js';

interface Seen {
  readonly size: number;
  readonly hashes: Buffer;
}

export class RestoredBlocks {
  /** Complete content seen, by inode. */
  readonly #files = new Map<string, Seen>();

  /** For extractTree and writeFileFrom: sees each created file's content. */
  readonly tapContent: TapContent = ({ dev, ino }) => this.#tap(inodeKey(dev, ino));

  /** The block hashes of this inode's content as restored, when it was seen whole and is `size` bytes long. */
  hashesOf(dev: bigint, ino: bigint, size: number): Buffer | undefined {
    const seen = this.#files.get(inodeKey(dev, ino));
    return seen?.size === size ? seen.hashes : undefined;
  }

  /** Starts patching the open file in place (see BlockPatch). */
  async patch(handle: FileHandle): Promise<BlockPatch> {
    const { dev, ino, size } = await handle.stat({ bigint: true });
    const key = inodeKey(dev, ino);
    const hashes = this.hashesOf(dev, ino, Number(size));
    // Until the patch is finished the content is neither the old one nor the new one.
    this.#files.delete(key);
    return new BlockPatch(Number(size), hashes, (seen) => {
      if (seen) this.#files.set(key, seen);
    });
  }

  /** Hashes a file's blocks straight from the written chunks; a block split between chunks is gathered first. */
  #tap(key: string): ContentTap {
    // A new file: whatever this inode number held before is gone.
    this.#files.delete(key);
    let hashes = Buffer.allocUnsafe(64 * HASH_BYTES);
    const split = Buffer.allocUnsafe(BLOCK_SIZE);
    let gathered = 0;
    let blocks = 0;
    let size = 0;
    const hash = (block: Buffer): void => {
      if ((blocks + 1) * HASH_BYTES > hashes.length) {
        const larger = Buffer.allocUnsafe(hashes.length * 2);
        hashes.copy(larger, 0, 0, blocks * HASH_BYTES);
        hashes = larger;
      }
      hashBlockInto(block, hashes, blocks++ * HASH_BYTES);
    };
    return {
      write: (chunk) => {
        size += chunk.length;
        let offset = 0;
        if (gathered > 0) {
          offset = Math.min(BLOCK_SIZE - gathered, chunk.length);
          chunk.copy(split, gathered, 0, offset);
          gathered += offset;
          if (gathered === BLOCK_SIZE) {
            hash(split);
            gathered = 0;
          }
        }
        for (; chunk.length - offset >= BLOCK_SIZE; offset += BLOCK_SIZE) hash(chunk.subarray(offset, offset + BLOCK_SIZE));
        if (offset < chunk.length) gathered = chunk.copy(split, 0, offset);
      },
      end: () => {
        if (gathered > 0) hash(split.subarray(0, gathered));
        this.#files.set(key, { size, hashes: hashes.subarray(0, blocks * HASH_BYTES) });
      },
      abort: () => undefined,
    };
  }
}

/**
 * Keeps a file's block hashes right while it is patched in place: truncation, then whole blocks
 * written at block offsets. Blocks whose content it cannot know from what was written (a block
 * cut or extended by the truncation and not rewritten, a partial write) are read back by finish.
 */
export class BlockPatch {
  #size: number;
  /** undefined: the content before the patch was not known, so it stays unknown. */
  #hashes: Buffer | undefined;
  #unknown = new Set<number>();

  constructor(
    size: number,
    hashes: Buffer | undefined,
    private readonly done: (seen: Seen | undefined) => void,
  ) {
    this.#size = size;
    this.#hashes = hashes;
  }

  /** The file was truncated (or extended) to `size`. */
  resize(size: number): void {
    if (!this.#hashes || size === this.#size) {
      this.#size = size;
      return;
    }
    const hashes = Buffer.alloc(blockCount(size) * HASH_BYTES);
    this.#hashes.copy(hashes, 0, 0, Math.min(this.#hashes.length, hashes.length));
    // The block the shorter of the two ends falls in (cut, or grown with zeros) and every block after it.
    for (let index = Math.floor(Math.min(size, this.#size) / BLOCK_SIZE); index < blockCount(size); index++) this.#unknown.add(index);
    for (const index of this.#unknown) if (index >= blockCount(size)) this.#unknown.delete(index);
    this.#hashes = hashes;
    this.#size = size;
  }

  /** `data` was written at block `index`. */
  wrote(index: number, data: Buffer): void {
    if (!this.#hashes) return;
    if (index * BLOCK_SIZE + data.length > this.#size) {
      // Past the end: the file grew, nothing known about it is right any more.
      this.#hashes = undefined;
      return;
    }
    if (data.length === Math.min(BLOCK_SIZE, this.#size - index * BLOCK_SIZE)) {
      hashBlockInto(data, this.#hashes, index * HASH_BYTES);
      this.#unknown.delete(index);
    } else {
      this.#unknown.add(index);
    }
  }

  /** Reads back the blocks it could not know and records the file's hashes. */
  async finish(handle: FileHandle): Promise<void> {
    const hashes = this.#hashes;
    if (!hashes) {
      this.done(undefined);
      return;
    }
    const block = Buffer.allocUnsafe(BLOCK_SIZE);
    for (const index of this.#unknown) {
      const length = Math.min(BLOCK_SIZE, this.#size - index * BLOCK_SIZE);
      const { bytesRead } = await handle.read(block, 0, length, index * BLOCK_SIZE);
      if (bytesRead !== length) {
        this.done(undefined);
        return;
      }
      hashBlockInto(block.subarray(0, length), hashes, index * HASH_BYTES);
    }
    this.done({ size: this.#size, hashes });
  }
}

function inodeKey(dev: bigint, ino: bigint): string {
  return `${dev}:${ino}`;
}
