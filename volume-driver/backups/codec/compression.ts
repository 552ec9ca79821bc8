import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { Duplex, PassThrough, type Readable, type Writable } from 'node:stream';
import { createGunzip, createGzip, type Gunzip, type Gzip } from 'node:zlib';
import { BerthError, translateError } from '../../../plugins/errors/berth-error.js';

/**
 * How backup objects are compressed. Both real codecs produce standard streams GNU tar reads
 * itself (`tar --zstd -x`, `tar -xz`), so a full backup can be restored without Berth.
 */
export type Compression = 'zstd' | 'gzip' | 'none';

export const COMPRESSIONS: readonly Compression[] = ['zstd', 'gzip', 'none'];

export interface CompressionOptions {
  /** The zstd binary; default `zstd` from PATH (Debian package zstd). */
  zstdPath?: string;
  /** Names what flows through, for error messages, e.g. the object name. Default `<kind> stream`. */
  subject?: string;
}

/** File name suffix of a compressed object: `.zst`, `.gz` or nothing. */
export function compressionSuffix(kind: Compression): string {
  switch (kind) {
    case 'zstd':
      return '.zst';
    case 'gzip':
      return '.gz';
    case 'none':
      return '';
  }
}

/**
 * A stream compressing what is written to it. zstd runs `zstd -q -c -1 -T0` as a child process
 * (fast level, all cores); gzip is zlib at level 1. Failures error the stream (ERR_STORAGE).
 */
export function compressStream(kind: Compression, options: CompressionOptions = {}): Duplex {
  const subject = options.subject ?? `${kind} stream`;
  switch (kind) {
    case 'zstd':
      return new ToolStream([options.zstdPath ?? 'zstd', '-q', '-c', '-1', '-T0'], `compressing ${subject}`, 'compress', subject);
    case 'gzip':
      return new TranslatedGzip(createGzip({ level: 1 }), subject, 'compress');
    case 'none':
      return new PassThrough();
  }
}

/**
 * A stream decompressing what is written to it. Input that is not valid for the codec errors the
 * stream with ERR_BACKUP_CORRUPT, input that ends early with ERR_BACKUP_TRUNCATED; a zstd that
 * cannot run with ERR_STORAGE.
 */
export function decompressStream(kind: Compression, options: CompressionOptions = {}): Duplex {
  const subject = options.subject ?? `${kind} stream`;
  switch (kind) {
    case 'zstd':
      return new ToolStream([options.zstdPath ?? 'zstd', '-q', '-d', '-c'], `decompressing ${subject}`, 'decompress', subject);
    case 'gzip':
      return new TranslatedGzip(createGunzip(), subject, 'decompress');
    case 'none':
      return new PassThrough();
  }
}

/**
 * Decompresses the file open as `fd` from its current offset (normally a fresh descriptor: from
 * the start): zstd reads it itself, no bytes pass through this process on the way in. Errors as
 * decompressStream. Only zstd; the descriptor stays the caller's to close once the stream is done.
 */
export function decompressFile(kind: 'zstd', fd: number, options: CompressionOptions = {}): Readable {
  const subject = options.subject ?? `${kind} stream`;
  const stream = new ToolStream([options.zstdPath ?? 'zstd', '-q', '-d', '-c'], `decompressing ${subject}`, 'decompress', subject, fd);
  stream.end();
  return stream;
}

type Direction = 'compress' | 'decompress';

/** Kept of a tool's stderr for the error message. */
const MAX_STDERR = 16 * 1024;

/**
 * A child process as a Duplex: writes go to its stdin (with backpressure), its stdout is the
 * readable side, and the readable side only ends once the process has exited 0 — any other exit,
 * a signal, or a spawn failure errors the stream instead, with stderr in the message. Destroying
 * the stream kills the process. With `input`, the process reads that descriptor as its stdin
 * instead, and nothing may be written.
 */
export class ToolStream extends Duplex {
  readonly #command: readonly string[];
  readonly #what: string;
  readonly #direction: Direction;
  readonly #subject: string;
  readonly #child: ChildProcessByStdio<Writable | null, Readable, Readable>;
  #stderr = '';
  #inputFailed = false;

