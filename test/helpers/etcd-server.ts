// A throwaway single-member etcd (Debian's etcd-server) for tests: temp data dir, loopback ports by default,
// bounded start and stop, and cleanup even when the test fails or the test process exits early.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exitPromise, waitForChildExit, type ExitStatus } from './processes.js';
import { requirePrerequisites } from './prerequisites.js';
import { runCommand, type CommandResult } from './run-command.js';
import { AbortWait, waitUntil } from './wait-until.js';

export interface EtcdServerOptions {
  /** Address etcd listens on and advertises, for clients and peers (default 127.0.0.1). */
  readonly listenAddress?: string;
  /** Client port; by default a free loopback port (pass one when etcd runs in another network namespace). */
  readonly clientPort?: number;
  /** Peer port; chosen like `clientPort`. */
  readonly peerPort?: number;
  /**
   * Runs etcd and etcdctl through this command prefix, e.g. `['nsenter', '--net=/run/netns/hA']` to start etcd
   * inside a namespaced host. Ports must then be given (free ports here say nothing about that namespace).
   */
  readonly commandPrefix?: readonly string[];
  /** Member name (default `berth-test-<random>`). */
  readonly name?: string;
  /** How long to wait for etcd to answer (default 20 s). */
  readonly startTimeoutMs?: number;
}

export interface EtcdServer {
  /** `HOST:PORT` for clients, as `--store etcd://HOST:PORT` takes it. */
  readonly endpoint: string;
  readonly dataDir: string;
  readonly logPath: string;
  /** Current pid (changes on restart); undefined while stopped. */
  readonly pid: number | undefined;
  /** Graceful stop (SIGTERM, then SIGKILL), then removes the data dir; idempotent. */
  stop(): Promise<void>;
  /** SIGKILL, keeping the data dir (for `restart`). */
  kill(): Promise<void>;
  /** Stops etcd if it runs (SIGTERM) and starts it again on the same ports and data. */
  restart(): Promise<void>;
  /** Runs `etcdctl --endpoints ENDPOINT ARGS...` and resolves with its result; rejects on a non-zero exit. */
  etcdctl(args: readonly string[]): Promise<CommandResult>;
  logs(): Promise<string>;
}

const STOP_TIMEOUT_MS = 10_000;

