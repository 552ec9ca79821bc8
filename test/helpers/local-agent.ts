import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { socketIsLive } from '../../plugins/server/unix-socket.js';
import { repoRoot } from './repo-root.js';

export const BERTH_BIN = join(repoRoot, 'dist', 'bin', 'berth.js');

export interface LocalAgentOptions {
  readonly dir: string;
  readonly name?: string;
  /** Engine endpoint; defaults to a socket nobody serves (no engine in this tier). */
  readonly dockerHost?: string;
  readonly extraArgs?: readonly string[];
}

export interface LocalAgent {
  readonly name: string;
  readonly pid: number;
  readonly root: string;
  readonly pluginSocket: string;
  readonly adminSocket: string;
  readonly runDir: string;
  readonly logPath: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  logs(): Promise<string>;
}

/** Paths of an agent laid out under one test directory. */
export function agentPaths(dir: string, name = 'berth'): { root: string; runDir: string; pluginDir: string; pluginSocket: string; adminSocket: string } {
  const runDir = join(dir, 'run');
  const pluginDir = join(dir, 'plugins');
  return { root: join(dir, 'root'), runDir, pluginDir, pluginSocket: join(pluginDir, `${name}.sock`), adminSocket: join(runDir, `${name}.sock`) };
}

/** Runs the real agent binary on the host (no namespaces), for tests that need no engine. */
export async function startLocalAgent(options: LocalAgentOptions): Promise<LocalAgent> {
  const name = options.name ?? 'berth';
  const paths = agentPaths(options.dir, name);
  const logPath = join(options.dir, `${name}-agent.log`);
  const log = createWriteStream(logPath, { flags: 'a' });
  const child: ChildProcess = spawn(
    process.execPath,
    [BERTH_BIN, 'agent', '--name', name, '--root', paths.root, '--run-dir', paths.runDir, '--plugin-dir', paths.pluginDir, '--docker-host', options.dockerHost ?? `unix://${join(options.dir, 'no-engine.sock')}`, '--log-level', 'debug', ...(options.extraArgs ?? [])],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const logs = (): Promise<string> => readFile(logPath, 'utf8').catch(() => '');
  let done = false;
  void exited.then(() => (done = true));
  const deadline = Date.now() + 15_000;
  while (!(await socketIsLive(paths.pluginSocket, 200)) || !(await socketIsLive(paths.adminSocket, 200))) {
    if (done || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`agent did not come up (${done ? 'it exited' : 'timeout'}); log:\n${(await logs()).slice(-3000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const signal = async (sig: NodeJS.Signals) => {
    if (!done) child.kill(sig);
    return exited;
  };
  return { name, pid: child.pid ?? -1, root: paths.root, pluginSocket: paths.pluginSocket, adminSocket: paths.adminSocket, runDir: paths.runDir, logPath, exited, stop: () => signal('SIGTERM'), kill: () => signal('SIGKILL'), logs };
}

/** Runs the `berth` CLI and returns its output. */
export function runBerthCli(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BERTH_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
