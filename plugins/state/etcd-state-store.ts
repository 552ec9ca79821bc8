/**
 * EtcdStateStore: the many-host StateStore, a thin mapping onto etcd v3 (etcd3 npm client over grpc-js).
 *
 * Design notes:
 * - Revisions are etcd's: an entry's createRevision/modRevision/version are the key's, the store revision is the
 *   header revision of a linearizable read. They are cluster-wide, so writes outside this store's prefix bump them
 *   too (monotonic, not dense). A failed compare, a delete of a missing key and a read change nothing.
 * - Compare-and-swap is one transaction comparing mod_revision (create_revision == 0 for "must not exist"); etcd
 *   evaluates the compare before it checks the lease, so a conflict is reported first. Its failure branch reads
 *   the key, so the conflict names the actual revision without a second round trip.
 * - Lease ids are etcd's lease ids in hexadecimal (as `etcdctl lease list` prints them). etcd raises short TTLs to
 *   its minimum (2 s with default timings); the granted TTL is what `Lease.ttlSeconds` reports. A revoke or expiry
 *   deletes the keys in one transaction, at one revision.
 * - Fail fast: every unary call has a deadline (requestTimeoutMs) and nothing that may have reached a server is
 *   retried; only a request or stream that found no connection is tried on the next endpoint. With several
 *   endpoints, one that just failed to connect or answer is skipped for a few seconds while another is healthy; with
 *   one, every call goes straight to it, so a recovered etcd is used at once. After a connection error the client
 *   opens fresh channels (local subchannel pool, short reconnect backoff). Every etcd/grpc error is translated once,
 *   here, into a BerthError naming the endpoints.
 * - Each watch is its own gRPC watch stream. It starts at an explicit revision (the current one + 1 when none is
 *   given), remembers the last revision it delivered (or that etcd reported as progress) and, when the stream
 *   breaks, re-creates it from the next revision with a capped backoff until cancelled. Losses are reported to
 *   `onWatchError`: an interruption (ERR_STATE_UNAVAILABLE, the watch keeps retrying) or a resume point that etcd
 *   compacted away meanwhile (ERR_STATE_COMPACTED, the watch stops: list and watch again).
 */
import {
  Etcd3,
  EtcdLeaseInvalidError,
  GRPCDeadlineExceededError,
  GRPCInvalidArgumentError,
  GRPCUnavailableError,
  castGrpcError,
  type ICompare,
  type IDuplexStream,
  type IEvent,
  type IKeyValue,
  type IOptions,
  type IResponseOp,
  type IWatchRequest,
  type IWatchResponse,
} from 'etcd3';
import { BerthError, errorMessage } from '../errors/berth-error.js';
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

export interface EtcdStateStoreOptions {
  /** Namespaces every key (default `berth/`); several clusters of agents can share one etcd with different prefixes. */
  readonly prefix?: string;
  /** How long `open` waits for a first answer from etcd (default 5 s). */
  readonly dialTimeoutMs?: number;
  /** Deadline of every request (default 5 s); a request without an answer by then fails with ERR_STATE_UNAVAILABLE. */
  readonly requestTimeoutMs?: number;
  /**
   * Receives exceptions thrown by watch handlers (with the event), and watch stream problems (without one):
   * ERR_STATE_UNAVAILABLE when a watch lost its stream (it keeps retrying), ERR_STATE_COMPACTED when it cannot resume
   * because etcd compacted the revisions it missed (it has stopped). Default: a process warning.
   */
  readonly onWatchError?: (error: unknown, event?: WatchEvent) => void;
}

const DEFAULT_PREFIX = 'berth/';
const DEFAULT_TIMEOUT_MS = 5_000;
/** etcd's own upper bound for a lease TTL. */
const MAX_TTL_SECONDS = 9_000_000_000;
const WATCH_RETRY_INITIAL_MS = 100;
const WATCH_RETRY_MAX_MS = 3_000;
/** How long an endpoint that failed is passed over while another one is healthy. */
const ENDPOINT_QUARANTINE_MS = 5_000;
/** Errors grpc-js raises before a request leaves the client: safe to send to another endpoint. */
const NOT_SENT = /No connection established|Name resolution failed/;
const LONE_SURROGATE = /\p{Cs}/u;
const LEASE_HEX = /^[0-9a-f]{1,16}$/;

