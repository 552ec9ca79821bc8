// The Berth workers run from a private copy of the build taken when the run starts: the shared
// dist/ may be recompiled by someone else during a 15-minute run, and a run must measure one build.
import { cp, lstat, mkdir, readdir, symlink } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot } from '../../test/helpers/repo-root.js';
import { WORKER_SCRIPT } from './tools.js';

/** The build this module belongs to (…/dist). */
const DIST = fileURLToPath(new URL('../../', import.meta.url));

export interface BuildCopy {
  /** berth-worker.js inside the copy. */
  readonly workerScript: string;
  /** Sources under these directories whose compiled file is older than the source or missing. */
  readonly staleFiles: readonly string[];
}

/** Copies dist/ (and package.json, node_modules by symlink, so imports resolve) to `dir`. */
export async function copyBuild(dir: string): Promise<BuildCopy> {
  const staleFiles = await staleSources(['volume-driver', 'plugins', 'bench/backup', 'bench/common']);
  await mkdir(dir, { recursive: true });
  await cp(DIST, join(dir, 'dist'), { recursive: true, preserveTimestamps: true });
  await cp(join(repoRoot, 'package.json'), join(dir, 'package.json'));
  await symlink(join(repoRoot, 'node_modules'), join(dir, 'node_modules'));
  return { workerScript: join(dir, 'dist', relative(DIST, WORKER_SCRIPT)), staleFiles };
}

async function staleSources(roots: readonly string[]): Promise<string[]> {
  const stale: string[] = [];
  const visit = async (path: string): Promise<void> => {
    const stats = await lstat(path).catch(() => undefined);
    if (!stats) return;
    if (stats.isDirectory()) {
      for (const name of await readdir(path)) await visit(join(path, name));
      return;
    }
    if (!path.endsWith('.ts') || path.endsWith('.d.ts')) return;
    const source = relative(repoRoot, path);
    const compiled = join(DIST, source.replace(/\.ts$/, '.js'));
    const built = await lstat(compiled).catch(() => undefined);
    if (!built || built.mtimeMs < stats.mtimeMs) stale.push(source);
  };
  for (const root of roots) await visit(join(repoRoot, root));
  return stale;
}
