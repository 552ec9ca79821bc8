// Name -> ifindex for the links the dataplane programs entries on. Thousands of FDB and neighbour
// requests name the same VXLAN device, so it is looked up once; a request that fails with ENODEV
// means the link was deleted (or recreated under the same name), so the entry is dropped and the
// request retried once with a fresh lookup.
import type { LinkOps } from './link-ops.js';
import { isErrno } from './netlink-error.js';

export class LinkIndexCache {
  private readonly indexes = new Map<string, number>();
  /** Lookups under way: a burst of requests for one cold name shares one GETLINK. */
  private readonly lookups = new Map<string, Promise<number | undefined>>();

  constructor(private readonly links: LinkOps) {}

  /** The ifindex of `name`, or undefined when there is no such link. */
  lookup(name: string): Promise<number | undefined> {
    const cached = this.indexes.get(name);
    if (cached !== undefined) return Promise.resolve(cached);
    let lookup = this.lookups.get(name);
    if (lookup === undefined) {
      lookup = this.links
        .byName(name)
        .then((link) => {
          const index = link?.data.index;
          if (index !== undefined && this.lookups.get(name) === lookup) this.indexes.set(name, index);
          return index;
        })
        .finally(() => {
          if (this.lookups.get(name) === lookup) this.lookups.delete(name);
        });
      this.lookups.set(name, lookup);
    }
    return lookup;
  }

  remember(name: string, index: number): void {
    this.lookups.delete(name);
    this.indexes.set(name, index);
  }

  /** Drops what is known of `name`, including a lookup under way (it may predate a deletion). */
  forget(name: string): void {
    this.lookups.delete(name);
    this.indexes.delete(name);
  }

  /**
   * Runs `work` with the ifindex of `name`, once more with a fresh lookup if it fails with ENODEV.
   * Resolves with `missing()` when the link does not exist.
   */
  async withIndex<T>(name: string, work: (index: number) => Promise<T>, missing: () => T): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const index = await this.lookup(name);
      if (index === undefined) return missing();
      try {
        return await work(index);
      } catch (error) {
        if (!isErrno(error, 'ENODEV') || attempt > 0) throw error;
        this.forget(name);
      }
    }
  }
}
