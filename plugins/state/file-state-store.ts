/**
 * FileStateStore: the single-host StateStore, one nedb-promises data file owned by one process.
 *
 * Design notes (durability):
 * - nedb keeps every document in memory and persists by appending one JSON line per changed document
 *   (fs.appendFile; the promise resolves once the kernel holds the bytes). Loading replays the log;
 *   compaction rewrites it crash-safely (temp file, fsync, rename, fsync of the directory). We compact at
 *   open, periodically when the log has grown, and at close.
 * - Every mutation of one key is exactly one appended line, so a kill -9 leaves the old or the new document,
 *   never a mix. A delete replaces the entry with a tombstone `{t: 'x', rev}` rather than removing it, so the
 *   store revision always lives in some document: at load it is recomputed as the maximum `rev`/`mr` over
 *   all documents and the meta document. Tombstones are purged just before compaction, after the meta
 *   document has been written with the current revision.
 * - A crash can tear only the unterminated tail of the file; that write was never acknowledged and is dropped
 *   at open. Any other unreadable line means corruption: ERR_STATE_CORRUPT naming the file, never a silent loss.
 * - Lease revocation touches several keys: it first marks the lease document revoked (one line, synced), then
 *   tombstones the keys at one revision (as etcd does), then removes the lease document. An interrupted
 *   revocation, like any lease that expired while no process ran, is finished at the next open.
 * - With `fsync` (the default) every mutation is fdatasync'ed before it resolves, which extends the guarantee
 *   from process crashes to power loss. Watchers see a change only after that.
 * - In-memory maps mirror the acknowledged state only: they change after the write is durable, so reads
 *   (served from memory, outside the mutex) never see a write that could still be lost.
 * - After a failed write the file may end in a partial line, so the store refuses further writes until it is
 *   reopened (which repairs the tail), like etcd stopping on a WAL error.
 * - nedb's line reader also splits on U+0085, U+2028 and U+2029, which JSON.stringify leaves raw; a
 *   serialization hook escapes them.
 * - One process per file: `<file>.lock` records the owner's pid and process start time (pid reuse, containers
 *   restarting as pid 1). A lock whose process is gone is taken over; a live one is refused.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, rename, truncate, unlink, writeFile, appendFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { TextDecoder } from 'node:util';
import Datastore from 'nedb-promises';
import { BerthError, errorMessage, translateError } from '../errors/berth-error.js';
import type {
  DeleteOptions,
  Lease,
  LeaseId,
  ListResult,
  PutOptions,
  StateStore,
  StoredEntry,
  Watch,
  WatchEvent,
  WatchHandler,
  WatchOptions,
} from './state-store.js';

export interface FileStateStoreOptions {
  /** Events kept in memory for `watch(..., { fromRevision })` replay (default 10,000). */
  readonly watchHistory?: number;
  /** How often to compact the data file if it has grown (default 5 minutes; 0 disables the timer). */
  readonly compactionIntervalMs?: number;
  /** fdatasync every write before acknowledging it (default true); without it writes survive process crashes only. */
  readonly fsync?: boolean;
  /** Receives exceptions thrown by watch handlers (default: a process warning). */
  readonly onWatchError?: (error: unknown, event: WatchEvent) => void;
}

interface ResolvedOptions {
  readonly watchHistory: number;
  readonly compactionIntervalMs: number;
  readonly fsync: boolean;
  readonly onWatchError: ((error: unknown, event: WatchEvent) => void) | undefined;
}

const FORMAT = 1;
const META_ID = 'meta';
const DEFAULT_WATCH_HISTORY = 10_000;
const DEFAULT_COMPACTION_INTERVAL_MS = 5 * 60_000;
const MAX_TTL_SECONDS = 9_000_000_000;
/** nedb's reader splits lines on all of these; JSON.stringify escapes all but the last three. */
const NEDB_LINE_BREAKS = /[\n\v\f\r\u0085\u2028\u2029]/;
const RAW_SEPARATORS = /[\u0085\u2028\u2029]/g;

type EntryDoc = {
  _id: string;
  t: 'e';
  key: string;
  value: string;
  cr: number;
  mr: number;
  ver: number;
  lease?: string;
};
type TombstoneDoc = {
  _id: string;
  t: 'x';
  rev: number;
};
type LeaseDoc = {
  _id: string;
  t: 'l';
  id: string;
  ttl: number;
  /** Expiry, epoch milliseconds. */
  exp: number;
  revoked?: boolean;
};
type MetaDoc = {
  _id: typeof META_ID;
  t: 'm';
  format: number;
  rev: number;
};

interface LeaseState {
  readonly id: LeaseId;
  readonly ttl: number;
  exp: number;
  revoked: boolean;
  readonly keys: Set<string>;
}

