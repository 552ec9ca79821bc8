// The benchmark's data, all derived from one seed so that runs back up identical bytes:
// a 1 GiB "database file" of random bytes, 400 MiB of generated SQL INSERT text (the mix of
// shared/docs/anchors-volume.md §3.1), and the page-write workload applied between backups.
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { seededRandom } from '../common/stats.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** Where the two files live inside the volume. */
export const DB_FILE = 'pgdata/base/16384/orders.dat';
export const SQL_FILE = 'dumps/orders-inserts.sql';

const WRITE_CHUNK = MiB;

/**
 * Deterministic pseudo-random bytes: the AES-256-CTR keystream of a key derived from `label`.
 * Incompressible like real random data, and fast (AES-NI), so 10 GiB take seconds to make.
 */
export class Keystream {
  private readonly cipher;
  private readonly zeros = Buffer.alloc(WRITE_CHUNK);

  constructor(label: string) {
    const digest = createHash('sha256').update(`berth-bench-backup:${label}`).digest();
    this.cipher = createCipheriv('aes-256-ctr', digest, Buffer.alloc(16, 0));
  }

  next(bytes: number): Buffer {
    const out: Buffer[] = [];
    for (let left = bytes; left > 0; left -= WRITE_CHUNK) out.push(this.cipher.update(this.zeros.subarray(0, Math.min(WRITE_CHUNK, left))));
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }
}

/** Writes `bytes` of keystream `label` to a new file (parents created), then fsyncs it. */
export async function writeRandomFile(path: string, bytes: number, label: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const stream = new Keystream(label);
  const handle = await open(path, 'wx', 0o600);
  try {
    for (let written = 0; written < bytes; ) {
      const chunk = stream.next(Math.min(WRITE_CHUNK, bytes - written));
      await writeFully(handle, chunk, written);
      written += chunk.length;
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
}

const CITIES = ['Lisbon', 'Porto', 'Berlin', 'Hamburg', 'Lyon', 'Nantes', 'Oslo', 'Bergen', 'Turin', 'Milan', 'Ghent', 'Leeds', 'Cork', 'Graz', 'Brno', 'Lodz'];
const STATUSES = ['pending', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded'];
const WORDS = (
  'please leave at the door call before delivery gift wrap fragile handle with care ' +
  'second floor ring twice office hours only back entrance no signature needed urgent ' +
  'replacement order customer asked for invoice split shipment partial refund approved'
).split(' ');

/**
 * Writes `bytes` of SQL text, one INSERT per line, rows drawn from a seeded PRNG (so about as
 * compressible as a real dump: repeated statement text, varied numbers, dates and notes).
 */
export async function writeSqlFile(path: string, bytes: number, seed: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const random = seededRandom(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const two = (value: number): string => String(value).padStart(2, '0');
  const handle = await open(path, 'wx', 0o600);
  try {
    let id = 1;
    let written = 0;
    while (written < bytes) {
      const lines: string[] = [];
      let length = 0;
      while (length < WRITE_CHUNK) {
        const words = Array.from({ length: 2 + Math.floor(random() * 7) }, () => pick(WORDS)).join(' ');
        const line =
          `INSERT INTO orders (id, customer_id, product_sku, quantity, unit_price, status, created_at, shipping_city, note) VALUES (` +
          `${id++}, ${1 + Math.floor(random() * 250_000)}, 'SKU-${String(Math.floor(random() * 100_000)).padStart(6, '0')}', ${1 + Math.floor(random() * 12)}, ` +
          `${(random() * 500).toFixed(2)}, '${pick(STATUSES)}', '2024-${two(1 + Math.floor(random() * 12))}-${two(1 + Math.floor(random() * 28))} ` +
          `${two(Math.floor(random() * 24))}:${two(Math.floor(random() * 60))}:${two(Math.floor(random() * 60))}', '${pick(CITIES)}', '${words}');\n`;
        lines.push(line);
        length += line.length;
      }
      const chunk = Buffer.from(lines.join(''), 'utf8');
      const take = chunk.subarray(0, Math.min(chunk.length, bytes - written));
      await writeFully(handle, take, written);
      written += take.length;
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export interface PageWorkload {
  readonly pages: number;
  readonly pageBytes: number;
  readonly appendBytes: number;
  readonly seed: number;
}

export interface PageWorkloadResult {
  /** Distinct pages among the random ones (a page may be drawn twice). */
  readonly distinctPages: number;
  /** Distinct 1 MiB and 2 MiB regions touched: what chunk- or block-based incrementals would re-send. */
  readonly distinct1MiB: number;
  readonly distinct2MiB: number;
  readonly sizeAfter: number;
}

/**
 * The database write pattern: `pages` random page-aligned writes of fresh random bytes into the
 * existing file, then `appendBytes` appended, then fsync.
 */
export async function applyPageWrites(path: string, workload: PageWorkload): Promise<PageWorkloadResult> {
  const random = seededRandom(workload.seed);
  const content = new Keystream(`pages-${workload.seed}`);
  const handle = await open(path, 'r+');
  try {
    const size = (await handle.stat()).size;
    const pagesInFile = Math.floor(size / workload.pageBytes);
    const touched = new Set<number>();
    for (let i = 0; i < workload.pages; i++) {
      const page = Math.floor(random() * pagesInFile);
      touched.add(page);
      await writeFully(handle, content.next(workload.pageBytes), page * workload.pageBytes);
    }
    const appended = new Keystream(`append-${workload.seed}`);
    for (let written = 0; written < workload.appendBytes; ) {
      const chunk = appended.next(Math.min(WRITE_CHUNK, workload.appendBytes - written));
      await writeFully(handle, chunk, size + written);
      written += chunk.length;
    }
    await handle.sync();
    const regions = (bytes: number) => new Set([...touched].map((page) => Math.floor((page * workload.pageBytes) / bytes))).size;
    return { distinctPages: touched.size, distinct1MiB: regions(MiB), distinct2MiB: regions(2 * MiB), sizeAfter: size + workload.appendBytes };
  } finally {
    await handle.close();
  }
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function writeFully(handle: Awaited<ReturnType<typeof open>>, chunk: Buffer, position: number): Promise<void> {
  for (let done = 0; done < chunk.length; ) {
    const { bytesWritten } = await handle.write(chunk, done, chunk.length - done, position + done);
    if (bytesWritten <= 0) throw new Error(`short write at ${position + done}`);
    done += bytesWritten;
  }
}
