// The three measurements of the network benchmark, each run from the machine's side with Debian's
// iperf3 and iputils ping entered into a network namespace (`nsenter ... -n`), so the containers
// need nothing but a process that keeps their namespace alive.
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { exitPromise, waitForChildExit, type ExitStatus } from '../../test/helpers/processes.js';
import { formatCommand, runCommand } from '../../test/helpers/run-command.js';
import { AbortWait, waitUntil } from '../../test/helpers/wait-until.js';
import { round } from '../common/stats.js';

/** One end of a measured path: a network namespace to run tools in, and its address on the path. */
export interface Endpoint {
  /** For messages: "container bench-swarm-hA", "hB's namespace". */
  readonly where: string;
  /** Command prefix entering the namespace, e.g. `['nsenter', '-t', PID, '-n', '--']`. */
  readonly prefix: readonly string[];
  readonly address: string;
}

/** Wall-clock time in milliseconds with sub-millisecond resolution (comparable with `ping -D` stamps). */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

// ---- processes that run beside the measurement (iperf3 servers) -------------------------------

interface Background {
  readonly command: readonly string[];
  readonly exited: Promise<ExitStatus>;
  readonly done: () => boolean;
  readonly output: () => string;
}

const running = new Set<{ stop: () => Promise<void> }>();

/** Kills every background command still running (on failure and on SIGINT/SIGTERM). */
export async function stopBackgroundCommands(): Promise<void> {
  await Promise.all([...running].map((entry) => entry.stop()));
}

/**
 * Runs `command` in the background for `body`, killing it (SIGKILL) after `timeoutMs` at the latest,
 * when `body` fails, and when it has not exited by itself `graceMs` after `body` succeeded.
 */
async function withBackground<T>(command: readonly string[], timeoutMs: number, graceMs: number, body: (process: Background) => Promise<T>): Promise<T> {
  const [file, ...args] = command;
  if (file === undefined) throw new Error('empty command');
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-16_384);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const exited = exitPromise(child);
  let finished = false;
  void exited.then(() => (finished = true));
  const kill = (): void => {
    if (!finished) child.kill('SIGKILL');
  };
  const timer = setTimeout(kill, timeoutMs);
  const entry = {
    stop: async (): Promise<void> => {
      kill();
      await waitForChildExit(exited, 10_000);
    },
  };
  running.add(entry);
  let succeeded = false;
  try {
    const value = await body({ command, exited, done: () => finished, output: () => output });
    succeeded = true;
    return value;
  } finally {
    if (!succeeded || (await waitForChildExit(exited, graceMs)) === undefined) await entry.stop();
    clearTimeout(timer);
    running.delete(entry);
  }
}

// ---- TCP throughput ----------------------------------------------------------------------------

export interface ThroughputRound {
  /** Receiver-side goodput (iperf3 `end.sum_received`), Gbit/s = 10⁹ bit/s. */
  readonly gbitPerSecond: number;
  readonly retransmits: number;
  /** CPU use of the iperf3 client and server processes, % of one core (iperf3's own figures). */
  readonly senderCpuPercent: number;
  readonly receiverCpuPercent: number;
}

interface IperfJson {
  error?: string;
  end?: {
    sum_sent?: { bits_per_second?: number; retransmits?: number };
    sum_received?: { bits_per_second?: number };
    cpu_utilization_percent?: { host_total?: number; remote_total?: number };
  };
}

