// Tests that need real system tools must fail loudly when the tools are missing, never skip:
// a silently skipped suite looks exactly like a passing one in CI.
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

const INSTALL_HINT = 'run `scripts/install-prereqs` as root (it installs the Debian packages and node modules the tests use)';

/** Directories where Debian puts administrator tools that a non-login PATH sometimes lacks. */
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/**
 * Throws one Error naming every command of `commands` that is not on PATH, and saying so when the
 * process is not root (the integration and e2e tests create namespaces, mounts and engines).
 */
export function requirePrerequisites(commands: readonly string[]): void {
  const problems: string[] = [];
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    problems.push(`tests must run as root (uid is ${process.getuid?.() ?? 'unknown'})`);
  }
  const missing: string[] = [];
  const offPath: string[] = [];
  for (const command of new Set(commands)) {
    if (findOnPath(command) !== undefined) continue;
    const elsewhere = SBIN_DIRS.map((dir) => join(dir, command)).find(isExecutable);
    if (elsewhere !== undefined) offPath.push(`${command} (found at ${elsewhere}; add ${elsewhere.slice(0, -command.length - 1)} to PATH)`);
    else missing.push(command);
  }
  if (missing.length > 0) problems.push(`commands not found: ${missing.join(', ')}`);
  if (offPath.length > 0) problems.push(`commands not on PATH: ${offPath.join(', ')}`);
  if (problems.length > 0) {
    throw new Error(`missing test prerequisites: ${problems.join('; ')}; ${INSTALL_HINT}`);
  }
}

/** Absolute path of `command` on PATH, or undefined. */
export function findOnPath(command: string): string | undefined {
  if (command.includes('/')) return isExecutable(command) ? command : undefined;
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, command);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}
