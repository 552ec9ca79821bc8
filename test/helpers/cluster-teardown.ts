// Removes everything a test cluster run made, from its on-disk record alone, so the same code
// cleans up after a normal dispose(), a failed start, and a run whose test process crashed.
//
// What a run owns is found by identity, never by name pattern over the whole machine:
// processes by the inode of the run's mount and network namespaces and by its cgroup parents,
// mounts by path under the run directory.
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cgroupDirs, pidsInCgroups, removeCgroups } from './cgroups.js';
import { isMountPoint, mountsUnder, readMounts } from './mounts.js';
import { isProcessAlive, killAll, namespaceInode, pidsInNamespaces, processName, processStartTime } from './processes.js';
import { runCommand } from './run-command.js';
import { sleep } from './wait-until.js';

/** Parent directory of all run directories. */
export const RUN_BASE = '/tmp';

/** Run directory names: `<prefix>-cluster-<hex6>`. */
const RUN_DIR_PATTERN = /^([a-z][a-z0-9]{0,11})-cluster-([0-9a-f]{6})$/;
/** Namespace names: `<prefix>-<hex6>-sw` (switch) and `<prefix>-<hex6>-h<Letter>` (hosts). */
const NETNS_PATTERN = /^([a-z][a-z0-9]{0,11})-([0-9a-f]{6})-(sw|h[A-Z])$/;

export interface HostRecord {
  name: string;
  netns: string;
  address: string;
  dir: string;
  mountNamespaceFile: string;
  cgroupParent: string;
}

/** Written to `<runDir>/cluster.json` before anything else is created. */
export interface ClusterRecord {
  version: 1;
  id: string;
  runDir: string;
  switchNetns: string;
  /** The test process that owns the run; the run is stale once it is gone. */
  owner: { pid: number; startTime: string };
  hosts: HostRecord[];
}

export function runDirFor(prefix: string, hex: string): string {
  return join(RUN_BASE, `${prefix}-cluster-${hex}`);
}

export function writeClusterRecord(record: ClusterRecord): void {
  writeFileSync(join(record.runDir, 'cluster.json'), `${JSON.stringify(record, null, 2)}\n`);
}

function readClusterRecord(runDir: string): ClusterRecord | undefined {
  try {
    const parsed = JSON.parse(readFileSync(join(runDir, 'cluster.json'), 'utf8')) as ClusterRecord;
    return parsed.version === 1 && Array.isArray(parsed.hosts) ? parsed : undefined;
  } catch {
    return undefined;
  }
}

function ownerAlive(record: ClusterRecord): boolean {
  return isProcessAlive(record.owner.pid) && processStartTime(record.owner.pid) === record.owner.startTime;
}

/**
 * Ends every process of the run (engines, containerd, shims, agents, containers), unmounts what is
 * mounted under its directory, deletes its network namespaces and cgroups, and removes the directory.
 * Keeps going after failures; resolves with a description of whatever could not be removed.
 */
export async function teardownClusterRun(record: ClusterRecord): Promise<string[]> {
  const problems: string[] = [];
  const mounts = readMounts();
  const nsfsInode = (path: string): number | undefined =>
    mounts.some((m) => m.mountPoint === path && m.fsType === 'nsfs') ? namespaceInode(path) : undefined;

  const mntInodes = new Set(record.hosts.map((h) => nsfsInode(h.mountNamespaceFile)).filter((i) => i !== undefined));
  const netInodes = new Set(
    [record.switchNetns, ...record.hosts.map((h) => h.netns)].map((ns) => nsfsInode(`/run/netns/${ns}`)).filter((i) => i !== undefined),
  );
  const cgroups = record.hosts.flatMap((h) => cgroupDirs(h.cgroupParent));
  const engineDataRoots = record.hosts.map((h) => join(h.dir, 'data'));
  const find = (): number[] => [
    ...new Set([
      ...pidsInNamespaces('mnt', mntInodes),
      ...pidsInNamespaces('net', netInodes),
      ...pidsInCgroups(cgroups),
      ...dockerdPidsFor(engineDataRoots),
    ]),
  ];
  const survivors = await killAll(find, { timeoutMs: 20_000 });
  if (survivors.length > 0) problems.push(`processes survive SIGKILL: ${survivors.join(', ')}`);

  for (const mount of mountsUnder(record.runDir)) {
    await runCommand(['umount', '--lazy', mount.mountPoint], { timeoutMs: 30_000 }).catch(() => undefined);
  }
  const leftMounts = mountsUnder(record.runDir);
  if (leftMounts.length > 0) problems.push(`still mounted: ${leftMounts.map((m) => m.mountPoint).join(', ')}`);

  for (const netns of [...record.hosts.map((h) => h.netns), record.switchNetns]) {
    const problem = await deleteNetns(netns);
    if (problem !== undefined) problems.push(problem);
  }

  // The kernel frees a cgroup shortly after its last task is reaped; retry briefly.
  let leftCgroups: string[] = [];
  for (let attempt = 0; attempt < 20; attempt++) {
    leftCgroups = removeCgroups(cgroups);
    if (leftCgroups.length === 0) break;
    await sleep(100);
  }
  if (leftCgroups.length > 0) problems.push(`cgroups not removed: ${leftCgroups.join(', ')}`);

  if (mountsUnder(record.runDir).length === 0) {
    try {
      rmSync(record.runDir, { recursive: true, force: true, maxRetries: 3 });
    } catch (err) {
      problems.push(`cannot remove ${record.runDir}: ${(err as Error).message}`);
    }
  } else {
    problems.push(`left ${record.runDir} in place because something is still mounted below it`);
  }

  await releaseNetnsDir();
  return problems;
}

