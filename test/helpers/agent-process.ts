// A Berth agent started by a test on one cluster host. The process runs inside the host's network
// and mount namespaces; this object is its handle in the test process.
import type { ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { existsSync } from 'node:fs';
import { readLogTail } from './log-tail.js';
import { exitPromise, waitForChildExit, type ExitStatus } from './processes.js';
import { formatCommand } from './run-command.js';
import { AbortWait, waitUntil } from './wait-until.js';

export class AgentProcess {
  /** Plugin name: the socket is `<pluginDir>/<name>.sock`. */
  readonly name: string;
  /** Pid of the agent's node process (nsenter execs it, so this is the agent itself). */
  readonly pid: number;
  /** Plugin socket as seen from the test process. */
  readonly socketPath: string;
  /** The agent's stdout and stderr, appended across restarts. */
  readonly logPath: string;
  readonly command: readonly string[];
  /** Settles when the process exits; never rejects. */
  readonly exited: Promise<ExitStatus>;
  private exitStatus: ExitStatus | undefined;

  constructor(child: ChildProcess, init: { name: string; socketPath: string; logPath: string; command: readonly string[] }) {
    if (child.pid === undefined) throw new Error(`cannot start agent ${init.name}: ${formatCommand(init.command)}`);
    this.pid = child.pid;
    this.name = init.name;
    this.socketPath = init.socketPath;
    this.logPath = init.logPath;
    this.command = init.command;
    this.exited = exitPromise(child).then((status) => (this.exitStatus = status));
  }

  get running(): boolean {
    return this.exitStatus === undefined;
  }

  /** Resolves once the plugin socket accepts a connection; throws with the log tail if the agent dies or times out. */
  async waitReady(timeoutMs: number): Promise<void> {
    try {
      await waitUntil(
        async () => {
          if (!this.running) throw new AbortWait(new Error(`agent exited with ${describeExit(this.exitStatus)}`));
          return existsSync(this.socketPath) && (await canConnect(this.socketPath));
        },
        { description: `agent ${this.name} to listen on ${this.socketPath}`, timeoutMs, intervalMs: 100 },
      );
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new Error(`agent ${this.name} (pid ${this.pid}) is not ready: ${reason}\n--- ${this.logPath} (tail) ---\n${readLogTail(this.logPath)}`, { cause: err });
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited after `timeoutMs`. Resolves with the exit status. */
  async stop(timeoutMs = 15_000): Promise<ExitStatus> {
    if (!this.running) return this.exited;
    this.signal('SIGTERM');
    const status = await waitForChildExit(this.exited, timeoutMs);
    return status ?? this.kill();
  }

  /** SIGKILL and wait for the exit (a crash, as far as Docker and Berth can tell). */
  async kill(): Promise<ExitStatus> {
    if (!this.running) return this.exited;
    this.signal('SIGKILL');
    const status = await waitForChildExit(this.exited, 15_000);
    if (status === undefined) throw new Error(`agent ${this.name} (pid ${this.pid}) did not exit after SIGKILL`);
    return status;
  }

  /** The end of the agent's log, for assertion messages. */
  logTail(lines = 40): string {
    return readLogTail(this.logPath, lines);
  }

  private signal(signal: NodeJS.Signals): void {
    try {
      process.kill(this.pid, signal);
    } catch {
      // Exited meanwhile.
    }
  }
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function describeExit(status: ExitStatus | undefined): string {
  if (status === undefined) return 'unknown status';
  return status.signal !== null ? `signal ${status.signal}` : `code ${status.code}`;
}
