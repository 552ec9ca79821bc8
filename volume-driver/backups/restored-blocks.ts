/**
 * Block hashes of the files a restore writes, taken from the bytes on their way to disk and
 * hashed on a worker thread, so that checking a restore against the backup's block index needs
 * no second read of everything restored. Files are known by inode (dev, ino): hard links share
 * their content, a replaced file is a new inode, a file patched in place keeps its own. Whatever
 * was not seen whole (a file written some other way, a patch of an unknown file) has no hashes
 * here, and the verification reads that file back instead.
 */
import type { FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE, blockCount, HASH_BYTES, hashBlockInto, hashChunkInto } from './block-index.js';
import { HashThread } from './codec/hash-thread.js';
import type { ContentTap, TapContent } from './tree/safe-extract.js';

/** Bytes handed to the thread at a time; a multiple of BLOCK_SIZE, so slots hold whole blocks. */
const SLOT_BYTES = 1024 * 1024;
const SLOT_HASH_BYTES = (SLOT_BYTES / BLOCK_SIZE) * HASH_BYTES;
/** Slots being filled or hashed at once: how far writing may run ahead of the thread. */
const SLOTS = 16;

interface Seen {
  readonly size: number;
  /** Block hashes in order, one piece per slot. */
  readonly pieces: ReadonlyArray<Promise<Buffer>>;
}

/** Where a tap gathers bytes: a shared slot the thread hashes, or its own buffer it hashes itself. */
type Gathering = { readonly slot: number; readonly buffer: Buffer } | { readonly slot: undefined; readonly buffer: Buffer };

export class RestoredBlocks {
  readonly #thread = new HashThread();
  readonly #memory = new SharedArrayBuffer(SLOTS * SLOT_BYTES);
  readonly #hashMemory = new SharedArrayBuffer(SLOTS * SLOT_HASH_BYTES);
  readonly #view = Buffer.from(this.#memory);
  readonly #hashView = Buffer.from(this.#hashMemory);
  readonly #free: number[] = Array.from({ length: SLOTS }, (_, slot) => slot);
  /** Complete content seen, by inode. */
  readonly #files = new Map<string, Seen>();

  /** For extractTree and writeFileFrom: sees each created file's content. */
  readonly tapContent: TapContent = ({ dev, ino }) => this.#tap(inodeKey(dev, ino));

  /**
   * The block hashes of this inode's content as restored, when it was seen whole and is `size`
   * bytes long; undefined otherwise (also when hashing failed: the caller reads the file instead).
   */
  async hashesOf(dev: bigint, ino: bigint, size: number): Promise<Buffer | undefined> {
    const seen = this.#files.get(inodeKey(dev, ino));
    if (!seen || seen.size !== size) return undefined;
    try {
      return seen.pieces.length === 1 ? await seen.pieces[0]! : Buffer.concat(await Promise.all(seen.pieces));
    } catch {
      return undefined;
    }
  }

  /** Starts patching the open file in place (see BlockPatch); waits for its hashes so far. */
  async patch(handle: FileHandle): Promise<BlockPatch> {
    const { dev, ino, size } = await handle.stat({ bigint: true });
    const key = inodeKey(dev, ino);
    const hashes = await this.hashesOf(dev, ino, Number(size));
    // Until the patch is finished the content is neither the old one nor the new one.
    this.#files.delete(key);
    return new BlockPatch(Number(size), hashes, (seen) => {
      if (seen) this.#files.set(key, seen);
    });
  }

  /** Stops the hashing thread; hashes not yet computed are lost. */
  async close(): Promise<void> {
    await this.#thread.close();
  }

  /**
   * Gathers a file's bytes into 1 MiB pieces, each hashed on the thread, or here when every slot
   * is taken (the thread is behind: hashing beats waiting, both cores work).
   */
  #tap(key: string): ContentTap {
    // A new file: whatever this inode number held before is gone.
    this.#files.delete(key);
    const pieces: Array<Promise<Buffer>> = [];
    let own: Buffer | undefined;
    let gathering: Gathering | undefined;
    let filled = 0;
    let size = 0;
    const hashGathered = (): void => {
      const { slot, buffer } = gathering!;
      const length = filled;
      gathering = undefined;
      filled = 0;
      if (slot === undefined) {
        const hashes = Buffer.allocUnsafe(blockCount(length) * HASH_BYTES);
        hashChunkInto(hashes, buffer.subarray(0, length), 0);
        pieces.push(Promise.resolve(hashes));
        return;
      }
      const piece = this.#thread.hashBlocks(this.#memory, slot * SLOT_BYTES, length, this.#hashMemory, slot * SLOT_HASH_BYTES).then(
        () => {
          const hashes = Buffer.from(this.#hashView.subarray(slot * SLOT_HASH_BYTES, slot * SLOT_HASH_BYTES + blockCount(length) * HASH_BYTES));
          this.#free.push(slot);
          return hashes;
        },
        (error: unknown) => {
          this.#free.push(slot);
          throw error;
        },
      );
      piece.catch(() => undefined); // awaited by hashesOf
      pieces.push(piece);
    };
    const gather = (): Gathering => {
      const slot = this.#free.pop();
      if (slot !== undefined) return { slot, buffer: this.#view.subarray(slot * SLOT_BYTES, (slot + 1) * SLOT_BYTES) };
      own ??= Buffer.allocUnsafe(SLOT_BYTES);
      return { slot: undefined, buffer: own };
    };
    return {
      write: (chunk) => {
        size += chunk.length;
        for (let offset = 0; offset < chunk.length; ) {
          gathering ??= gather();
          const count = Math.min(SLOT_BYTES - filled, chunk.length - offset);
          chunk.copy(gathering.buffer, filled, offset, offset + count);
          filled += count;
          offset += count;
          if (filled === SLOT_BYTES) hashGathered();
        }
      },
      end: () => {
        if (gathering) hashGathered();
        this.#files.set(key, { size, pieces });
      },
      abort: () => {
        if (gathering?.slot !== undefined) this.#free.push(gathering.slot);
        gathering = undefined;
      },
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
    this.done({ size: this.#size, pieces: [Promise.resolve(hashes)] });
  }
}

function inodeKey(dev: bigint, ino: bigint): string {
  return `${dev}:${ino}`;
}
