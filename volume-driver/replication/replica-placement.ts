import { BerthError } from '../../plugins/errors/berth-error.js';
import type { ClusterVolumeRecord } from './replication-records.js';

/**
 * Chooses the hosts that keep copies of a new volume: the ones named, else the live hosts (not the owner)
 * holding the fewest replicas, so copies spread across the cluster. Refuses rather than under-replicate.
 */
export function placeReplicas(input: {
  owner: string;
  copies: number;
  named?: readonly string[];
  live: ReadonlySet<string>;
  existing: readonly ClusterVolumeRecord[];
}): string[] {
  const wanted = input.copies - 1;
  if (wanted <= 0) return [];
  if (input.named !== undefined) {
    const named = [...new Set(input.named)];
    const problems = named.filter((host) => host === input.owner || !input.live.has(host));
    if (problems.length > 0) {
      throw new BerthError('ERR_INVALID_OPTION', `option replica-hosts names ${problems.join(', ')}, which ${problems.length > 1 ? 'are' : 'is'} not a live host other than this one (live: ${[...input.live].sort().join(', ')})`);
    }
    if (named.length !== wanted) throw new BerthError('ERR_INVALID_OPTION', `option replica-hosts names ${named.length} host(s) but replicas=${input.copies} needs ${wanted}`);
    return named;
  }
  const candidates = leastLoaded(input.live, [input.owner], input.existing);
  if (candidates.length < wanted) {
    throw new BerthError('ERR_INVALID_OPTION', `option replicas=${input.copies} needs ${wanted} other live host(s); live hosts besides this one: ${candidates.length > 0 ? candidates.join(', ') : 'none'}`);
  }
  return candidates.slice(0, wanted);
}

/**
 * The replica hosts of a volume once the `gone` ones (their lease expired long enough ago) are replaced by
 * live hosts that hold no copy yet, the least loaded first; a gone host stays listed when no host can take
 * its place. Undefined when nothing changes, and always for hosts the user named (`replica-hosts`).
 */
export function replaceGoneReplicas(input: {
  record: ClusterVolumeRecord;
  gone: ReadonlySet<string>;
  live: ReadonlySet<string>;
  existing: readonly ClusterVolumeRecord[];
}): { replicaHosts: string[]; replaced: { gone: string; by: string }[] } | undefined {
  const { record } = input;
  if (record.options['replica-hosts'] !== undefined) return undefined;
  const candidates = leastLoaded(input.live, [record.owner, ...record.replicaHosts], input.existing);
  const replaced: { gone: string; by: string }[] = [];
  const replicaHosts = record.replicaHosts.map((host) => {
    if (!input.gone.has(host) || input.live.has(host)) return host;
    const by = candidates.shift();
    if (by === undefined) return host;
    replaced.push({ gone: host, by });
    return by;
  });
  return replaced.length === 0 ? undefined : { replicaHosts, replaced };
}

/** Live hosts other than `excluded`, those keeping the fewest replicas first (then by name). */
function leastLoaded(live: ReadonlySet<string>, excluded: readonly string[], existing: readonly ClusterVolumeRecord[]): string[] {
  const load = new Map<string, number>();
  for (const record of existing) for (const host of record.replicaHosts) load.set(host, (load.get(host) ?? 0) + 1);
  return [...live].filter((host) => !excluded.includes(host)).sort((a, b) => (load.get(a) ?? 0) - (load.get(b) ?? 0) || a.localeCompare(b));
}