/** Starts a fresh etcd and waits until it answers; a missing etcd fails the calling test. */
export async function startEtcd(options: EtcdServerOptions = {}): Promise<EtcdServer> {
  requirePrerequisites(['etcd', 'etcdctl', ...(options.commandPrefix?.[0] === undefined ? [] : [options.commandPrefix[0]])]);
  const prefix = options.commandPrefix ?? [];
  if (prefix.length > 0 && (options.clientPort === undefined || options.peerPort === undefined)) {
    throw new Error('startEtcd: give clientPort and peerPort when etcd runs through a command prefix');
  }
  const host = options.listenAddress ?? '127.0.0.1';
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const name = options.name ?? `berth-test-${randomBytes(4).toString('hex')}`;
  const dir = await mkdtemp(join(tmpdir(), 'berth-etcd-'));
  const dataDir = join(dir, 'data');
  const logPath = join(dir, 'etcd.log');
  const clientPort = options.clientPort ?? (await freePort(host));
  let peerPort = options.peerPort ?? (await freePort(host));
  while (peerPort === clientPort) peerPort = await freePort(host);
  const endpoint = `${urlHost}:${clientPort}`;
  const clientUrl = `http://${urlHost}:${clientPort}`;
  const peerUrl = `http://${urlHost}:${peerPort}`;
  const args = [
    'etcd',
    '--name', name,
    '--data-dir', dataDir,
    '--listen-client-urls', clientUrl,
    '--advertise-client-urls', clientUrl,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `${name}=${peerUrl}`,
    '--initial-cluster-state', 'new',
    '--initial-cluster-token', `${name}-${randomBytes(4).toString('hex')}`,
    '--logger', 'zap',
    '--log-outputs', 'stderr',
    '--log-level', 'warn',
  ];
  const command = [...prefix, ...args];

  let child: ChildProcess | undefined;
  let exited: Promise<ExitStatus> | undefined;
  let removed = false;
  // Last resort when the test process exits without stopping etcd (mocha `exit: true`, a crash).
  const onExit = (): void => {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (!removed) rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', onExit);

  const logs = (): Promise<string> => readFile(logPath, 'utf8').catch(() => '');
  const etcdctl = async (ctlArgs: readonly string[]): Promise<CommandResult> => {
    const ctl = [...prefix, 'etcdctl', '--endpoints', endpoint, '--dial-timeout', '2s', '--command-timeout', '5s', ...ctlArgs];
    const result = await runCommand(ctl, { timeoutMs: 15_000, env: { ETCDCTL_API: '3' } });
    if (result.code !== 0) throw new Error(`${ctl.join(' ')} failed (${result.code ?? result.signal}): ${result.stderr.trim() || result.stdout.trim()}`);
    return result;
  };

  const launch = async (): Promise<void> => {
    const log = createWriteStream(logPath, { flags: 'a' });
    const [file, ...rest] = command as [string, ...string[]];
    const proc = spawn(file, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout?.pipe(log, { end: false });
    proc.stderr?.pipe(log, { end: false });
    child = proc;
    exited = exitPromise(proc);
    void exited.then(() => log.end());
    const ended = exited;
    let gone: ExitStatus | undefined;
    void ended.then((status) => (gone = status));
    try {
      await waitUntil(
        async () => {
          if (gone !== undefined) throw new AbortWait(new Error(`etcd exited (${gone.code ?? gone.signal}) while starting`));
          const health = await runCommand([...prefix, 'etcdctl', '--endpoints', endpoint, '--dial-timeout', '1s', '--command-timeout', '2s', 'endpoint', 'health'], {
            timeoutMs: 5_000,
            env: { ETCDCTL_API: '3' },
          });
          return health.code === 0;
        },
        { description: `etcd ${name} at ${endpoint} to answer`, timeoutMs: options.startTimeoutMs ?? 20_000, intervalMs: 100 },
      );
    } catch (error) {
      await signalAndWait('SIGKILL');
      throw new Error(`${(error as Error).message}; etcd log:\n${(await logs()).slice(-3000)}`, { cause: error });
    }
  };

  const signalAndWait = async (signal: NodeJS.Signals): Promise<void> => {
    const proc = child;
    const done = exited;
    if (proc === undefined || done === undefined) return;
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    let status = await waitForChildExit(done, STOP_TIMEOUT_MS);
    if (status === undefined && signal !== 'SIGKILL') {
      proc.kill('SIGKILL');
      status = await waitForChildExit(done, STOP_TIMEOUT_MS);
    }
    if (status === undefined) throw new Error(`etcd ${name} (pid ${proc.pid}) did not exit after ${signal} and SIGKILL`);
    child = undefined;
    exited = undefined;
  };

  try {
    await launch();
  } catch (error) {
    removed = true;
    process.off('exit', onExit);
    await rm(dir, { recursive: true, force: true });
    throw error;
  }

  return {
    endpoint,
    dataDir,
    logPath,
    get pid() {
      return child?.pid;
    },
    stop: async () => {
      try {
        await signalAndWait('SIGTERM');
      } finally {
        if (!removed) {
          removed = true;
          await rm(dir, { recursive: true, force: true });
        }
        process.off('exit', onExit);
      }
    },
    kill: () => signalAndWait('SIGKILL'),
    restart: async () => {
      if (removed) throw new Error(`etcd ${name} was stopped and its data removed; start a new one`);
      await signalAndWait('SIGTERM');
      await launch();
    },
    etcdctl,
    logs,
  };
}

/** A port free on `host` right now (etcd binds it a moment later; collisions are unlikely on loopback). */
/** `127.0.0.1:PORT` where nothing listens: an etcd endpoint that refuses connections. */
export async function deadEndpoint(): Promise<string> {
  return `127.0.0.1:${await freePort('127.0.0.1')}`;
}

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port assigned'))));
    });
  });
}