type FaultHandling = NonNullable<IOptions['faultHandling']>;
type Policy = NonNullable<FaultHandling['global']>;
type PolicyFn<T> = (context: { signal: AbortSignal }) => PromiseLike<T> | T;
type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse>;

/** What a watch needs from its store. */
interface WatchContext {
  readonly description: string;
  readonly timeoutMs: number;
  /** How often to try to open a stream that found no connection (once per endpoint). */
  readonly attempts: number;
  isOpen(): boolean;
  openStream(): Promise<WatchStream>;
  toEvent(event: IEvent): WatchEvent;
  translate(error: unknown, action: string): BerthError;
  report(error: unknown, event?: WatchEvent): void;
  /** The watch stopped by itself. */
  forget(watch: EtcdWatch): void;
}

export class EtcdStateStore implements StateStore {
  readonly description: string;

  private readonly watches = new Set<EtcdWatch>();
  private state: 'open' | 'closed' = 'open';
  private readonly endpointList: string;
  private readonly watchContext: WatchContext;

  private constructor(
    private readonly client: Etcd3,
    readonly endpoints: readonly string[],
    readonly prefix: string,
    private readonly requestTimeoutMs: number,
    private readonly onWatchError: ((error: unknown, event?: WatchEvent) => void) | undefined,
  ) {
    this.endpointList = endpoints.join(',');
    this.description = `etcd ${this.endpointList} prefix ${JSON.stringify(prefix)}`;
    this.watchContext = {
      description: this.description,
      timeoutMs: requestTimeoutMs,
      isOpen: () => this.state === 'open',
      openStream: () => this.client.watchClient.watch(),
      attempts: endpoints.length,
      toEvent: (event) => this.toEvent(event),
      translate: (error, action) => this.translate(error, action),
      report: (error, event) => this.reportWatchError(error, event),
      forget: (watch) => this.watches.delete(watch),
    };
  }

