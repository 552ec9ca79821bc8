import { createCipheriv, createDecipheriv, createHmac, randomBytes, type DecipherGCM } from 'node:crypto';
import { open, readFile, rm } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { BerthError, translateError } from '../../../plugins/errors/berth-error.js';

// Encrypted object format, version 1 (all integers big-endian):
//
//   header   'BERTHENC' (8 bytes) | version = 1 (1 byte) | base nonce (12 random bytes) | key id (8 bytes)
//   frames   [length (4 bytes; top bit set on the final frame)][ciphertext (length bytes)][GCM tag (16 bytes)] ...
//
// Each frame seals up to 1 MiB of plaintext with AES-256-GCM. Its nonce is the base nonce with the
// frame index XORed into the last 8 bytes; its additional data is the whole header followed by the
// frame's length word and its index (8 bytes), so frames cannot be reordered, dropped, cut, or
// moved between objects, and the header cannot be altered, without the tag failing. Exactly one
// frame, the last, has the final bit; it may be empty. Nothing may follow it.

export interface BackupKey {
  /** 32 bytes of AES-256 key. */
  readonly key: Buffer;
  /** 16 hex digits derived from the key (HMAC), safe to store in plain manifests. */
  readonly id: string;
}

const MAGIC = Buffer.from('BERTHENC', 'ascii');
const VERSION = 1;
const NONCE_BYTES = 12;
const KEY_ID_BYTES = 8;
const HEADER_BYTES = MAGIC.length + 1 + NONCE_BYTES + KEY_ID_BYTES;
const LENGTH_BYTES = 4;
const TAG_BYTES = 16;
const FINAL_BIT = 0x8000_0000;
/** Plaintext per frame. */
export const FRAME_BYTES = 1024 * 1024;
/** Plaintext and ciphertext go through AES in pieces of at most this (smaller buffers are cheaper to allocate). */
const PIECE_BYTES = 64 * 1024;
const KEY_BYTES = 32;
const KEY_FORMATS = `exactly ${KEY_BYTES} raw bytes, ${KEY_BYTES * 2} hex digits, or ${KEY_BYTES} bytes in base64`;

/** The key id: the first 16 hex digits of HMAC-SHA256(key, 'berth backup key id'). */
export function backupKeyId(key: Buffer): string {
  return createHmac('sha256', key).update('berth backup key id').digest('hex').slice(0, KEY_ID_BYTES * 2);
}

/** Reads a backup key file: 32 raw bytes, or 64 hex digits, or base64 of 32 bytes (surrounding whitespace ignored). */
export async function loadBackupKey(path: string): Promise<BackupKey> {
  let content: Buffer;
  try {
    content = await readFile(path);
  } catch (error) {
    throw translateError(error, 'ERR_INVALID_OPTION', `cannot read backup key file ${path}`);
  }
  const key = parseKey(content);
  if (key === undefined) {
    throw new BerthError('ERR_INVALID_OPTION', `backup key file ${path} must hold ${KEY_FORMATS} (it holds ${content.length} bytes that are none of these)`, {
      details: { path },
    });
  }
  return { key, id: backupKeyId(key) };
}

function parseKey(content: Buffer): Buffer | undefined {
  if (content.length === KEY_BYTES) return Buffer.from(content);
  const text = content.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  for (const [pattern, encoding] of [
    [/^[A-Za-z0-9+/]{43}=?$/, 'base64'],
    [/^[A-Za-z0-9_-]{43}=?$/, 'base64url'],
  ] as const) {
    if (!pattern.test(text)) continue;
    const key = Buffer.from(text, encoding);
    // Canonical only: the 43rd digit's low bits must be zero, or the text is not base64 of 32 bytes.
    if (key.length === KEY_BYTES && key.toString(encoding).replace(/=$/, '') === text.replace(/=$/, '')) return key;
  }
  return undefined;
}

/**
 * Writes a new random key (64 hex digits and a newline) to `path` with mode 0600, for
 * `berth backup keygen`. Refuses to overwrite an existing file.
 */
export async function generateBackupKey(path: string): Promise<BackupKey> {
  const key = randomBytes(KEY_BYTES);
  let handle;
  try {
    handle = await open(path, 'wx', 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new BerthError('ERR_INVALID_OPTION', `backup key file ${path} already exists; refusing to overwrite it`, { cause: error, details: { path } });
    }
    throw translateError(error, 'ERR_INVALID_OPTION', `cannot create backup key file ${path}`);
  }
  try {
    await handle.chmod(0o600);
    await handle.writeFile(`${key.toString('hex')}\n`);
    await handle.sync();
    await handle.close();
  } catch (error) {
    await handle.close().catch(() => undefined);
    await rm(path, { force: true });
    throw translateError(error, 'ERR_INVALID_OPTION', `cannot write backup key file ${path}`);
  }
  return { key, id: backupKeyId(key) };
}

function checkKey(key: BackupKey): void {
  if (key.key.length !== KEY_BYTES) throw new BerthError('ERR_INTERNAL', `backup key ${key.id} has ${key.key.length} bytes, not ${KEY_BYTES}`);
}

