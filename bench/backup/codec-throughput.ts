// Measurement: throughput of the backup stream codecs on this machine (printed, nothing asserted).
//
//   npx tsc -p tsconfig.json && node dist/bench/backup/codec-throughput.js [--mib 256] [--runs 3]
//
// Input is random data (incompressible, the worst case for zstd's speed per input byte and the
// same as any data for AES-GCM and SHA-256) and, for compression, also generated log-like text.
// Each stage runs alone from memory to a discarding sink through node:stream pipeline, so the
// figures are the codec's cost plus stream overhead, without disk I/O. The median of the runs is
// reported; rates are per byte of plaintext, for decompression and decryption too.
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { PassThrough, Readable, Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { compressStream, decompressStream } from '../../volume-driver/backups/codec/compression.js';
import { DigestStream } from '../../volume-driver/backups/codec/digest-stream.js';
import { backupKeyId, decryptStream, encryptStream, type BackupKey } from '../../volume-driver/backups/codec/encryption.js';

const MiB = 1024 * 1024;

const { values } = parseArgs({ options: { mib: { type: 'string', default: '256' }, runs: { type: 'string', default: '3' } } });
const size = Number(values.mib) * MiB;
const runs = Number(values.runs);

function source(data: Buffer): Readable {
  let offset = 0;
  return new Readable({
    highWaterMark: MiB,
    read() {
      if (offset >= data.length) {
        this.push(null);
        return;
      }
      const end = Math.min(offset + 256 * 1024, data.length);
      this.push(data.subarray(offset, end));
      offset = end;
    },
  });
}

class Sink extends Writable {
  bytes = 0;
  readonly #keep: Buffer[] | undefined;
  constructor(keep: boolean) {
    super({ highWaterMark: MiB });
    this.#keep = keep ? [] : undefined;
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.bytes += chunk.length;
    this.#keep?.push(chunk);
    callback();
  }
  get data(): Buffer {
    return Buffer.concat(this.#keep ?? []);
  }
}

interface Measured {
  seconds: number;
  output: Buffer;
  outputBytes: number;
}

async function measure(input: Buffer, stages: () => Duplex[], keep = false): Promise<Measured> {
  const times: number[] = [];
  let output: Buffer = Buffer.alloc(0);
  let outputBytes = 0;
  for (let run = 0; run < runs; run++) {
    const sink = new Sink(keep && run === 0);
    const started = performance.now();
    await pipeline([source(input), ...stages(), sink]);
    times.push((performance.now() - started) / 1000);
    if (run === 0) {
      output = sink.data;
      outputBytes = sink.bytes;
    }
  }
  times.sort((a, b) => a - b);
  return { seconds: times[Math.floor(times.length / 2)] ?? 0, output, outputBytes };
}

/** Rates are per byte of plaintext (uncompressed, unencrypted), also for decompression and decryption. */
function line(name: string, plainBytes: number, result: Measured): void {
  const rate = plainBytes / MiB / result.seconds;
  const ratio = result.outputBytes / plainBytes;
  console.log(`${name.padEnd(36)} ${rate.toFixed(0).padStart(6)} MiB/s   ${result.seconds.toFixed(2).padStart(6)} s   output ${(ratio * 100).toFixed(1).padStart(5)}% of plaintext`);
}

function text(bytes: number): Buffer {
  const words = ['volume', 'snapshot', 'backup', 'berth', 'docker', 'engine', 'mount', 'btrfs', 'restore', 'GET', 'POST', '200', '404'];
  const lines: string[] = [];
  let length = 0;
  for (let i = 0; length < bytes; i++) {
    const line = `2025-01-01T00:${String(i % 60).padStart(2, '0')}:00Z ${words[i % 13]} /v1/${words[(i * 7) % 13]}/${(i * 7919) % 100003} ${words[(i * 3) % 13]} ${i}\n`;
    lines.push(line);
    length += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, bytes);
}

const key: BackupKey = { key: randomBytes(32), id: '' };
Object.assign(key, { id: backupKeyId(key.key) });

console.log(`backup codec throughput: ${size / MiB} MiB, median of ${runs} runs, ${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}, node ${process.version}`);
const random = randomBytes(size);
const prose = text(size);

const zstdRandom = await measure(random, () => [compressStream('zstd')], true);
line('zstd -1 -T0 compress (random)', size, zstdRandom);
line('zstd decompress (random)', size, await measure(zstdRandom.output, () => [decompressStream('zstd')]));
const zstdText = await measure(prose, () => [compressStream('zstd')], true);
line('zstd -1 -T0 compress (text)', size, zstdText);
line('zstd decompress (text)', size, await measure(zstdText.output, () => [decompressStream('zstd')]));
line('gzip -1 compress (random)', size, await measure(random, () => [compressStream('gzip')]));
line('gzip -1 compress (text)', size, await measure(prose, () => [compressStream('gzip')]));
const sealed = await measure(random, () => [encryptStream(key)], true);
line('AES-256-GCM encrypt', size, sealed);
line('AES-256-GCM decrypt + verify', size, await measure(sealed.output, () => [decryptStream(key, 'bench')]));
line('SHA-256 DigestStream', size, await measure(random, () => [new DigestStream()]));
line('PassThrough (stream overhead)', size, await measure(random, () => [new PassThrough()]));
line('digest+zstd+encrypt+digest (text)', size, await measure(prose, () => [new DigestStream(), compressStream('zstd'), encryptStream(key), new DigestStream()]));
line('digest+zstd+encrypt+digest (random)', size, await measure(random, () => [new DigestStream(), compressStream('zstd'), encryptStream(key), new DigestStream()]));