  /** Connects and checks that etcd answers within `dialTimeoutMs`; fails with ERR_STATE_UNAVAILABLE otherwise. */
  static async open(endpoints: readonly string[], options: EtcdStateStoreOptions = {}): Promise<EtcdStateStore> {
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    if (typeof prefix !== 'string' || LONE_SURROGATE.test(prefix)) throw new BerthError('ERR_INVALID_CONFIG', 'etcd key prefix must be a valid string');
    const dialTimeoutMs = checkTimeout('dial timeout', options.dialTimeoutMs);
    const requestTimeoutMs = checkTimeout('request timeout', options.requestTimeoutMs);
    if (!Array.isArray(endpoints) || endpoints.length === 0) throw new BerthError('ERR_INVALID_CONFIG', 'etcd state store needs at least one endpoint');
    for (const endpoint of endpoints) {
      if (typeof endpoint !== 'string' || !/^(https?:\/\/)?[^\s/]+:\d{1,5}$/.test(endpoint)) {
        throw new BerthError('ERR_INVALID_CONFIG', `etcd endpoint ${JSON.stringify(endpoint)} must be HOST:PORT`);
      }
    }
    let client: Etcd3;
    try {
      client = new Etcd3({
        hosts: [...endpoints],
        grpcOptions: {
          // Fresh channels after a failure really reconnect (no shared subchannel still backing off).
          'grpc.use_local_subchannel_pool': 1,
          'grpc.initial_reconnect_backoff_ms': 200,
          'grpc.max_reconnect_backoff_ms': 2_000,
          // Detects a silently dead connection under a long-lived watch (etcd refuses pings more often than 5 s).
          'grpc.keepalive_time_ms': 10_000,
          'grpc.keepalive_timeout_ms': 5_000,
          'grpc.max_receive_message_length': -1,
        },
        defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + requestTimeoutMs }),
        faultHandling: faultHandling(endpoints),
      });
    } catch (error) {
      throw new BerthError('ERR_INVALID_CONFIG', `etcd endpoints ${endpoints.join(',')}: ${errorMessage(error)}`, { cause: error });
    }
    const store = new EtcdStateStore(client, Object.freeze([...endpoints]), prefix, requestTimeoutMs, options.onWatchError);
    try {
      await store.currentRevision({ deadline: Date.now() + dialTimeoutMs });
    } catch (error) {
      const translated = store.translate(error, 'the connection check', undefined, dialTimeoutMs);
      store.state = 'closed';
      client.close();
      throw translated;
    }
    return store;
  }

  async get(key: string): Promise<StoredEntry | undefined> {
    this.assertOpen();
    const etcdKey = this.keyBytes(key);
    try {
      const response = await this.client.kv.range({ key: etcdKey });
      const kv = response.kvs[0];
      return kv === undefined ? undefined : this.toEntry(kv);
    } catch (error) {
      throw this.translate(error, `get of state key ${key}`);
    }
  }

  async list(prefix: string): Promise<ListResult> {
    this.assertOpen();
    if (typeof prefix !== 'string' || LONE_SURROGATE.test(prefix)) throw new BerthError('ERR_INVALID_REQUEST', 'state key prefix must be a valid string');
    const [key, rangeEnd] = this.prefixRange(prefix);
    try {
      // One range at one revision: etcd returns the keys in byte order.
      const response = await this.client.kv.range({ key, range_end: rangeEnd });
      return { entries: response.kvs.map((kv) => this.toEntry(kv)), revision: toNumber(response.header.revision) };
    } catch (error) {
      throw this.translate(error, `list of state prefix ${prefix}`);
    }
  }

  async revision(): Promise<number> {
    this.assertOpen();
    try {
      return await this.currentRevision();
    } catch (error) {
      throw this.translate(error, 'read of the store revision');
    }
  }

  async put(key: string, value: string, options: PutOptions = {}): Promise<number> {
    this.assertOpen();
    const etcdKey = this.keyBytes(key);
    if (typeof value !== 'string' || LONE_SURROGATE.test(value)) {
      throw new BerthError('ERR_INVALID_REQUEST', `value of state key ${key} must be a string of valid Unicode`);
    }
    const expected = checkExpectedRevision(options.expectRevision);
    const leaseId = options.lease;
    if (leaseId !== undefined && (typeof leaseId !== 'string' || leaseId === '')) {
      throw new BerthError('ERR_INVALID_REQUEST', 'lease id must be a non-empty string');
    }
    const etcdLease = leaseId === undefined ? undefined : toEtcdLeaseId(leaseId);
    if (etcdLease === null) throw leaseNotFound(leaseId as string);
    const request = { key: etcdKey, value: Buffer.from(value, 'utf8'), ...(etcdLease === undefined ? {} : { lease: etcdLease }) };
    const action = `put of state key ${key}`;
    try {
      if (expected === undefined) return toNumber((await this.client.kv.put(request)).header.revision);
      const response = await this.client.kv.txn({
        compare: [compareRevision(etcdKey, expected)],
        success: [{ request_put: request }],
        failure: [{ request_range: { key: etcdKey } }],
      });
      if (!response.succeeded) throw conflict(key, expected, actualRevision(response.responses));
      return toNumber(response.header.revision);
    } catch (error) {
      throw this.translate(error, action, leaseId);
    }
  }

  async delete(key: string, options: DeleteOptions = {}): Promise<boolean> {
    this.assertOpen();
    const etcdKey = this.keyBytes(key);
    const expected = checkExpectedRevision(options.expectRevision);
    try {
      if (expected === undefined) return toNumber((await this.client.kv.deleteRange({ key: etcdKey })).deleted) > 0;
      // Expecting 0 ("must not exist") deletes nothing: the transaction only checks.
      const response = await this.client.kv.txn({
        compare: [compareRevision(etcdKey, expected)],
        success: expected === 0 ? [] : [{ request_delete_range: { key: etcdKey } }],
        failure: [{ request_range: { key: etcdKey } }],
      });
      if (!response.succeeded) throw conflict(key, expected, actualRevision(response.responses));
      return expected !== 0 && toNumber(response.responses[0]?.response_delete_range?.deleted ?? '0') > 0;
    } catch (error) {
      throw this.translate(error, `delete of state key ${key}`);
    }
  }

  async watch(prefix: string, handler: WatchHandler, options: WatchOptions = {}): Promise<Watch> {
    this.assertOpen();
    if (typeof prefix !== 'string' || LONE_SURROGATE.test(prefix)) throw new BerthError('ERR_INVALID_REQUEST', 'watch prefix must be a valid string');
    if (typeof handler !== 'function') throw new BerthError('ERR_INVALID_REQUEST', 'watch handler must be a function');
    const requested = options.fromRevision;
    if (requested !== undefined && (!Number.isInteger(requested) || requested < 0)) {
      throw new BerthError('ERR_INVALID_REQUEST', `watch revision must be a non-negative integer, got ${requested}`);
    }
    let from: number;
    try {
      if (requested === undefined || requested === 0) {
        from = (await this.currentRevision()) + 1;
      } else {
        from = requested;
        await this.checkNotCompacted(prefix, from);
      }
    } catch (error) {
      throw this.translate(error, `watch of state prefix ${prefix}`);
    }
    this.assertOpen();
    const [key, rangeEnd] = this.prefixRange(prefix);
    const watch = new EtcdWatch(this.watchContext, prefix, key, rangeEnd, from, handler);
    this.watches.add(watch);
    try {
      await watch.start();
    } catch (error) {
      this.watches.delete(watch);
      watch.cancel();
      throw this.translate(error, `watch of state prefix ${prefix}`);
    }
    return {
      cancel: async () => {
        watch.cancel();
        this.watches.delete(watch);
      },
    };
  }

  async grantLease(ttlSeconds: number): Promise<Lease> {
    this.assertOpen();
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_TTL_SECONDS) {
      throw new BerthError('ERR_INVALID_REQUEST', `lease ttl must be a whole number of seconds between 1 and ${MAX_TTL_SECONDS}, got ${ttlSeconds}`);
    }
    let granted: { ID: string; TTL: string; error: string };
    try {
      granted = await this.client.leaseClient.leaseGrant({ TTL: ttlSeconds });
    } catch (error) {
      throw this.translate(error, `grant of a ${ttlSeconds} s lease`);
    }
    if (granted.error !== '') throw new BerthError('ERR_STATE_UNAVAILABLE', `etcd ${this.endpointList} refused a ${ttlSeconds} s lease: ${granted.error}`);
    const id = BigInt(granted.ID).toString(16);
    const etcdId = granted.ID;
    return Object.freeze({
      id,
      ttlSeconds: toNumber(granted.TTL),
      keepAlive: () => this.keepAliveLease(id, etcdId),
      revoke: () => this.revokeLease(id, etcdId),
    });
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    for (const watch of this.watches) watch.cancel();
    this.watches.clear();
    this.client.close();
  }

  // ---- leases ----------------------------------------------------------------------------------

  private async keepAliveLease(id: LeaseId, etcdId: string): Promise<void> {
    this.assertOpen();
    let ttl: string;
    try {
      ttl = await retryUnsent(this.endpoints.length, () => this.keepAliveOnce(etcdId));
    } catch (error) {
      throw this.translate(error, `keep-alive of lease ${id}`, id);
    }
    // etcd answers a keep-alive of an expired or revoked lease with TTL 0.
    if (toNumber(ttl) <= 0) throw leaseNotFound(id);
  }

  /** One request on a keep-alive stream, then the stream is closed: the caller decides the cadence. */
  private async keepAliveOnce(etcdId: string): Promise<string> {
    const timeoutMs = this.requestTimeoutMs;
    const stream = await this.client.leaseClient.leaseKeepAlive({ deadline: Date.now() + timeoutMs });
    return new Promise<string>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        stream.cancel();
        reject(new BerthError('ERR_STATE_UNAVAILABLE', `etcd ${this.endpointList} did not answer a lease keep-alive within ${timeoutMs} ms`));
      }, timeoutMs);
      stream.on('data', (response) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        stream.end();
        resolve(response.TTL);
      });
      // Keep listening after settling: an unhandled stream error would crash the process.
      stream.on('error', (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(castGrpcError(error));
      });
      stream.write({ ID: etcdId });
    });
  }

  private async revokeLease(id: LeaseId, etcdId: string): Promise<void> {
    this.assertOpen();
    try {
      await this.client.leaseClient.leaseRevoke({ ID: etcdId });
    } catch (error) {
      const translated = this.translate(error, `revoke of lease ${id}`, id);
      if (translated.code !== 'ERR_LEASE_NOT_FOUND') throw translated; // already revoked or expired
    }
  }

  // ---- watch plumbing ----------------------------------------------------------------------------

  private toEvent(event: IEvent): WatchEvent {
    const revision = toNumber(event.kv.mod_revision);
    if (event.type === 'Delete') return Object.freeze({ type: 'delete', key: this.keyOf(event.kv.key), revision });
    return Object.freeze({ type: 'put', entry: this.toEntry(event.kv), revision });
  }

  private reportWatchError(error: unknown, event?: WatchEvent): void {
    try {
      if (this.onWatchError !== undefined) {
        this.onWatchError(error, event);
      } else if (event !== undefined) {
        const key = event.type === 'put' ? event.entry.key : event.key;
        process.emitWarning(`watch handler failed on ${key} at revision ${event.revision}: ${errorMessage(error)}`, { type: 'BerthWatchWarning' });
      } else {
        process.emitWarning(errorMessage(error), { type: 'BerthWatchWarning' });
      }
    } catch {
      // Reporting must never break delivery.
    }
  }

  /** Translates a foreign error once, naming the endpoints. */
  private translate(error: unknown, action: string, leaseId?: LeaseId, timeoutMs = this.requestTimeoutMs): BerthError {
    if (error instanceof BerthError) return error;
    if (this.state === 'closed') return this.closedError(error);
    const typed = error instanceof Error ? castGrpcError(error) : new Error(String(error));
    const reason = readableReason(errorMessage(typed));
    const details = { endpoints: this.endpoints };
    if (typed instanceof EtcdLeaseInvalidError || reason.includes('requested lease not found')) {
      return leaseNotFound(leaseId, error);
    }
    if (reason.includes('required revision has been compacted')) {
      return new BerthError('ERR_STATE_COMPACTED', `${action}: etcd ${this.endpointList} compacted the requested revision`, { cause: error, details });
    }
    if (typed instanceof GRPCInvalidArgumentError || /request is too large|too many operations|key is not provided/.test(reason)) {
      return new BerthError('ERR_INVALID_REQUEST', `etcd ${this.endpointList} refused the ${action}: ${reason}`, { cause: error, details });
    }
    const why = typed instanceof GRPCDeadlineExceededError ? `no answer within ${timeoutMs} ms` : reason;
    return new BerthError('ERR_STATE_UNAVAILABLE', `etcd ${this.endpointList} unavailable for ${action}: ${why}`, { cause: error, details });
  }

  // ---- helpers -----------------------------------------------------------------------------------

  private async currentRevision(options?: { deadline: number }): Promise<number> {
    // A count of one key (the prefix itself): a cheap linearizable read whose header carries the revision.
    const response = await this.client.kv.range({ key: this.prefixKeyOrZero(), count_only: true }, options);
    return toNumber(response.header.revision);
  }

  /** A watch from a compacted revision must fail now, not later inside the stream. */
  private async checkNotCompacted(prefix: string, from: number): Promise<void> {
    const current = await this.currentRevision();
    if (from > current) return;
    try {
      await this.client.kv.range({ key: this.prefixKeyOrZero(), count_only: true, revision: from });
    } catch (error) {
      const translated = this.translate(error, `watch of state prefix ${prefix}`);
      if (translated.code !== 'ERR_STATE_COMPACTED') throw translated;
      throw compactedError(prefix, from, this.description, error);
    }
  }

  private assertOpen(): void {
    if (this.state !== 'open') throw this.closedError();
  }

  private closedError(cause?: unknown): BerthError {
    return new BerthError('ERR_STATE_UNAVAILABLE', `state store ${this.description} is closed`, cause === undefined ? {} : { cause });
  }

  private keyBytes(key: string): Buffer {
    if (typeof key !== 'string' || key === '') throw new BerthError('ERR_INVALID_REQUEST', 'state key must be a non-empty string');
    if (LONE_SURROGATE.test(key)) throw new BerthError('ERR_INVALID_REQUEST', `state key ${JSON.stringify(key)} is not valid Unicode`);
    return Buffer.from(this.prefix + key, 'utf8');
  }

  private prefixKeyOrZero(): Buffer {
    return this.prefix === '' ? Buffer.from([0]) : Buffer.from(this.prefix, 'utf8');
  }

  /** [key, range_end) covering every key that starts with the store prefix plus `prefix`. */
  private prefixRange(prefix: string): [Buffer, Buffer] {
    const start = Buffer.from(this.prefix + prefix, 'utf8');
    if (start.length === 0) return [Buffer.from([0]), Buffer.from([0])];
    return [start, prefixEnd(start)];
  }

  private keyOf(etcdKey: Buffer): string {
    return etcdKey.toString('utf8').slice(this.prefix.length);
  }

  private toEntry(kv: IKeyValue): StoredEntry {
    const lease = kv.lease === '0' || kv.lease === '' ? undefined : BigInt(kv.lease).toString(16);
    return Object.freeze({
      key: this.keyOf(kv.key),
      value: kv.value.toString('utf8'),
      createRevision: toNumber(kv.create_revision),
      modRevision: toNumber(kv.mod_revision),
      version: toNumber(kv.version),
      ...(lease === undefined ? {} : { lease }),
    });
  }
}