type Nedb = Datastore<{ _id: string }>;
interface NedbOriginal {
  compactDatafileAsync(): Promise<void>;
}

const entryId = (key: string): string => `e:${key}`;
const leaseDocId = (id: LeaseId): string => `l:${id}`;

export class FileStateStore implements StateStore {
  readonly description: string;

  private readonly entries = new Map<string, StoredEntry>();
  private readonly leases = new Map<LeaseId, LeaseState>();
  /** Keys whose document in nedb is a tombstone (purged at compaction). */
  private readonly tombstoned = new Set<string>();
  /** Keys found at load attached to a lease that no longer exists; deleted by `recover`. */
  private orphans: string[] = [];
  private readonly history: WatchEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private rev = 0;
  /** Highest revision whose events are no longer (completely) in `history`. */
  private compactedRevision = 0;
  private linesSinceCompaction = 0;
  private mutexTail: Promise<unknown> = Promise.resolve();
  private state: 'open' | 'closing' | 'closed' = 'open';
  private broken: BerthError | undefined;
  private closing: Promise<void> | undefined;
  private leaseTimer: NodeJS.Timeout | undefined;
  private compactionTimer: NodeJS.Timeout | undefined;
  private compactionQueued = false;

  private constructor(
    readonly path: string,
    private readonly db: Nedb,
    private readonly lock: FileLock,
    private readonly options: ResolvedOptions,
  ) {
    this.description = `file ${path}`;
  }

  static async open(path: string, options: FileStateStoreOptions = {}): Promise<FileStateStore> {
    const file = resolve(path);
    const resolved: ResolvedOptions = {
      watchHistory: options.watchHistory ?? DEFAULT_WATCH_HISTORY,
      compactionIntervalMs: options.compactionIntervalMs ?? DEFAULT_COMPACTION_INTERVAL_MS,
      fsync: options.fsync ?? true,
      onWatchError: options.onWatchError,
    };
    if (!Number.isInteger(resolved.watchHistory) || resolved.watchHistory < 0) {
      throw new BerthError('ERR_INVALID_CONFIG', `watch history must be a non-negative integer, got ${resolved.watchHistory}`);
    }
    if (!Number.isInteger(resolved.compactionIntervalMs) || resolved.compactionIntervalMs < 0) {
      throw new BerthError('ERR_INVALID_CONFIG', `compaction interval must be a non-negative integer, got ${resolved.compactionIntervalMs}`);
    }
    if (file.endsWith('~')) throw new BerthError('ERR_INVALID_CONFIG', `state file ${file} must not end with "~" (reserved for compaction)`);
    try {
      await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    } catch (error) {
      throw translateError(error, 'ERR_STATE_UNAVAILABLE', `cannot create the directory of state file ${file}`);
    }

    const lock = await FileLock.acquire(file);
    try {
      await prepareDataFile(file);
      const nedbOptions = {
        filename: file,
        corruptAlertThreshold: 0,
        afterSerialization: escapeRawSeparators,
        beforeDeserialization: (line: string) => line,
        modes: { fileMode: 0o600, dirMode: 0o700 },
      };
      const db: Nedb = Datastore.create(nedbOptions);
      let docs: unknown[];
      try {
        await db.load();
        docs = await db.find({});
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code === undefined ? 'ERR_STATE_CORRUPT' : 'ERR_STATE_UNAVAILABLE';
        throw translateError(error, code, `cannot load state file ${file}`);
      }
      const store = new FileStateStore(file, db, lock, resolved);
      store.loadDocuments(docs);
      await store.exclusive(() => store.recover());
      store.startTimers();
      return store;
    } catch (error) {
      await lock.release().catch(() => undefined);
      throw error;
    }
  }

  async get(key: string): Promise<StoredEntry | undefined> {
    this.assertOpen();
    validateKey(key);
    return this.entries.get(key);
  }

  async list(prefix: string): Promise<ListResult> {
    this.assertOpen();
    if (typeof prefix !== 'string') throw new BerthError('ERR_INVALID_REQUEST', 'state key prefix must be a string');
    const entries: StoredEntry[] = [];
    for (const [key, entry] of this.entries) if (key.startsWith(prefix)) entries.push(entry);
    entries.sort((a, b) => compareKeys(a.key, b.key));
    return { entries, revision: this.rev };
  }

  async revision(): Promise<number> {
    this.assertOpen();
    return this.rev;
  }