function frameNonce(base: Buffer, index: bigint): Buffer {
  const nonce = Buffer.from(base);
  nonce.writeBigUInt64BE(nonce.readBigUInt64BE(NONCE_BYTES - 8) ^ index, NONCE_BYTES - 8);
  return nonce;
}

function frameAad(header: Buffer, lengthWord: number, index: bigint): Buffer {
  const aad = Buffer.allocUnsafe(HEADER_BYTES + LENGTH_BYTES + 8);
  header.copy(aad, 0);
  aad.writeUInt32BE(lengthWord, HEADER_BYTES);
  aad.writeBigUInt64BE(index, HEADER_BYTES + LENGTH_BYTES);
  return aad;
}

/** Encrypts what is written to it into the format above. */
export function encryptStream(key: BackupKey): Transform {
  return new EncryptStream(key);
}

class EncryptStream extends Transform {
  readonly #key: Buffer;
  readonly #header: Buffer;
  readonly #nonce: Buffer;
  #index = 0n;
  /** Plaintext of the frame being filled, as received (not copied). */
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  constructor(key: BackupKey) {
    super();
    checkKey(key);
    this.#key = key.key;
    this.#nonce = randomBytes(NONCE_BYTES);
    this.#header = Buffer.concat([MAGIC, Buffer.of(VERSION), this.#nonce, Buffer.from(backupKeyId(key.key), 'hex')]);
    this.push(this.#header);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      let rest = chunk;
      // A full frame is sealed as soon as it is full, so it is never the final one (that may be empty).
      while (this.#pendingBytes + rest.length >= FRAME_BYTES) {
        const take = FRAME_BYTES - this.#pendingBytes;
        this.#pending.push(rest.subarray(0, take));
        this.#seal(FRAME_BYTES, false);
        rest = rest.subarray(take);
      }
      if (rest.length > 0) {
        this.#pending.push(rest);
        this.#pendingBytes += rest.length;
      }
    } catch (error) {
      callback(translateError(error, 'ERR_INTERNAL', 'encrypting backup object'));
      return;
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.#seal(this.#pendingBytes, true);
    } catch (error) {
      callback(translateError(error, 'ERR_INTERNAL', 'encrypting backup object'));
      return;
    }
    callback();
  }