/**
 * One watch on its own gRPC stream. Delivers in revision order through a queue drained in a microtask, so a handler
 * never runs inside stream processing and may call the store. Resumes after a broken stream from the next revision.
 */
class EtcdWatch {
  private stream: WatchStream | undefined;
  private cancelled = false;
  private queue: WatchEvent[] = [];
  private scheduled = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelayMs = WATCH_RETRY_INITIAL_MS;
  /** An interruption was reported and the watch has not been re-created since. */
  private interrupted = false;

  constructor(
    private readonly store: WatchContext,
    private readonly prefix: string,
    private readonly key: Buffer,
    private readonly rangeEnd: Buffer,
    /** First revision not yet delivered: where a new stream starts. */
    private nextRevision: number,
    private readonly handler: WatchHandler,
  ) {}

  /** Creates the stream; resolves once etcd confirmed the watch, rejects if it cannot. */
  start(): Promise<void> {
    return retryUnsent(this.store.attempts, () => this.connect());
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.queue = [];
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.stream?.cancel();
    this.stream = undefined;
  }

  private async connect(): Promise<void> {
    const stream = await this.store.openStream();
    if (this.cancelled) {
      stream.cancel();
      return;
    }
    this.stream = stream;
    const timeoutMs = this.store.timeoutMs;
    await new Promise<void>((resolve, reject) => {
      let confirmed = false;
      /** Before etcd confirmed the watch, a failure rejects `connect`; afterwards the watch resumes on its own. */
      const fail = (error: unknown): void => {
        clearTimeout(timer);
        if (this.stream === stream) this.stream = undefined;
        stream.cancel();
        if (confirmed) return this.lost(error);
        confirmed = true; // settles once
        reject(error);
      };
      const timer = setTimeout(() => {
        fail(new BerthError('ERR_STATE_UNAVAILABLE', `${this.store.description} did not confirm the watch of state prefix ${this.prefix} within ${timeoutMs} ms`));
      }, timeoutMs);
      stream.on('data', (response: IWatchResponse) => {
        if (this.cancelled || this.stream !== stream) return;
        if (response.canceled) {
          const oldest = toNumber(response.compact_revision);
          if (oldest === 0) {
            return fail(new BerthError('ERR_STATE_UNAVAILABLE', `${this.store.description} cancelled the watch of state prefix ${this.prefix}: ${response.cancel_reason || 'no reason given'}`));
          }
          // etcd confirms a watch before it finds its start revision compacted.
          const error = compactedError(this.prefix, this.nextRevision, this.store.description, undefined, oldest);
          if (!confirmed) return fail(error);
          return this.stop(error);
        }
        if (response.created) {
          if (confirmed) return;
          confirmed = true;
          clearTimeout(timer);
          this.retryDelayMs = WATCH_RETRY_INITIAL_MS;
          this.interrupted = false;
          resolve();
          return;
        }
        if (response.events.length === 0) {
          // Progress notification: nothing under the prefix changed up to this revision.
          this.nextRevision = Math.max(this.nextRevision, toNumber(response.header.revision) + 1);
          return;
        }
        for (const raw of response.events) {
          const event = this.store.toEvent(raw);
          if (event.revision >= this.nextRevision) this.offer(event);
        }
        // Every event of one revision arrives in one response (no fragmentation requested).
        this.nextRevision = Math.max(this.nextRevision, toNumber(response.events.at(-1)?.kv.mod_revision ?? 0) + 1);
      });
      stream.on('error', (error: Error) => {
        if (this.cancelled || this.stream !== stream) return;
        fail(castGrpcError(error));
      });
      stream.on('end', () => {
        if (this.cancelled || this.stream !== stream) return;
        fail(new BerthError('ERR_STATE_UNAVAILABLE', `${this.store.description} closed the watch stream of state prefix ${this.prefix}`));
      });
      stream.write({ create_request: { key: this.key, range_end: this.rangeEnd, start_revision: this.nextRevision, progress_notify: true } });
    });
  }