/** One iperf3 TCP test, one stream, `seconds` long: server in `server`'s namespace, client in `client`'s. */
export async function iperfRound(client: Endpoint, server: Endpoint, seconds: number, port: number): Promise<ThroughputRound> {
  const serverCommand = [...server.prefix, 'iperf3', '--server', '--one-off', '--bind', server.address, '--port', String(port)];
  return withBackground(serverCommand, (seconds + 60) * 1000, 5_000, async (iperfServer) => {
    await waitUntil(
      async () => {
        if (iperfServer.done()) throw new AbortWait(new Error(`iperf3 server in ${server.where} exited: ${iperfServer.output().trim()}`));
        const listening = await runCommand([...server.prefix, 'ss', '-Hltn', `sport = :${port}`], { timeoutMs: 5_000 });
        return listening.code === 0 && listening.stdout.trim() !== '';
      },
      { description: `iperf3 server in ${server.where} to listen on ${server.address}:${port}`, timeoutMs: 15_000, intervalMs: 50 },
    );
    const clientCommand = [
      ...client.prefix, 'iperf3', '--client', server.address, '--port', String(port), '--time', String(seconds), '--json', '--connect-timeout', '5000',
    ];
    const run = await runCommand(clientCommand, { timeoutMs: (seconds + 30) * 1000 });
    let parsed: IperfJson;
    try {
      parsed = JSON.parse(run.stdout) as IperfJson;
    } catch {
      throw new Error(`${formatCommand(clientCommand)} exited ${run.code ?? run.signal} without JSON: ${(run.stderr || run.stdout).trim().slice(-500)}`);
    }
    const bits = parsed.end?.sum_received?.bits_per_second;
    if (run.code !== 0 || parsed.error !== undefined || bits === undefined) {
      throw new Error(`iperf3 from ${client.where} to ${server.where} failed: ${parsed.error ?? `exit ${run.code ?? run.signal}`}; server: ${iperfServer.output().trim()}`);
    }
    return {
      gbitPerSecond: round(bits / 1e9),
      retransmits: parsed.end?.sum_sent?.retransmits ?? 0,
      senderCpuPercent: round(parsed.end?.cpu_utilization_percent?.host_total ?? Number.NaN, 1),
      receiverCpuPercent: round(parsed.end?.cpu_utilization_percent?.remote_total ?? Number.NaN, 1),
    };
  });
}

// ---- ping latency ------------------------------------------------------------------------------

export interface PingSeries {
  readonly sent: number;
  readonly received: number;
  /** Round-trip time of every answered echo request, in order. */
  readonly rttMs: readonly number[];
}

/** `count` echo requests `intervalMs` apart (iputils ping; as root any interval from 2 ms is allowed). */
export async function pingSeries(client: Endpoint, address: string, count: number, intervalMs: number): Promise<PingSeries> {
  const command = [...client.prefix, 'ping', '-n', '-c', String(count), '-i', String(intervalMs / 1000), '-W', '1', address];
  const run = await runCommand(command, { timeoutMs: count * intervalMs + 30_000 });
  const rttMs = [...run.stdout.matchAll(/ time=([\d.]+) ms/g)].map((match) => Number(match[1]));
  const totals = /(\d+) packets transmitted, (\d+) received/.exec(run.stdout);
  if (totals === null || rttMs.length === 0) {
    throw new Error(`ping from ${client.where} to ${address} got no answer (exit ${run.code ?? run.signal}): ${(run.stderr || run.stdout).trim().slice(-500)}`);
  }
  return { sent: Number(totals[1]), received: Number(totals[2]), rttMs };
}

// ---- convergence -------------------------------------------------------------------------------

/**
 * Pings `address` from `client` every `intervalMs` until the first answer or `deadlineSeconds`, and
 * resolves with the wall-clock time of that answer (from `ping -D`), or undefined when none came.
 */
export async function firstReplyAt(client: Endpoint, address: string, deadlineSeconds: number, intervalMs: number): Promise<number | undefined> {
  // With -w, ping keeps sending until `-c` answers arrived or the deadline passed.
  const command = [...client.prefix, 'ping', '-n', '-D', '-c', '1', '-w', String(deadlineSeconds), '-i', String(intervalMs / 1000), address];
  const run = await runCommand(command, { timeoutMs: (deadlineSeconds + 15) * 1000 });
  const reply = /^\[(\d+\.\d+)\] \d+ bytes from .* time=/m.exec(run.stdout);
  return reply === null ? undefined : Number(reply[1]) * 1000;
}