  async put(key: string, value: string, options: PutOptions = {}): Promise<number> {
    this.assertOpen();
    validateKey(key);
    if (typeof value !== 'string') throw new BerthError('ERR_INVALID_REQUEST', `value of state key ${key} must be a string`);
    validateExpectedRevision(options.expectRevision);
    const leaseId = options.lease;
    if (leaseId !== undefined && (typeof leaseId !== 'string' || leaseId === '')) {
      throw new BerthError('ERR_INVALID_REQUEST', 'lease id must be a non-empty string');
    }
    return this.exclusive(async () => {
      this.assertWritable();
      await this.expireLeasesLocked();
      const current = this.entries.get(key);
      checkExpected(key, current, options.expectRevision);
      // CAS first, as in an etcd transaction: a failed compare never reports the lease.
      const lease = leaseId === undefined ? undefined : this.leases.get(leaseId);
      if (leaseId !== undefined && (lease === undefined || lease.revoked)) throw leaseNotFound(leaseId);

      const revision = this.rev + 1;
      const entry: StoredEntry = Object.freeze({
        key,
        value,
        createRevision: current?.createRevision ?? revision,
        modRevision: revision,
        version: (current?.version ?? 0) + 1,
        ...(leaseId === undefined ? {} : { lease: leaseId }),
      });
      const doc: EntryDoc = { _id: entryId(key), t: 'e', key, value, cr: entry.createRevision, mr: revision, ver: entry.version };
      if (leaseId !== undefined) doc.lease = leaseId;
      await this.write(() => this.db.update({ _id: doc._id }, doc, { upsert: true }), 1);
      await this.sync();

      this.rev = revision;
      if (current?.lease !== undefined) this.leases.get(current.lease)?.keys.delete(key);
      lease?.keys.add(key);
      this.entries.set(key, entry);
      this.tombstoned.delete(key);
      this.publish([Object.freeze({ type: 'put', entry, revision })]);
      this.afterWrite();
      return revision;
    });
  }

  async delete(key: string, options: DeleteOptions = {}): Promise<boolean> {
    this.assertOpen();
    validateKey(key);
    validateExpectedRevision(options.expectRevision);
    return this.exclusive(async () => {
      this.assertWritable();
      await this.expireLeasesLocked();
      const current = this.entries.get(key);
      checkExpected(key, current, options.expectRevision);
      if (current === undefined) return false;

      const revision = this.rev + 1;
      const tombstone: Omit<TombstoneDoc, '_id'> = { t: 'x', rev: revision };
      await this.write(() => this.db.update({ _id: entryId(key) }, tombstone, {}), 1);
      await this.sync();

      this.rev = revision;
      this.removeFromMemory(current);
      this.publish([Object.freeze({ type: 'delete', key, revision })]);
      this.afterWrite();
      return true;
    });
  }

  async watch(prefix: string, handler: WatchHandler, options: WatchOptions = {}): Promise<Watch> {
    this.assertOpen();
    if (typeof prefix !== 'string') throw new BerthError('ERR_INVALID_REQUEST', 'watch prefix must be a string');
    if (typeof handler !== 'function') throw new BerthError('ERR_INVALID_REQUEST', 'watch handler must be a function');
    const requested = options.fromRevision;
    if (requested !== undefined && (!Number.isInteger(requested) || requested < 0)) {
      throw new BerthError('ERR_INVALID_REQUEST', `watch revision must be a non-negative integer, got ${requested}`);
    }
    const from = requested === undefined || requested === 0 ? this.rev + 1 : requested;
    if (from <= this.compactedRevision) {
      throw new BerthError(
        'ERR_STATE_COMPACTED',
        `revision ${from} of ${this.description} is no longer in the watch history (oldest available: ${this.compactedRevision + 1})`,
        { details: { requested: from, oldest: this.compactedRevision + 1 } },
      );
    }
    // Replay and registration happen synchronously, so no event can fall between them.
    const watcher = new Watcher(prefix, from, handler, (error, event) => this.reportHandlerError(error, event));
    for (const event of this.history) watcher.offer(event);
    this.watchers.add(watcher);
    return {
      cancel: async () => {
        watcher.cancel();
        this.watchers.delete(watcher);
      },
    };
  }

