import type { BackupManifest } from './backup-manifest.js';

/**
 * The backups to keep: the newest `keepLast` and every backup their chains need. Deleting
 * anything else can never break an incremental chain.
 */
export function keepSet(manifests: readonly BackupManifest[], keepLast: number): Set<string> {
  const newestFirst = [...manifests].sort((a, b) => b.id.localeCompare(a.id));
  const keep = new Set<string>();
  for (const manifest of newestFirst.slice(0, keepLast)) {
    keep.add(manifest.id);
    for (const ancestor of manifest.chain) keep.add(ancestor);
  }
  return keep;
}
