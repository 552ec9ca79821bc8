import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
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
  return spawnTool(command, what, {}, code).exited;
}

export interface ToolStreams {
  /** Give the tool a stdin to write to (else it reads nothing). */
  readonly input?: boolean;
  /** Hand its stdout to the caller as a stream instead of collecting it. */
  readonly streamOutput?: boolean;
}

export interface SpawnedTool {
  /** The tool's stdin when `input` was asked for. */
  readonly stdin: Writable | null;
  /** The tool's stdout when `streamOutput` was asked for (the result's stdout is then empty). */
  readonly stdout: Readable | null;
  /** Settles as execTool does, once the tool has exited and its output is closed. */
  readonly exited: Promise<ToolResult>;
  /** SIGKILLs the tool unless it has exited already. */
  kill(): void;
}

/** Like execTool, for tools whose input or output is a stream (btrfs send and receive). */
export function spawnTool(command: readonly string[], what: string, streams: ToolStreams, code: BerthErrorCode = 'ERR_STORAGE'): SpawnedTool {
  const [file, ...args] = command;
  if (file === undefined) {
    return { stdin: null, stdout: null, exited: Promise.reject(new BerthError('ERR_INTERNAL', `${what}: empty command`)), kill: () => undefined };
  }
  const child = spawn(file, args, { stdio: [streams.input ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  const exited = new Promise<ToolResult>((resolve, reject) => {
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    const collect = (into: Buffer[]) => (chunk: Buffer) => {
      if (into.reduce((total, part) => total + part.length, 0) < MAX_OUTPUT) into.push(chunk);
    };
    if (!streams.streamOutput) child.stdout?.on('data', collect(stdout));
    child.stderr?.on('data', collect(stderr));
    child.on('error', (error: NodeJS.ErrnoException) => {
      const reason = error.code === 'ENOENT' ? `${file} is not installed or not on PATH` : `cannot run ${file}: ${error.message}`;
      reject(new BerthError(code, `${what}: ${reason}`, { cause: error, details: { command: [...command] } }));
    });
    child.on('close', (code, signal) => {
      resolve({ code, signal, stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') });
    });
  });
  return {
    stdin: child.stdin,
    stdout: streams.streamOutput ? child.stdout : null,
    exited,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
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