  async grantLease(ttlSeconds: number): Promise<Lease> {
    this.assertOpen();
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_TTL_SECONDS) {
      throw new BerthError('ERR_INVALID_REQUEST', `lease ttl must be a whole number of seconds between 1 and ${MAX_TTL_SECONDS}, got ${ttlSeconds}`);
    }
    return this.exclusive(async () => {
      this.assertWritable();
      let id: LeaseId;
      do id = randomBytes(8).toString('hex');
      while (this.leases.has(id));
      const exp = Date.now() + ttlSeconds * 1000;
      const doc: LeaseDoc = { _id: leaseDocId(id), t: 'l', id, ttl: ttlSeconds, exp };
      await this.write(() => this.db.insert(doc), 1);
      await this.sync();
      this.leases.set(id, { id, ttl: ttlSeconds, exp, revoked: false, keys: new Set() });
      this.armLeaseTimer();
      this.afterWrite();
      const leaseId = id;
      return Object.freeze({
        id: leaseId,
        ttlSeconds,
        keepAlive: () => this.keepAliveLease(leaseId),
        revoke: () => this.revokeLease(leaseId),
      });
    });
  }

  close(): Promise<void> {
    if (this.closing === undefined) {
      this.state = 'closing';
      this.closing = this.shutDown();
    }
    return this.closing;
  }

  // ---- leases ----------------------------------------------------------------------------------

  private async keepAliveLease(id: LeaseId): Promise<void> {
    this.assertOpen();
    return this.exclusive(async () => {
      this.assertWritable();
      await this.expireLeasesLocked();
      const lease = this.leases.get(id);
      if (lease === undefined || lease.revoked) throw leaseNotFound(id);
      const exp = Date.now() + lease.ttl * 1000;
      await this.write(() => this.db.update({ _id: leaseDocId(id) }, { $set: { exp } }, {}), 1);
      await this.sync();
      lease.exp = exp;
      this.armLeaseTimer();
      this.afterWrite();
    });
  }

  private async revokeLease(id: LeaseId): Promise<void> {
    this.assertOpen();
    return this.exclusive(async () => {
      this.assertWritable();
      const lease = this.leases.get(id);
      if (lease !== undefined) await this.revokeLocked(lease);
    });
  }

  private async expireLeasesLocked(): Promise<void> {
    const now = Date.now();
    for (const lease of [...this.leases.values()]) {
      if (lease.revoked || lease.exp <= now) await this.revokeLocked(lease);
    }
  }

  /** Deletes the lease's keys at one revision, then the lease; resumable at open if interrupted. */
  private async revokeLocked(lease: LeaseState): Promise<void> {
    const keys = [...lease.keys].sort(compareKeys);
    if (keys.length > 0) {
      if (!lease.revoked) {
        await this.write(() => this.db.update({ _id: leaseDocId(lease.id) }, { $set: { revoked: true } }, {}), 1);
        await this.sync();
        lease.revoked = true;
      }
      const revision = this.rev + 1;
      const tombstone: Omit<TombstoneDoc, '_id'> = { t: 'x', rev: revision };
      await this.write(() => this.db.update({ _id: { $in: keys.map(entryId) } }, tombstone, { multi: true }), keys.length);
      await this.write(() => this.db.remove({ _id: leaseDocId(lease.id) }, {}), 1);
      await this.sync();
      this.rev = revision;
      for (const key of keys) {
        const entry = this.entries.get(key);
        if (entry !== undefined) this.removeFromMemory(entry);
      }
      this.leases.delete(lease.id);
      this.publish(keys.map((key) => Object.freeze({ type: 'delete' as const, key, revision })));
    } else {
      await this.write(() => this.db.remove({ _id: leaseDocId(lease.id) }, {}), 1);
      await this.sync();
      this.leases.delete(lease.id);
    }
    this.armLeaseTimer();
    this.afterWrite();
  }

  private armLeaseTimer(): void {
    if (this.leaseTimer !== undefined) clearTimeout(this.leaseTimer);
    this.leaseTimer = undefined;
    if (this.state !== 'open' || this.leases.size === 0) return;
    let next = Infinity;
    for (const lease of this.leases.values()) next = Math.min(next, lease.exp);
    // Timers cap at ~24.8 days; a longer wait simply re-arms.
    const delay = Math.min(Math.max(0, next - Date.now()) + 5, 2 ** 31 - 1);
    this.leaseTimer = setTimeout(() => {
      this.leaseTimer = undefined;
      this.exclusive(async () => {
        if (this.state !== 'open' || this.broken !== undefined) return;
        await this.expireLeasesLocked();
        this.armLeaseTimer();
      }).catch(() => undefined); // a failed write marks the store broken; callers see that error
    }, delay);
    this.leaseTimer.unref();
  }

  // ---- load and recovery -----------------------------------------------------------------------

  private loadDocuments(docs: unknown[]): void {
    const corrupt = (id: unknown, reason: string): BerthError =>
      new BerthError('ERR_STATE_CORRUPT', `state file ${this.path} holds an invalid document ${JSON.stringify(id)}: ${reason}`, {
        details: { path: this.path },
      });
    const leaseOf = new Map<string, string>();
    for (const raw of docs) {
      const doc = raw as Record<string, unknown>;
      const id = doc['_id'];
      switch (doc['t']) {
        case 'm': {
          if (id !== META_ID || !isRevision(doc['rev'])) throw corrupt(id, 'bad meta document');
          if (doc['format'] !== FORMAT) throw corrupt(id, `unsupported format ${String(doc['format'])} (this version reads ${FORMAT})`);
          this.rev = Math.max(this.rev, doc['rev']);
          break;
        }
        case 'e': {
          const { key, value, cr, mr, ver, lease } = doc;
          if (typeof key !== 'string' || key === '' || id !== entryId(key)) throw corrupt(id, 'bad key');
          if (typeof value !== 'string') throw corrupt(id, 'bad value');
          if (!isRevision(cr) || !isRevision(mr) || cr < 1 || cr > mr) throw corrupt(id, 'bad revisions');
          if (!Number.isInteger(ver) || (ver as number) < 1) throw corrupt(id, 'bad version');
          if (lease !== undefined && (typeof lease !== 'string' || lease === '')) throw corrupt(id, 'bad lease');
          this.entries.set(
            key,
            Object.freeze({ key, value, createRevision: cr, modRevision: mr, version: ver as number, ...(lease === undefined ? {} : { lease }) }),
          );
          if (lease !== undefined) leaseOf.set(key, lease);
          this.rev = Math.max(this.rev, mr);
          break;
        }
        case 'x': {
          if (typeof id !== 'string' || !id.startsWith('e:') || !isRevision(doc['rev'])) throw corrupt(id, 'bad tombstone');
          this.tombstoned.add(id.slice(2));
          this.rev = Math.max(this.rev, doc['rev']);
          break;
        }
        case 'l': {
          const { id: leaseId, ttl, exp, revoked } = doc;
          if (typeof leaseId !== 'string' || leaseId === '' || id !== leaseDocId(leaseId)) throw corrupt(id, 'bad lease id');
          if (!Number.isInteger(ttl) || (ttl as number) < 1 || typeof exp !== 'number' || !Number.isFinite(exp)) throw corrupt(id, 'bad lease ttl');
          if (revoked !== undefined && typeof revoked !== 'boolean') throw corrupt(id, 'bad lease state');
          this.leases.set(leaseId, { id: leaseId, ttl: ttl as number, exp, revoked: revoked === true, keys: new Set() });
          break;
        }
        default:
          throw corrupt(id, `unknown document type ${JSON.stringify(doc['t'])}`);
      }
    }
    for (const [key, leaseId] of leaseOf) this.leases.get(leaseId)?.keys.add(key);
    this.orphans = [...leaseOf].filter(([, leaseId]) => !this.leases.has(leaseId)).map(([key]) => key);
  }

  /** Finishes what a previous process left: expired or half-revoked leases, keys of vanished leases. */
  private async recover(): Promise<void> {
    const now = Date.now();
    for (const lease of this.leases.values()) {
      // A lease cannot outlive its TTL from now, even if the clock went backwards.
      lease.exp = Math.min(lease.exp, now + lease.ttl * 1000);
    }
    await this.expireLeasesLocked();
    if (this.orphans.length > 0) {
      const keys = this.orphans.sort(compareKeys);
      const revision = this.rev + 1;
      await this.write(() => this.db.update({ _id: { $in: keys.map(entryId) } }, { t: 'x', rev: revision }, { multi: true }), keys.length);
      await this.sync();
      this.rev = revision;
      for (const key of keys) {
        const entry = this.entries.get(key);
        if (entry !== undefined) this.removeFromMemory(entry);
      }
      this.orphans = [];
    }
    if (this.tombstoned.size > 0) await this.compactLocked();
    this.compactedRevision = this.rev;
    this.armLeaseTimer();
  }

  // ---- compaction and shutdown ---------------------------------------------------------------

  private startTimers(): void {
    if (this.options.compactionIntervalMs > 0) {
      this.compactionTimer = setInterval(() => {
        if (this.linesSinceCompaction > 0) this.queueCompaction();
      }, this.options.compactionIntervalMs);
      this.compactionTimer.unref();
    }
  }

  private afterWrite(): void {
    const live = this.entries.size + this.leases.size + this.tombstoned.size;
    if (this.linesSinceCompaction > Math.max(1000, 2 * live)) this.queueCompaction();
  }

  private queueCompaction(): void {
    if (this.compactionQueued) return;
    this.compactionQueued = true;
    this.exclusive(async () => {
      this.compactionQueued = false;
      if (this.state !== 'open' || this.broken !== undefined) return;
      await this.compactLocked();
    }).catch(() => undefined); // a failed write marks the store broken; callers see that error
  }

  private async compactLocked(): Promise<void> {
    // The meta document carries the format and the revision, which must survive the tombstones carrying it.
    const meta: MetaDoc = { _id: META_ID, t: 'm', format: FORMAT, rev: this.rev };
    await this.write(() => this.db.update({ _id: META_ID }, meta, { upsert: true }), 1);
    if (this.tombstoned.size > 0) {
      await this.sync();
      const ids = [...this.tombstoned].map(entryId);
      await this.write(() => this.db.remove({ _id: { $in: ids } }, { multi: true }), ids.length);
      this.tombstoned.clear();
    }
    const original = (this.db as unknown as { __original?: NedbOriginal }).__original;
    if (original === undefined) throw new BerthError('ERR_INTERNAL', 'nedb-promises no longer exposes the datastore to compact');
    await this.write(() => original.compactDatafileAsync(), 0);
    this.linesSinceCompaction = 0;
  }

  private async shutDown(): Promise<void> {
    if (this.compactionTimer !== undefined) clearInterval(this.compactionTimer);
    if (this.leaseTimer !== undefined) clearTimeout(this.leaseTimer);
    this.compactionTimer = undefined;
    this.leaseTimer = undefined;
    for (const watcher of this.watchers) watcher.cancel();
    this.watchers.clear();
    let failure: unknown;
    try {
      await this.exclusive(async () => {
        if (this.broken === undefined && (this.linesSinceCompaction > 0 || this.tombstoned.size > 0)) await this.compactLocked();
      });
    } catch (error) {
      failure = error;
    }
    this.state = 'closed';
    if (this.leaseTimer !== undefined) clearTimeout(this.leaseTimer);
    try {
      await this.lock.release();
    } catch (error) {
      failure ??= translateError(error, 'ERR_STATE_UNAVAILABLE', `cannot release lock of state file ${this.path}`);
    }
    if (failure !== undefined) throw failure;
  }

  // ---- plumbing -----------------------------------------------------------------------------------

  /** Serializes every mutation: compare-and-swap and the revision counter rely on it. */
  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const result = this.mutexTail.then(task);
    this.mutexTail = result.catch(() => undefined);
    return result;
  }

  private assertOpen(): void {
    if (this.state !== 'open') throw new BerthError('ERR_STATE_UNAVAILABLE', `state store ${this.path} is closed`);
  }

  private assertWritable(): void {
    if (this.broken !== undefined) throw this.broken;
  }

  private async write<T>(operation: () => Promise<T>, lines: number): Promise<T> {
    try {
      const result = await operation();
      this.linesSinceCompaction += lines;
      return result;
    } catch (error) {
      this.broken = translateError(error, 'ERR_STATE_UNAVAILABLE', `write to state file ${this.path} failed; reopen the store to recover`);
      throw this.broken;
    }
  }

  private async sync(): Promise<void> {
    if (!this.options.fsync) return;
    try {
      const handle = await open(this.path, 'r+');
      try {
        await handle.datasync();
      } finally {
        await handle.close();
      }
    } catch (error) {
      this.broken = translateError(error, 'ERR_STATE_UNAVAILABLE', `sync of state file ${this.path} failed; reopen the store to recover`);
      throw this.broken;
    }
  }

  private removeFromMemory(entry: StoredEntry): void {
    this.entries.delete(entry.key);
    if (entry.lease !== undefined) this.leases.get(entry.lease)?.keys.delete(entry.key);
    this.tombstoned.add(entry.key);
  }

  private publish(events: WatchEvent[]): void {
    this.history.push(...events);
    const limit = this.options.watchHistory;
    // Trim in batches so that a full history does not cost a copy per write.
    if (this.history.length > limit + Math.max(1, Math.floor(limit / 10))) {
      const drop = this.history.length - limit;
      const last = this.history[drop - 1];
      if (last !== undefined) this.compactedRevision = Math.max(this.compactedRevision, last.revision);
      this.history.splice(0, drop);
    }
    for (const watcher of this.watchers) for (const event of events) watcher.offer(event);
  }

  private reportHandlerError(error: unknown, event: WatchEvent): void {
    try {
      if (this.options.onWatchError !== undefined) {
        this.options.onWatchError(error, event);
      } else {
        const key = event.type === 'put' ? event.entry.key : event.key;
        process.emitWarning(`watch handler failed on ${key} at revision ${event.revision}: ${errorMessage(error)}`, {
          type: 'BerthWatchWarning',
        });
      }
    } catch {
      // Reporting must never break delivery.
    }
  }
}

