import { isBerthError } from '../errors/berth-error.js';

/**
 * The one seam for all shared state. Shaped after etcd's model so that the file store
 * (single host) and the etcd store (many hosts) are interchangeable:
 * - every write bumps one store-wide revision; each entry remembers the revision that created
 *   and last modified it;
 * - writes can be conditional on an entry's modRevision (compare-and-swap; 0 = "must not exist");
 * - watches deliver every change under a prefix, in revision order, from a given revision;
 * - leases expire after their TTL unless kept alive, deleting the keys attached to them.
 * Keys are non-empty strings (ERR_INVALID_REQUEST otherwise). Values are opaque strings; typed repositories
 * above this interface own key layout and validation.
 */
export interface StoredEntry {
  readonly key: string;
  readonly value: string;
  /** Revision of the write that created this key (since its last deletion). */
  readonly createRevision: number;
  /** Revision of the last write to this key; the token for compare-and-swap. */
  readonly modRevision: number;
  /** Number of writes since creation, starting at 1. */
  readonly version: number;
  readonly lease?: LeaseId;
}

export type LeaseId = string;

export interface PutOptions {
  /** Write only if the key's current modRevision equals this; 0 means the key must not exist. */
  readonly expectRevision?: number;
  /**
   * Attach the key to a lease: it is deleted when the lease expires or is revoked. A put without `lease`
   * detaches the key from any lease it had (as in etcd); `updateEntry` keeps the current one.
   */
  readonly lease?: LeaseId;
}

export interface DeleteOptions {
  /** Delete only if the key's current modRevision equals this; 0 means the key must not exist (nothing is deleted). */
  readonly expectRevision?: number;
}

export interface ListResult {
  readonly entries: readonly StoredEntry[];
  /** Store revision at which the listing was taken; watch from `revision + 1` to miss nothing. */
  readonly revision: number;
}

export type WatchEvent =
  | { readonly type: 'put'; readonly entry: StoredEntry; readonly revision: number }
  | { readonly type: 'delete'; readonly key: string; readonly revision: number };

export interface WatchOptions {
  /**
   * First revision to deliver (0 or absent: the next one); events from before the store's history window fail
   * with ERR_STATE_COMPACTED.
   */
  readonly fromRevision?: number;
}

export interface Watch {
  /** Stops delivery; idempotent. */
  cancel(): Promise<void>;
}

/**
 * Called asynchronously, once the write is durable, in revision order (the deletions of one lease share a
 * revision). An exception thrown or a promise rejected by a handler is reported and does not stop delivery.
 */
export type WatchHandler = (event: WatchEvent) => void;

export interface Lease {
  readonly id: LeaseId;
  readonly ttlSeconds: number;
  /** Refreshes the lease once; fails with ERR_LEASE_NOT_FOUND if it already expired. */
  keepAlive(): Promise<void>;
  /** Revokes the lease and deletes its keys (at one revision); idempotent. */
  revoke(): Promise<void>;
}

/** A single-key, compare-and-swap mutation used by `updateEntry`. */
export type Mutation<T> = (current: StoredEntry | undefined) => { value: string; result: T } | { delete: true; result: T } | { result: T };

export interface StateStore {
  /** Human-readable description for logs and `berth status` (never includes secrets). */
  readonly description: string;
  get(key: string): Promise<StoredEntry | undefined>;
  /**
   * Entries whose key starts with `prefix`, sorted by key (UTF-8 byte order). A plain string prefix, as in etcd:
   * end it with `/` to list one "directory" and not its siblings sharing the same leading characters.
   */
  list(prefix: string): Promise<ListResult>;
  /**
   * Returns the new modRevision; throws ERR_STATE_CONFLICT when `expectRevision` does not match (checked before
   * the lease), ERR_LEASE_NOT_FOUND when the lease expired or never existed.
   */
  put(key: string, value: string, options?: PutOptions): Promise<number>;
  /**
   * Returns whether a key was deleted (deleting a missing key changes nothing, not even the revision);
   * throws ERR_STATE_CONFLICT when `expectRevision` does not match.
   */
  delete(key: string, options?: DeleteOptions): Promise<boolean>;
  watch(prefix: string, handler: WatchHandler, options?: WatchOptions): Promise<Watch>;
  /** `ttlSeconds` is a whole number >= 1; the granted `Lease.ttlSeconds` may be longer (etcd has a minimum). */
  grantLease(ttlSeconds: number): Promise<Lease>;
  /** Current store revision. */
  revision(): Promise<number>;
  /** Releases the store; idempotent. Every other call afterwards fails with ERR_STATE_UNAVAILABLE. */
  close(): Promise<void>;
}

/**
 * Read-modify-write one key with compare-and-swap, retrying on conflicts.
 * The mutation must be pure: it may run more than once.
 */
export async function updateEntry<T>(store: StateStore, key: string, mutation: Mutation<T>, maxAttempts = 50): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const current = await store.get(key);
    const outcome = mutation(current);
    const expectRevision = current?.modRevision ?? 0;
    try {
      if ('value' in outcome) {
        await store.put(key, outcome.value, { expectRevision, ...(current?.lease ? { lease: current.lease } : {}) });
      } else if ('delete' in outcome) {
        if (current) await store.delete(key, { expectRevision });
      }
      return outcome.result;
    } catch (error) {
      if (!isBerthError(error, 'ERR_STATE_CONFLICT') || attempt >= maxAttempts) throw error;
    }
  }
}
