import { spawn } from 'node:child_process';
import { BerthError, type BerthErrorCode } from '../errors/berth-error.js';

export interface ToolResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Output beyond this is dropped (head kept); the tools run this way print little. */
const MAX_OUTPUT = 1024 * 1024;

/**
 * Runs a system tool (cp, btrfs, mkfs.btrfs, mount, iptables) from an argument array, never a shell
 * string, and resolves whatever its exit status. Rejects only when it cannot start, with a
 * BerthError of `code` whose message starts with `what` (which names the subject).
 */
export function execTool(command: readonly string[], what: string, code: BerthErrorCode = 'ERR_STORAGE'): Promise<ToolResult> {
  const [file, ...args] = command;
  if (file === undefined) return Promise.reject(new BerthError('ERR_INTERNAL', `${what}: empty command`));
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    const collect = (into: Buffer[]) => (chunk: Buffer) => {
      if (into.reduce((total, part) => total + part.length, 0) < MAX_OUTPUT) into.push(chunk);
    };
    child.stdout.on('data', collect(stdout));
    child.stderr.on('data', collect(stderr));
    child.on('error', (error: NodeJS.ErrnoException) => {
      const reason = error.code === 'ENOENT' ? `${file} is not installed or not on PATH` : `cannot run ${file}: ${error.message}`;
      reject(new BerthError(code, `${what}: ${reason}`, { cause: error, details: { command: [...command] } }));
    });
    child.on('close', (code, signal) => {
      resolve({ code, signal, stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') });
    });
  });
}

/** Like execTool, but a non-zero exit is the one place it becomes a BerthError, keeping stderr. */
export async function runTool(command: readonly string[], what: string, code: BerthErrorCode = 'ERR_STORAGE'): Promise<ToolResult> {
  const result = await execTool(command, what, code);
  if (result.code !== 0) throw toolError(command, what, result, code);
  return result;
}

export function toolError(command: readonly string[], what: string, result: ToolResult, code: BerthErrorCode = 'ERR_STORAGE'): BerthError {
  const status = result.code === null ? `signal ${result.signal ?? 'unknown'}` : `exit code ${result.code}`;
  const output = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-10).join('\n');
  return new BerthError(code, `${what}: ${command.join(' ')} failed with ${status}${output ? `: ${output}` : ''}`, {
    details: { command: [...command], exitCode: result.code, stderr: result.stderr },
  });
}
