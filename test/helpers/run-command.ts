// Promise wrapper around child_process.spawn for tests and benchmarks.
// Commands are argument arrays, never shell strings, so nothing is re-parsed by a shell.
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';

export interface RunOptions {
  /** Kill the command (SIGKILL) and reject after this many milliseconds. Default 120 000. */
  timeoutMs?: number;
  cwd?: string;
  /** Merged over process.env; a value of `undefined` removes the variable. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Written to the command's stdin, which is then closed. Without it stdin is empty. */
  input?: string | Uint8Array | Readable;
  /** Output beyond this many bytes per stream is dropped (the tail is kept). Default 64 MiB. */
  maxOutputBytes?: number;
}

export interface CommandResult {
  command: readonly string[];
  stdout: string;
  stderr: string;
  /** Exit code, or null when the command died from a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  durationMs: number;
}

/** A command failed to start, timed out, or (for checkCommand) exited non-zero. */
export class CommandError extends Error {
  readonly command: readonly string[];
  readonly result: CommandResult | undefined;

  constructor(message: string, command: readonly string[], result?: CommandResult, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CommandError';
    this.command = command;
    this.result = result;
  }

  get code(): number | null | undefined {
    return this.result?.code;
  }

  get stderr(): string | undefined {
    return this.result?.stderr;
  }
}

const DEFAULT_TIMEOUT_MS = 120_000;
const DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024;

/**
 * Runs `command[0]` with `command.slice(1)` as arguments and resolves with its output and exit status
 * whatever the status. Rejects (CommandError) only when the command cannot start or times out.
 */
export function runCommand(command: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
  const [file, ...args] = command;
  if (file === undefined || file === '') {
    return Promise.reject(new CommandError('empty command', command));
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxOutput = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const started = Date.now();

  return new Promise<CommandResult>((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: mergeEnv(options.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const stdout = new OutputBuffer(maxOutput);
    const stderr = new OutputBuffer(maxOutput);
    let timedOut = false;
    let settled = false;

    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);

    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    // The command may exit without reading its input; that is not our error.
    child.stdin.on('error', () => undefined);

    child.on('error', (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new CommandError(`cannot run ${formatCommand(command)}: ${err.message}`, command, undefined, { cause: err }));
    });

    child.on('close', (code, signal) => {
      // A command that exits without reading all its input must not leave the source (a file) open.
      if (options.input !== undefined && typeof options.input === 'object' && 'destroy' in options.input) options.input.destroy();
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const result: CommandResult = {
        command,
        stdout: stdout.text(),
        stderr: stderr.text(),
        code,
        signal,
        durationMs: Date.now() - started,
      };
      if (timedOut) {
        reject(new CommandError(`${formatCommand(command)} timed out after ${timeoutMs} ms${tailOf(result.stderr)}`, command, result));
      } else {
        resolve(result);
      }
    });

    const input = options.input;
    if (input === undefined) {
      child.stdin.end();
    } else if (typeof input === 'string' || input instanceof Uint8Array) {
      child.stdin.end(input);
    } else {
      input.on('error', (err) => {
        child.stdin.destroy(err);
      });
      input.pipe(child.stdin);
    }
  });
}

/** Like runCommand, but rejects with a CommandError naming the command, exit status and stderr unless it exits 0. */
export async function checkCommand(command: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
  const result = await runCommand(command, options);
  if (result.code !== 0) {
    const status = result.code === null ? `signal ${result.signal ?? 'unknown'}` : `exit code ${result.code}`;
    throw new CommandError(`${formatCommand(command)} failed with ${status}${tailOf(result.stderr || result.stdout)}`, command, result);
  }
  return result;
}

/** Renders a command for messages, quoting arguments that a reader could misread. */
export function formatCommand(command: readonly string[]): string {
  return command.map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : JSON.stringify(arg))).join(' ');
}

function tailOf(text: string): string {
  const trimmed = text.trim();
  if (trimmed === '') return '';
  const lines = trimmed.split('\n');
  return `: ${lines.slice(-20).join('\n')}`;
}

function mergeEnv(extra: RunOptions['env']): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [key, value] of Object.entries(extra ?? {})) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

/** Collects a stream's output, keeping at most `limit` bytes (the newest). */
class OutputBuffer {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size > this.limit && this.chunks.length > 1) {
      const dropped = this.chunks.shift();
      this.size -= dropped?.length ?? 0;
    }
  }

  text(): string {
    const all = Buffer.concat(this.chunks);
    return (all.length > this.limit ? all.subarray(all.length - this.limit) : all).toString('utf8');
  }
}