  /** The stream broke after it was established: report once, then retry with a capped backoff. */
  private lost(error: unknown): void {
    if (this.cancelled) return;
    if (!this.store.isOpen()) return this.cancel();
    if (!this.interrupted) {
      this.interrupted = true;
      const reason = this.store.translate(error, `watch of state prefix ${this.prefix}`);
      this.store.report(
        new BerthError('ERR_STATE_UNAVAILABLE', `watch of state prefix ${this.prefix} interrupted, resuming from revision ${this.nextRevision}: ${reason.message}`, {
          cause: reason,
          details: { prefix: this.prefix, nextRevision: this.nextRevision },
        }),
      );
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.cancelled || this.retryTimer !== undefined) return;
    const delay = this.retryDelayMs;
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, WATCH_RETRY_MAX_MS);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.cancelled) return;
      if (!this.store.isOpen()) return this.cancel();
      this.connect().catch((error: unknown) => {
        if (error instanceof BerthError && error.code === 'ERR_STATE_COMPACTED') return this.stop(error);
        this.lost(error);
      });
    }, delay);
    this.retryTimer.unref();
  }

  /** The watch cannot continue without losing events. */
  private stop(error: BerthError): void {
    if (this.cancelled) return;
    this.cancel();
    this.store.forget(this);
    this.store.report(error);
  }

  private offer(event: WatchEvent): void {
    this.queue.push(event);
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => this.drain());
    }
  }

  private drain(): void {
    const queue = this.queue;
    this.queue = [];
    this.scheduled = false;
    for (const event of queue) {
      if (this.cancelled) return;
      try {
        const outcome: unknown = this.handler(event);
        if (isPromiseLike(outcome)) outcome.then(undefined, (error: unknown) => this.store.report(error, event));
      } catch (error) {
        this.store.report(error, event);
      }
    }
  }
}