/**
 * Removes leftovers of earlier runs whose test process is gone: their processes, mounts, network
 * namespaces, cgroups and run directories. Runs owned by a live process are left alone, so parallel
 * test processes do not disturb each other. Resolves with a line per removed run or namespace.
 */
export async function cleanupStaleClusters(): Promise<string[]> {
  const removed: string[] = [];
  const live = new Set<string>();

  for (const entry of safeReaddir(RUN_BASE)) {
    const match = RUN_DIR_PATTERN.exec(entry);
    if (match === null) continue;
    const runDir = join(RUN_BASE, entry);
    const record = readClusterRecord(runDir);
    if (record === undefined) {
      // A run writes its record right after creating the directory; give a starting run that moment.
      if (ageMs(runDir) > 60_000 && mountsUnder(runDir).length === 0) {
        rmSync(runDir, { recursive: true, force: true });
        removed.push(`${runDir} (no record)`);
      }
      continue;
    }
    if (ownerAlive(record)) {
      live.add(`${match[1]}-${match[2]}`);
      continue;
    }
    const problems = await teardownClusterRun(record);
    removed.push(problems.length === 0 ? `run ${record.id}` : `run ${record.id} (incomplete: ${problems.join('; ')})`);
  }

  // Namespaces whose run directory is already gone (a crash during cleanup).
  for (const netns of await listNetns()) {
    const match = NETNS_PATTERN.exec(netns);
    if (match === null || live.has(`${match[1]}-${match[2]}`)) continue;
    if (existsSync(runDirFor(match[1] ?? '', match[2] ?? ''))) continue;
    const inode = namespaceInode(`/run/netns/${netns}`);
    if (inode !== undefined) await killAll(() => pidsInNamespaces('net', new Set([inode])), { timeoutMs: 10_000 });
    const problem = await deleteNetns(netns);
    removed.push(problem === undefined ? `netns ${netns}` : problem);
  }
  return removed;
}

/** Deletes `ip netns` name `netns`; resolves with a problem description, or undefined when it is gone. */
export async function deleteNetns(netns: string): Promise<string | undefined> {
  if (!existsSync(`/run/netns/${netns}`)) return undefined;
  const result = await runCommand(['ip', 'netns', 'delete', netns], { timeoutMs: 30_000 });
  if (result.code !== 0 && existsSync(`/run/netns/${netns}`)) return `cannot delete netns ${netns}: ${result.stderr.trim()}`;
  return undefined;
}

async function listNetns(): Promise<string[]> {
  return safeReaddir('/run/netns');
}

/**
 * `ip netns add` turns /run/netns into a shared bind mount of itself and never undoes it; undo it
 * once no namespace is left, so a run leaves `mount` as it found it. A plain (not lazy) umount
 * fails harmlessly if another process just added a namespace.
 */
export async function releaseNetnsDir(): Promise<void> {
  const dir = '/run/netns';
  if (!isMountPoint(dir) || safeReaddir(dir).length > 0 || mountsUnder(dir).length > 1) return;
  await runCommand(['umount', dir], { timeoutMs: 10_000 }).catch(() => undefined);
}

/** dockerd processes serving one of `dataRoots` (covers an engine whose namespaces are already gone). */
function dockerdPidsFor(dataRoots: readonly string[]): number[] {
  const pids: number[] = [];
  for (const entry of safeReaddir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (processName(pid) !== 'dockerd') continue;
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const index = args.indexOf('--data-root');
      const root = index >= 0 ? args[index + 1] : undefined;
      if (root !== undefined && dataRoots.includes(root)) pids.push(pid);
    } catch {
      // Gone.
    }
  }
  return pids;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function ageMs(path: string): number {
  try {
    return Date.now() - statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}