/** One watch: an ordered queue drained in a microtask, so a handler never runs in the middle of a write and may call the store. */
class Watcher {
  private queue: WatchEvent[] = [];
  private scheduled = false;
  private cancelled = false;

  constructor(
    private readonly prefix: string,
    private readonly fromRevision: number,
    private readonly handler: WatchHandler,
    private readonly onError: (error: unknown, event: WatchEvent) => void,
  ) {}

  offer(event: WatchEvent): void {
    if (this.cancelled || event.revision < this.fromRevision) return;
    const key = event.type === 'put' ? event.entry.key : event.key;
    if (!key.startsWith(this.prefix)) return;
    this.queue.push(event);
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => this.drain());
    }
  }

  cancel(): void {
    this.cancelled = true;
    this.queue = [];
  }

  private drain(): void {
    const queue = this.queue;
    this.queue = [];
    this.scheduled = false;
    for (const event of queue) {
      if (this.cancelled) return;
      try {
        const outcome: unknown = this.handler(event);
        if (isPromiseLike(outcome)) outcome.then(undefined, (error: unknown) => this.onError(error, event));
      } catch (error) {
        this.onError(error, event);
      }
    }
  }
}

/** Owner lock of a data file: `<file>.lock`, created atomically (hard link of a complete temp file). */
class FileLock {
  private constructor(
    private readonly lockPath: string,
    private readonly token: string,
  ) {}