/**
 * Fault handling for the etcd3 pool. Per endpoint: a call goes through unless the endpoint failed to connect or answer
 * in the last few seconds and another endpoint did not (the pool then tries the next one). Globally: a request that
 * found no connection is tried on the next endpoint; nothing else is retried.
 */
function faultHandling(endpoints: readonly string[]): FaultHandling {
  const failedUntil = new Map<string, number>();
  const quarantined = (endpoint: string, now: number): boolean => (failedUntil.get(endpoint) ?? 0) > now;
  const host = (endpoint: string): Policy =>
    ({
      execute: async <T>(fn: PolicyFn<T>): Promise<T> => {
        const now = Date.now();
        if (quarantined(endpoint, now) && endpoints.some((other) => other !== endpoint && !quarantined(other, now))) {
          throw new Error(`etcd endpoint ${endpoint} failed less than ${ENDPOINT_QUARANTINE_MS} ms ago`);
        }
        try {
          const result = await fn({ signal: new AbortController().signal });
          failedUntil.delete(endpoint);
          return result;
        } catch (error) {
          if (error instanceof GRPCUnavailableError || error instanceof GRPCDeadlineExceededError) failedUntil.set(endpoint, Date.now() + ENDPOINT_QUARANTINE_MS);
          throw error;
        }
      },
    }) as unknown as Policy;
  const global = {
    execute: <T>(fn: PolicyFn<T>): Promise<T> => retryUnsent(endpoints.length, () => Promise.resolve(fn({ signal: new AbortController().signal }))),
  } as unknown as Policy;
  return { host, global };
}

