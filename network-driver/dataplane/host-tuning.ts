// Host-wide neighbour table limits. Every remote endpoint is a permanent ARP entry on a VXLAN
// device; past gc_thresh3 the kernel refuses new neighbours ("neighbour table overflow"), and the
// defaults (128/512/1024) are far below a few thousand containers. Docker overlay raises them to
// the same values. Only ever raised: an operator's higher setting stays.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../../plugins/errors/berth-error.js';
import type { HostTuningReport } from './dataplane.js';

export const NEIGHBOUR_THRESHOLDS: Readonly<Record<string, number>> = Object.freeze({
  'net/ipv4/neigh/default/gc_thresh1': 8192,
  'net/ipv4/neigh/default/gc_thresh2': 49152,
  'net/ipv4/neigh/default/gc_thresh3': 65536,
});

/** Raises each threshold below its target by writing under `procSysRoot` (normally /proc/sys). */
export async function raiseNeighbourThresholds(procSysRoot: string): Promise<HostTuningReport> {
  const raised: string[] = [];
  const problems: string[] = [];
  for (const [path, target] of Object.entries(NEIGHBOUR_THRESHOLDS)) {
    const key = path.replaceAll('/', '.');
    const file = join(procSysRoot, path);
    try {
      const current = Number((await readFile(file, 'utf8')).trim());
      if (Number.isInteger(current) && current >= target) continue;
      await writeFile(file, `${target}\n`);
      raised.push(`${key} ${current} -> ${target}`);
    } catch (error) {
      problems.push(`cannot raise ${key} to ${target}: ${errorMessage(error)}`);
    }
  }
  return { raised, problems };
}