  static async acquire(file: string): Promise<FileLock> {
    const lockPath = `${file}.lock`;
    const token = randomBytes(8).toString('hex');
    const record: LockRecord = {
      pid: process.pid,
      startTime: await processStartTime(process.pid),
      token,
      hostname: hostname(),
      since: new Date().toISOString(),
    };
    const temp = `${lockPath}.${process.pid}.${token}`;
    try {
      await writeFile(temp, `${JSON.stringify(record)}\n`, { mode: 0o600, flush: true });
    } catch (error) {
      throw translateError(error, 'ERR_STATE_UNAVAILABLE', `cannot create lock file ${lockPath}`);
    }
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        if (await createExclusive(temp, lockPath, record)) return new FileLock(lockPath, token);
        const existing = await readLock(lockPath);
        if (existing === 'missing') continue;
        if (existing !== 'unreadable' && (await isAlive(existing))) {
          const who = existing.pid === process.pid ? `this process (${existing.pid})` : `process ${existing.pid}`;
          throw new BerthError('ERR_STATE_UNAVAILABLE', `state file ${file} is in use by ${who}; lock file ${lockPath}`, {
            details: { path: file, lockPath, pid: existing.pid },
          });
        }
        // The owner is gone: take the lock over, unless it changed while we looked.
        const again = await readLock(lockPath);
        if (again !== 'missing' && sameLock(existing, again)) await unlink(lockPath).catch(ignoreMissing);
      }
      throw new BerthError('ERR_STATE_UNAVAILABLE', `cannot lock state file ${file}: lock file ${lockPath} keeps changing`);
    } finally {
      await unlink(temp).catch(() => undefined);
    }
  }

  async release(): Promise<void> {
    const current = await readLock(this.lockPath);
    if (current !== 'missing' && current !== 'unreadable' && current.token === this.token) {
      await unlink(this.lockPath).catch(ignoreMissing);
    }
  }
}