/** Runs `attempt` up to `attempts` times while it fails before reaching any server. */
async function retryUnsent<T>(attempts: number, attempt: () => Promise<T>): Promise<T> {
  for (let count = 1; ; count++) {
    try {
      return await attempt();
    } catch (error) {
      if (count >= attempts || !NOT_SENT.test(errorMessage(error))) throw error;
    }
  }
}

function checkTimeout(what: string, value: number | undefined): number {
  if (value === undefined) return DEFAULT_TIMEOUT_MS;
  if (!Number.isInteger(value) || value <= 0) throw new BerthError('ERR_INVALID_CONFIG', `etcd ${what} must be a positive number of milliseconds, got ${value}`);
  return value;
}

function checkExpectedRevision(expected: number | undefined): number | undefined {
  if (expected !== undefined && (!Number.isInteger(expected) || expected < 0)) {
    throw new BerthError('ERR_INVALID_REQUEST', `expected revision must be a non-negative integer, got ${expected}`);
  }
  return expected;
}

function compareRevision(key: Buffer, expected: number): ICompare {
  return expected === 0
    ? { key, target: 'Create', result: 'Equal', create_revision: 0 }
    : { key, target: 'Mod', result: 'Equal', mod_revision: expected };
}

/** The modRevision read by a failed transaction's failure branch (0: the key does not exist). */
function actualRevision(responses: readonly IResponseOp[]): number {
  const kv = responses[0]?.response_range?.kvs[0];
  return kv === undefined ? 0 : toNumber(kv.mod_revision);
}