  /** Seals the pending plaintext as one frame, in pieces (large crypto output buffers cost page faults). */
  #seal(length: number, final: boolean): void {
    const index = this.#index++;
    const lengthWord = (length | (final ? FINAL_BIT : 0)) >>> 0;
    const cipher = createCipheriv('aes-256-gcm', this.#key, frameNonce(this.#nonce, index), { authTagLength: TAG_BYTES });
    cipher.setAAD(frameAad(this.#header, lengthWord, index));
    const lengthBytes = Buffer.allocUnsafe(LENGTH_BYTES);
    lengthBytes.writeUInt32BE(lengthWord, 0);
    this.push(lengthBytes);
    for (const part of this.#pending) {
      for (let offset = 0; offset < part.length; offset += PIECE_BYTES) {
        const sealed = cipher.update(part.subarray(offset, offset + PIECE_BYTES));
        if (sealed.length > 0) this.push(sealed);
      }
    }
    this.#pending = [];
    this.#pendingBytes = 0;
    const tail = cipher.final();
    this.push(tail.length > 0 ? Buffer.concat([tail, cipher.getAuthTag()]) : cipher.getAuthTag());
  }
}

/**
 * Decrypts and authenticates an object in the format above; `objectName` names it in errors.
 * Only authenticated plaintext is ever emitted, one whole frame at a time. Errors:
 * ERR_BACKUP_WRONG_KEY (the header names another key), ERR_BACKUP_CORRUPT (bad header, a frame
 * failing authentication, bytes after the final frame), ERR_BACKUP_TRUNCATED (input ends before
 * the final frame).
 */
export function decryptStream(key: BackupKey, objectName: string): Transform {
  return new DecryptStream(key, objectName);
}

type DecryptState = 'header' | 'length' | 'body' | 'tag' | 'done';

class DecryptStream extends Transform {
  readonly #key: BackupKey;
  readonly #name: string;
  #state: DecryptState = 'header';
  /** Gathers the small fixed-size fields (header, length word, tag), which may straddle chunks. */
  readonly #field = Buffer.alloc(HEADER_BYTES);
  #fieldBytes = 0;
  #header: Buffer | undefined;
  #nonce: Buffer | undefined;
  #index = 0n;
  #lengthWord = 0;
  #remaining = 0;
  #decipher: DecipherGCM | undefined;
  /** Plaintext of the current frame, held back until its tag has been verified. */
  #plaintext: Buffer[] = [];

  constructor(key: BackupKey, objectName: string) {
    super();
    checkKey(key);
    this.#key = { key: key.key, id: backupKeyId(key.key) };
    this.#name = objectName;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.#consume(chunk);
    } catch (error) {
      callback(translateError(error, 'ERR_INTERNAL', `decrypting ${this.#name}`));
      return;
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (this.#state === 'done') {
      callback();
      return;
    }
    callback(
      new BerthError('ERR_BACKUP_TRUNCATED', `${this.#name} is truncated: ${this.#truncation()}`, {
        details: { object: this.#name, frame: Number(this.#index) },
      }),
    );
  }

  #truncation(): string {
    if (this.#state === 'header') return `input ended after ${this.#fieldBytes} of the ${HEADER_BYTES} header bytes`;
    if (this.#state !== 'length' || this.#fieldBytes > 0) return `input ended in frame ${this.#index}`;
    if (this.#index === 0n) return 'input ended before the first frame';
    return `input ended after frame ${this.#index - 1n}, which is not the final frame`;
  }

  #consume(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length) {
      switch (this.#state) {
        case 'header':
          offset = this.#gather(chunk, offset, HEADER_BYTES);
          if (this.#fieldBytes === HEADER_BYTES) this.#readHeader(this.#takeField());
          break;
        case 'length':
          offset = this.#gather(chunk, offset, LENGTH_BYTES);
          if (this.#fieldBytes === LENGTH_BYTES) this.#startFrame(this.#takeField().readUInt32BE(0));
          break;
        case 'body': {
          const end = offset + Math.min(this.#remaining, chunk.length - offset, PIECE_BYTES);
          const plaintext = (this.#decipher as DecipherGCM).update(chunk.subarray(offset, end));
          if (plaintext.length > 0) this.#plaintext.push(plaintext);
          this.#remaining -= end - offset;
          offset = end;
          if (this.#remaining === 0) this.#state = 'tag';
          break;
        }
        case 'tag':
          offset = this.#gather(chunk, offset, TAG_BYTES);
          if (this.#fieldBytes === TAG_BYTES) this.#endFrame(this.#takeField());
          break;
        case 'done':
          throw this.#corrupt('unexpected data follows the final frame');
      }
    }
  }

  /** Copies bytes of `chunk` from `offset` into the field until it holds `size`; returns the new offset. */
  #gather(chunk: Buffer, offset: number, size: number): number {
    const copied = chunk.copy(this.#field, this.#fieldBytes, offset, offset + size - this.#fieldBytes);
    this.#fieldBytes += copied;
    return offset + copied;
  }

  #takeField(): Buffer {
    const field = this.#field.subarray(0, this.#fieldBytes);
    this.#fieldBytes = 0;
    return field;
  }

  #readHeader(header: Buffer): void {
    if (!header.subarray(0, MAGIC.length).equals(MAGIC)) throw this.#corrupt('it does not start with the Berth encryption header (BERTHENC)');
    const version = header[MAGIC.length];
    if (version !== VERSION) throw this.#corrupt(`its encryption format version ${String(version)} is not the supported version ${VERSION}`);
    const id = header.subarray(HEADER_BYTES - KEY_ID_BYTES).toString('hex');
    if (id !== this.#key.id) {
      throw new BerthError('ERR_BACKUP_WRONG_KEY', `${this.#name} was encrypted with key ${id} but the given key is ${this.#key.id}`, {
        details: { object: this.#name, objectKeyId: id, keyId: this.#key.id },
      });
    }
    this.#header = Buffer.from(header);
    this.#nonce = this.#header.subarray(MAGIC.length + 1, MAGIC.length + 1 + NONCE_BYTES);
    this.#state = 'length';
  }

  #startFrame(lengthWord: number): void {
    const length = (lengthWord & ~FINAL_BIT) >>> 0;
    if (length > FRAME_BYTES) throw this.#corrupt(`frame ${this.#index} claims ${length} bytes, more than the ${FRAME_BYTES} a frame holds`);
    const decipher = createDecipheriv('aes-256-gcm', this.#key.key, frameNonce(this.#nonce as Buffer, this.#index), { authTagLength: TAG_BYTES });
    decipher.setAAD(frameAad(this.#header as Buffer, lengthWord, this.#index));
    this.#decipher = decipher;
    this.#lengthWord = lengthWord;
    this.#remaining = length;
    this.#state = length > 0 ? 'body' : 'tag';
  }

  #endFrame(tag: Buffer): void {
    const decipher = this.#decipher as DecipherGCM;
    try {
      decipher.setAuthTag(tag);
      const tail = decipher.final();
      if (tail.length > 0) this.#plaintext.push(tail);
    } catch (error) {
      throw this.#corrupt(`authentication failed in frame ${this.#index}`, error);
    }
    for (const plaintext of this.#plaintext) this.push(plaintext);
    this.#plaintext = [];
    this.#decipher = undefined;
    this.#index += 1n;
    this.#state = (this.#lengthWord & FINAL_BIT) !== 0 ? 'done' : 'length';
  }

  #corrupt(reason: string, cause?: unknown): BerthError {
    return new BerthError('ERR_BACKUP_CORRUPT', `${this.#name} is corrupt: ${reason}`, {
      ...(cause === undefined ? {} : { cause }),
      details: { object: this.#name, frame: Number(this.#index) },
    });
  }
}
