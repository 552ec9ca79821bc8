// The backup benchmarks mount a loop-backed btrfs pool; they run in a private mount namespace of
// their own (see inOwnMountNamespace).
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';

/** Set in the re-executed process that runs in its own mount namespace. */
const NAMESPACE_MARK = 'BERTH_BENCH_BACKUP_MOUNT_NS';

/** True in the first process of a run (not yet in its own namespace), unless it only prints its usage. */
export function needsOwnMountNamespace(): boolean {
  return process.env[NAMESPACE_MARK] !== '1' && !process.argv.includes('--help') && !process.argv.includes('-h');
}

/**
 * Re-runs this script in a private mount namespace: the pool's mount is then invisible to mount
 * namespaces that other programs create meanwhile (test clusters do), which would otherwise keep
 * a copy of it, and with it the loop device, alive after our unmount. The namespace, and with it
 * any mount left behind, also ends when the run's process does, whatever way it ends.
 */
export async function inOwnMountNamespace(): Promise<number> {
  const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, [NAMESPACE_MARK]: '1' },
  });
  const forward = (signal: NodeJS.Signals): void => void child.kill(signal);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  return new Promise((resolve) => {
    child.on('error', (error) => {
      console.error(`cannot run unshare: ${error.message}`);
      resolve(1);
    });
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : 1)));
  });
}
