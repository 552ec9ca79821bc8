// Finds processes by the namespaces and cgroups a test cluster made, so cleanup can end every
// engine, containerd, shim, agent and container of one run, and nothing else on the machine.
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { sleep } from './wait-until.js';

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** True when `pid` exists and is not a zombie. */
export function isProcessAlive(pid: number): boolean {
  const state = processState(pid);
  return state !== undefined && state !== 'Z' && state !== 'X';
}

/** Kernel start time of `pid` in clock ticks since boot: with the pid it identifies a process across pid reuse. */
export function processStartTime(pid: number): string | undefined {
  const fields = statFields(pid);
  return fields?.[19];
}

/** Pids of all processes whose `kind` namespace (mnt, net, ...) has one of `inodes`. */
export function pidsInNamespaces(kind: 'mnt' | 'net', inodes: ReadonlySet<number>): number[] {
  if (inodes.size === 0) return [];
  const found: number[] = [];
  for (const pid of listPids()) {
    if (pid === process.pid) continue;
    try {
      const link = readlinkSync(`/proc/${pid}/ns/${kind}`);
      const inode = Number(/\[(\d+)\]/.exec(link)?.[1]);
      if (inodes.has(inode) && isProcessAlive(pid)) found.push(pid);
    } catch {
      // The process ended while we looked.
    }
  }
  return found;
}

/** Pids of live processes one of whose arguments starts with `prefix` (a path a test made). */
export function pidsWithArgument(prefix: string): number[] {
  const found: number[] = [];
  for (const pid of listPids()) {
    if (pid === process.pid) continue;
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (args.some((arg) => arg.startsWith(prefix)) && isProcessAlive(pid)) found.push(pid);
    } catch {
      // The process ended while we looked.
    }
  }
  return found;
}

/** Inode of the namespace behind a namespace file such as /run/netns/NAME or /proc/PID/ns/mnt. */
export function namespaceInode(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

/** Command name (comm) of a process, or undefined once it is gone. */
export function processName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * Sends `signal` to every pid listed by `find()` and waits until none is alive, looking again a few
 * times because a dying supervisor can leave or spawn children. Returns the pids still alive at the end.
 */
export async function killAll(find: () => number[], options: { signal?: NodeJS.Signals; timeoutMs?: number } = {}): Promise<number[]> {
  const signal = options.signal ?? 'SIGKILL';
  const deadline = Date.now() + (options.timeoutMs ?? 15_000);
  for (let round = 0; round < 100 && Date.now() < deadline; round++) {
    const pids = find().filter(isProcessAlive);
    if (pids.length === 0) return [];
    for (const pid of pids) {
      try {
        process.kill(pid, signal);
      } catch {
        // Already gone.
      }
    }
    await sleep(100);
  }
  return find().filter(isProcessAlive);
}

/** Resolves with the child's exit status, or undefined if it has not exited within `timeoutMs`. */
export function waitForChildExit(exited: Promise<ExitStatus>, timeoutMs: number): Promise<ExitStatus | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    // Cleared on exit, and unref'd: a finished wait must not keep the test process alive.
    timer = setTimeout(() => resolve(undefined), timeoutMs);
    timer.unref();
  });
  return Promise.race([exited, timeout]).finally(() => clearTimeout(timer));
}

/** A promise for the exit of a spawned child; it never rejects (a spawn error counts as exit code null). */
export function exitPromise(child: ChildProcess): Promise<ExitStatus> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode });
      return;
    }
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
}

function listPids(): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number);
}

function processState(pid: number): string | undefined {
  return statFields(pid)?.[0];
}

/** Fields of /proc/PID/stat after the command name: [0] is the state, [11] and [12] user and system CPU time, [19] the start time. */
export function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}