function conflict(key: string, expected: number, actual: number): BerthError {
  const message =
    expected === 0
      ? `state key ${key} already exists at revision ${actual}`
      : actual === 0
        ? `state key ${key} does not exist, expected revision ${expected}`
        : `state key ${key} is at revision ${actual}, expected ${expected}`;
  return new BerthError('ERR_STATE_CONFLICT', message, { details: { key, expected, actual } });
}

function leaseNotFound(id: LeaseId | undefined, cause?: unknown): BerthError {
  return new BerthError('ERR_LEASE_NOT_FOUND', id === undefined ? 'lease not found or expired' : `lease ${id} not found or expired`, {
    details: { lease: id },
    ...(cause === undefined ? {} : { cause }),
  });
}

function compactedError(prefix: string, from: number, description: string, cause?: unknown, oldest?: number): BerthError {
  const available = oldest === undefined ? '' : ` (oldest available: ${oldest})`;
  const subject = prefix === '' ? 'all state keys' : `state prefix ${prefix}`;
  return new BerthError('ERR_STATE_COMPACTED', `revision ${from} of ${description} is no longer in the watch history of ${subject}${available}`, {
    details: { prefix, requested: from, ...(oldest === undefined ? {} : { oldest }) },
    ...(cause === undefined ? {} : { cause }),
  });
}

/** Hex lease id → etcd's decimal int64 string; null when it cannot name an etcd lease. */
function toEtcdLeaseId(id: LeaseId): string | null {
  if (!LEASE_HEX.test(id)) return null;
  const value = BigInt(`0x${id}`);
  return value === 0n || value >= 2n ** 63n ? null : value.toString(10);
}

/** The smallest key greater than every key starting with `prefix` (etcd's prefix range end). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let index = end.length - 1; index >= 0; index--) {
    if ((end[index] as number) < 0xff) {
      end[index] = (end[index] as number) + 1;
      return end.subarray(0, index + 1);
    }
  }
  return Buffer.from([0]); // all 0xff: every key from `prefix` on
}

/** "14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED …. Resolution note: " → "no connection established. last error: connect ECONNREFUSED …" */
function readableReason(message: string): string {
  const text = message
    .replace(/^\d+ [A-Z_]+: /, '')
    .replace(/\s*Resolution note:\s*$/, '')
    .replace(/Last error: (Error: )?/, 'last error: ')
    .replace(/^etcdserver: /, '')
    .trim();
  return text.charAt(0).toLowerCase() + text.slice(1);
}

function toNumber(value: string | number): number {
  return typeof value === 'number' ? value : Number(value);
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}
