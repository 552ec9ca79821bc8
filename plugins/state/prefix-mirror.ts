import type { Logger } from '../logging/logger.js';
import { errorMessage } from '../errors/berth-error.js';
import type { StateStore, StoredEntry, Watch, WatchEvent } from './state-store.js';

/**
 * Told after a change: with the key of the one entry that changed, or without one when many may have
 * (a relist).
 */
export type ChangeListener = (key?: string) => void;

/**
 * An in-memory copy of every entry under a prefix, kept current by a watch: readers get the cluster's
 * state without a round trip, and are told when it changed. The caller's own writes can be noted at once
 * (read-your-writes); a watch event older than what is held is ignored. `resync` relists, for when a
 * watch could not resume (compaction) and as a periodic safety net.
 *
 * Entries are also grouped by their parent (the key up to its last `/`), so listing one small directory
 * (`net/blocks/<network>/`) does not walk the thousands of entries of another (`net/endpoints/<network>/`).
 */
export class PrefixMirror {
  private readonly entries = new Map<string, StoredEntry>();
  private readonly byParent = new Map<string, Map<string, StoredEntry>>();
  /** Revision of the latest deletion seen per key, so a late put event cannot resurrect it. */
  private readonly deletedAt = new Map<string, number>();
  private watch: Watch | undefined;
  private stopped = false;

  constructor(
    private readonly store: StateStore,
    readonly prefix: string,
    private readonly onChange: ChangeListener,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const revision = await this.resync();
    this.watch = await this.store.watch(this.prefix, (event) => this.apply(event), { fromRevision: revision + 1 });
  }

  /** Lists again and watches from there: after the store compacted away the revision the watch would resume from. */
  async restart(): Promise<void> {
    if (this.stopped) return;
    await this.watch?.cancel();
    await this.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.watch?.cancel();
  }

  /** Relists the prefix; returns the revision of the listing. */
  async resync(): Promise<number> {
    const { entries, revision } = await this.store.list(this.prefix);
    const seen = new Set<string>();
    let changed = false;
    for (const entry of entries) {
      seen.add(entry.key);
      const held = this.entries.get(entry.key);
      // A deletion seen (or made) while the listing was in flight is newer than the listed entry.
      if ((this.deletedAt.get(entry.key) ?? 0) > entry.modRevision) continue;
      if (!held || held.modRevision < entry.modRevision) {
        this.set(entry);
        changed = true;
      }
    }
    for (const [key, held] of this.entries) {
      if (!seen.has(key) && held.modRevision <= revision) {
        this.remove(key);
        changed = true;
      }
    }
    if (changed) this.notify();
    return revision;
  }

  get(key: string): StoredEntry | undefined {
    return this.entries.get(key);
  }

  /** Entries whose key starts with `prefix` (which must lie inside the mirrored prefix). */
  list(prefix = this.prefix): StoredEntry[] {
    const result: StoredEntry[] = [];
    for (const [parent, children] of this.byParent) {
      if (parent.startsWith(prefix)) {
        for (const entry of children.values()) result.push(entry);
      } else if (prefix.startsWith(parent)) {
        for (const [key, entry] of children) if (key.startsWith(prefix)) result.push(entry);
      }
    }
    return result;
  }

  /** Records a write the caller just made, before its watch event arrives. */
  notePut(key: string, value: string, modRevision: number): void {
    const held = this.entries.get(key);
    if (held && held.modRevision >= modRevision) return;
    this.set({ key, value, modRevision, createRevision: held?.createRevision ?? modRevision, version: (held?.version ?? 0) + 1 });
    this.notify(key);
  }

  /** Records a deletion the caller just made (the store does not return its revision). */
  noteDelete(key: string): void {
    const held = this.entries.get(key);
    if (!held) return;
    // Any put event for this key up to the held revision is older than the deletion.
    this.deletedAt.set(key, held.modRevision + 1);
    this.remove(key);
    this.notify(key);
  }

  private apply(event: WatchEvent): void {
    if (this.stopped) return;
    if (event.type === 'put') {
      const held = this.entries.get(event.entry.key);
      if (held && held.modRevision >= event.entry.modRevision) return;
      if ((this.deletedAt.get(event.entry.key) ?? 0) > event.entry.modRevision) return;
      this.set(event.entry);
    } else {
      const held = this.entries.get(event.key);
      if (!held || held.modRevision > event.revision) return;
      this.remove(event.key);
      this.deletedAt.set(event.key, event.revision);
    }
    if (this.deletedAt.size > 10_000) this.deletedAt.clear();
    this.notify(event.type === 'put' ? event.entry.key : event.key);
  }

  private set(entry: StoredEntry): void {
    this.entries.set(entry.key, entry);
    const parent = parentOf(entry.key);
    let children = this.byParent.get(parent);
    if (!children) this.byParent.set(parent, (children = new Map()));
    children.set(entry.key, entry);
  }

  private remove(key: string): void {
    this.entries.delete(key);
    const parent = parentOf(key);
    const children = this.byParent.get(parent);
    if (!children) return;
    children.delete(key);
    if (children.size === 0) this.byParent.delete(parent);
  }

  private notify(key?: string): void {
    try {
      this.onChange(key);
    } catch (error) {
      this.log.error({ err: errorMessage(error), prefix: this.prefix }, 'state change handler failed');
    }
  }
}

function parentOf(key: string): string {
  return key.slice(0, key.lastIndexOf('/') + 1);
}