  constructor(command: readonly string[], what: string, direction: Direction, subject: string, input?: number) {
    super();
    this.#command = command;
    this.#what = what;
    this.#direction = direction;
    this.#subject = subject;
    const [file = '', ...args] = command;
    this.#child = input === undefined ? spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] }) : (spawn(file, args, { stdio: [input, 'pipe', 'pipe'] }) as ChildProcessByStdio<null, Readable, Readable>);
    const child = this.#child;
    child.on('error', (error: NodeJS.ErrnoException) => this.#spawnFailed(file, error));
    // EPIPE and the like when the tool quits early; the exit status then tells what went wrong.
    child.stdin?.on('error', () => {
      this.#inputFailed = true;
    });
    child.stdout.on('error', (error) => this.destroy(translateError(error, 'ERR_STORAGE', `${this.#what}: reading ${file} output`)));
    child.stdout.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) child.stdout.pause();
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      this.#stderr = (this.#stderr + text).slice(-MAX_STDERR);
    });
    child.on('close', (code, signal) => this.#closed(code, signal));
  }

  /** The process id, undefined when the process could not be started. */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const stdin = this.#child.stdin;
    if (!stdin) {
      callback(new BerthError('ERR_INTERNAL', `${this.#what}: the tool reads a file, not what is written to it`));
      return;
    }
    // On a write error the callback is left pending: the exit status decides how the stream fails.
    stdin.write(chunk, (error) => {
      if (!error) callback();
    });
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.#child.stdin) this.#child.stdin.end(() => callback());
    else callback();
  }

  override _read(): void {
    this.#child.stdout.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const child = this.#child;
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    child.stdin?.destroy();
    child.stdout.destroy();
    callback(error);
  }

  #spawnFailed(file: string, error: NodeJS.ErrnoException): void {
    const missing = error.code === 'ENOENT';
    const install = file === 'zstd' || file.endsWith('/zstd') ? 'install the Debian zstd package (apt-get install zstd)' : `install ${file}`;
    const where = file.includes('/') ? `${file} does not exist` : `${file} is not installed or not on PATH`;
    const reason = missing ? `${where}; ${install}` : `cannot run ${file}: ${error.message}`;
    this.destroy(new BerthError('ERR_STORAGE', `${this.#what}: ${reason}`, { cause: error, details: { command: [...this.#command] } }));
  }

  /** 'close' comes after the exit and after stdout has ended, so everything has been pushed by now. */
  #closed(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.destroyed) return;
    if (code === 0 && !this.#inputFailed) {
      this.push(null);
      return;
    }
    this.destroy(this.#failure(code, signal));
  }

  #failure(code: number | null, signal: NodeJS.Signals | null): BerthError {
    const stderr = this.#stderr.trim().split('\n').slice(-10).join('\n');
    const status = code === 0 ? 'exited before reading all its input' : `failed with ${code === null ? `signal ${signal ?? 'unknown'}` : `exit code ${code}`}`;
    const details = { command: [...this.#command], exitCode: code, signal, stderr: this.#stderr };
    const tool = `${this.#command.join(' ')} ${status}${stderr ? `: ${stderr}` : ''}`;
    if (this.#direction === 'decompress' && code !== null && code !== 0) {
      const truncated = /premature end|unexpected end|truncated/i.test(stderr);
      return truncated
        ? new BerthError('ERR_BACKUP_TRUNCATED', `${this.#subject} is truncated: ${tool}`, { details })
        : new BerthError('ERR_BACKUP_CORRUPT', `${this.#subject} is corrupt: ${tool}`, { details });
    }
    return new BerthError('ERR_STORAGE', `${this.#what}: ${tool}`, { details });
  }
}

/**
 * zlib's gzip streams, with their errors (which name nothing) translated once to BerthErrors
 * naming the subject. Every zlib failure reaches the stream through destroy(), so that is where.
 */
class TranslatedGzip extends Duplex {
  readonly #inner: Gzip | Gunzip;
  readonly #subject: string;
  readonly #direction: Direction;

  constructor(inner: Gzip | Gunzip, subject: string, direction: Direction) {
    super();
    this.#inner = inner;
    this.#subject = subject;
    this.#direction = direction;
    inner.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) inner.pause();
    });
    inner.on('end', () => this.push(null));
    inner.on('error', (error) => this.destroy(this.#translate(error)));
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#inner.write(chunk)) callback();
    else this.#inner.once('drain', () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#inner.end(() => callback());
  }

  override _read(): void {
    this.#inner.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#inner.destroy();
    callback(error);
  }

  #translate(error: Error): BerthError {
    const code = (error as NodeJS.ErrnoException).code;
    if (this.#direction === 'decompress' && code === 'Z_BUF_ERROR') {
      return translateError(error, 'ERR_BACKUP_TRUNCATED', `${this.#subject} is truncated`);
    }
    if (this.#direction === 'decompress' && typeof code === 'string' && code.startsWith('Z_')) {
      return translateError(error, 'ERR_BACKUP_CORRUPT', `${this.#subject} is corrupt`);
    }
    return translateError(error, 'ERR_STORAGE', `${this.#direction === 'compress' ? 'compressing' : 'decompressing'} ${this.#subject}`);
  }
}