interface LockRecord {
  pid: number;
  startTime: string | undefined;
  token: string;
  hostname: string;
  since: string;
}

async function createExclusive(temp: string, lockPath: string, record: LockRecord): Promise<boolean> {
  try {
    await link(temp, lockPath);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') {
      throw translateError(error, 'ERR_STATE_UNAVAILABLE', `cannot create lock file ${lockPath}`);
    }
  }
  // Filesystems without hard links: exclusive create, then write.
  try {
    await writeFile(lockPath, `${JSON.stringify(record)}\n`, { flag: 'wx', mode: 0o600, flush: true });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw translateError(error, 'ERR_STATE_UNAVAILABLE', `cannot create lock file ${lockPath}`);
  }
}

async function readLock(lockPath: string): Promise<LockRecord | 'missing' | 'unreadable'> {
  let text: string;
  try {
    text = await readFile(lockPath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw translateError(error, 'ERR_STATE_UNAVAILABLE', `cannot read lock file ${lockPath}`);
  }
  try {
    const parsed = JSON.parse(text) as Partial<LockRecord>;
    if (!Number.isInteger(parsed.pid) || (parsed.pid as number) <= 0 || typeof parsed.token !== 'string') return 'unreadable';
    return {
      pid: parsed.pid as number,
      startTime: typeof parsed.startTime === 'string' ? parsed.startTime : undefined,
      token: parsed.token,
      hostname: typeof parsed.hostname === 'string' ? parsed.hostname : '',
      since: typeof parsed.since === 'string' ? parsed.since : '',
    };
  } catch {
    return 'unreadable';
  }
}

function sameLock(a: LockRecord | 'unreadable', b: LockRecord | 'unreadable'): boolean {
  return a === 'unreadable' ? b === 'unreadable' : b !== 'unreadable' && a.token === b.token;
}

async function isAlive(record: LockRecord): Promise<boolean> {
  try {
    process.kill(record.pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  // The pid exists; it is the owner only if it is the same process (pids are reused).
  if (record.startTime === undefined) return true;
  const startTime = await processStartTime(record.pid);
  return startTime === undefined || startTime === record.startTime;
}

/** Start time of a process in clock ticks since boot (Linux), to tell a reused pid from the owner. */
async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function ignoreMissing(error: unknown): void {
  if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
}

/**
 * Checks the data file before nedb reads it (nedb would silently skip unreadable lines): a torn last line is
 * dropped, anything else unreadable is corruption.
 */
async function prepareDataFile(file: string): Promise<void> {
  let content: Buffer;
  try {
    content = await readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw translateError(error, 'ERR_STATE_UNAVAILABLE', `cannot read state file ${file}`);
    // A compaction that renamed nothing yet leaves only the temp file; nedb would adopt it, so check it too.
    try {
      await rename(`${file}~`, file);
    } catch (renameError) {
      if ((renameError as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw translateError(renameError, 'ERR_STATE_UNAVAILABLE', `cannot restore state file ${file}`);
    }
    return prepareDataFile(file);
  }
  const corrupt = (line: number, reason: string): BerthError =>
    new BerthError('ERR_STATE_CORRUPT', `state file ${file} is corrupt at line ${line}: ${reason}; restore it from a backup or move it aside`, {
      details: { path: file, line },
    });
  const end = content.lastIndexOf(0x0a);
  const body = content.subarray(0, end + 1);
  const tail = content.subarray(end + 1);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw corrupt(0, 'invalid UTF-8');
  }
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index] ?? '';
    if (line === '') continue;
    const reason = checkLine(line);
    if (reason !== undefined) throw corrupt(index + 1, reason);
  }
  if (tail.length > 0) {
    let complete: boolean;
    try {
      complete = checkLine(new TextDecoder('utf-8', { fatal: true }).decode(tail)) === undefined;
    } catch {
      complete = false; // a multi-byte character cut in half
    }
    try {
      // A complete record that only lacks its newline is kept; a torn one was never acknowledged.
      if (complete) await appendFile(file, '\n');
      else await truncate(file, body.length);
    } catch (error) {
      throw translateError(error, 'ERR_STATE_UNAVAILABLE', `cannot repair the torn end of state file ${file}`);
    }
  }
}

function checkLine(line: string): string | undefined {
  if (NEDB_LINE_BREAKS.test(line)) return 'unescaped line separator';
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return 'not a JSON document';
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return 'not a JSON object';
  const record = parsed as Record<string, unknown>;
  if (typeof record['_id'] !== 'string' && !('$$indexCreated' in record) && !('$$indexRemoved' in record)) return 'document without _id';
  return undefined;
}

function escapeRawSeparators(line: string): string {
  return line.replace(RAW_SEPARATORS, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Orders keys by Unicode code point, which is the byte order of their UTF-8 form (etcd's order). */
function compareKeys(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let index = 0; index < length; index++) {
    const x = a.charCodeAt(index);
    const y = b.charCodeAt(index);
    if (x !== y) return codeUnitRank(x) - codeUnitRank(y);
  }
  return a.length - b.length;
}

/** Surrogates encode code points above U+FFFF, so they sort after every other code unit. */
function codeUnitRank(unit: number): number {
  return unit >= 0xd800 && unit <= 0xdfff ? unit + 0x10000 : unit;
}

function validateKey(key: string): void {
  if (typeof key !== 'string' || key === '') throw new BerthError('ERR_INVALID_REQUEST', 'state key must be a non-empty string');
}

function validateExpectedRevision(expected: number | undefined): void {
  if (expected !== undefined && (!Number.isInteger(expected) || expected < 0)) {
    throw new BerthError('ERR_INVALID_REQUEST', `expected revision must be a non-negative integer, got ${expected}`);
  }
}

function checkExpected(key: string, current: StoredEntry | undefined, expected: number | undefined): void {
  if (expected === undefined) return;
  const actual = current?.modRevision ?? 0;
  if (actual === expected) return;
  const message =
    expected === 0
      ? `state key ${key} already exists at revision ${actual}`
      : actual === 0
        ? `state key ${key} does not exist, expected revision ${expected}`
        : `state key ${key} is at revision ${actual}, expected ${expected}`;
  throw new BerthError('ERR_STATE_CONFLICT', message, { details: { key, expected, actual } });
}

function leaseNotFound(id: LeaseId): BerthError {
  return new BerthError('ERR_LEASE_NOT_FOUND', `lease ${id} not found or expired`, { details: { lease: id } });
}

function isRevision(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 0;
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}
