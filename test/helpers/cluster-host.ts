// One simulated Docker host of a test cluster: a network namespace, a persistent mount namespace,
// a real dockerd inside both, and the Berth agents a test starts there.
//
// The mount namespace outlives the engine (it is pinned by a bind mount of its nsfs file), so an
// engine restart comes back in the same namespace as the agent: mounts the agent made for volumes
// stay visible to the new engine, as they would on a real machine.
import { spawn } from 'node:child_process';
import { appendFileSync, closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';
import { AgentProcess } from './agent-process.js';
import { cgroupDirs, pidsInCgroups } from './cgroups.js';
import type { HostRecord } from './cluster-teardown.js';
import { readLogTail } from './log-tail.js';
import { exitPromise, isProcessAlive, killAll, namespaceInode, pidsInNamespaces, processName, waitForChildExit, type ExitStatus } from './processes.js';
import { checkCommand, formatCommand, runCommand, type CommandResult, type RunOptions } from './run-command.js';
import { AbortWait, waitUntil } from './wait-until.js';

/** Paths and names fixed when the cluster is laid out (the same fields cluster.json records); see startCluster. */
export type HostLayout = HostRecord;

/** Settings shared by all hosts of a cluster. */
export interface HostContext {
  /** DOCKER_CONFIG for CLI and Compose calls, so tests never touch ~/.docker. */
  dockerConfigDir: string;
  /** Extra dockerd flags for every engine start. */
  engineArgs: readonly string[];
  /** The agent's entry script (default `<repo>/dist/bin/berth.js`). */
  agentEntry: string;
  engineReadyTimeoutMs: number;
}

export interface StartAgentOptions {
  /** Extra arguments after the standard ones. */
  args?: readonly string[];
  /** Extra environment variables for the agent (merged over the test process's). */
  env?: Readonly<Record<string, string>>;
  /** Plugin name, default `berth`. */
  name?: string;
  /** Entry script, default the cluster's `agentEntry`. */
  entry?: string;
  /** How long to wait for the plugin socket to accept connections. Default 30 000 ms. */
  readyTimeoutMs?: number;
}

export interface ComposeOptions extends Omit<RunOptions, 'env'> {
  /** Compose project name (`-p`); by default Compose derives it from `cwd`. */
  projectName?: string;
  env?: Readonly<Record<string, string | undefined>>;
}

/** Where the engine's own directories appear inside the host's mount namespace. */
const PLUGIN_DIR_IN_HOST = '/run/docker/plugins';
const EXEC_ROOT_IN_HOST = '/run/docker';

interface EngineHandle {
  pid: number;
  exited: Promise<ExitStatus>;
  done: boolean;
}

export class Host {
  /** Short name: 'hA', 'hB', ... */
  readonly name: string;
  /** Network namespace name (`ip netns`); unique per run. */
  readonly netns: string;
  /** `/run/netns/<netns>`. */
  readonly netnsPath: string;
  /** File pinning the host's mount namespace (usable with `nsenter --mount=`). */
  readonly mountNamespaceFile: string;
  /** Underlay address of this host (198.18.0.0/24), reachable from the other hosts of the cluster. */
  readonly address: string;
  /** Directory holding everything of this host. */
  readonly dir: string;
  /** The engine's API socket, reachable from the test process. */
  readonly dockerSocket: string;
  /** `unix://<dockerSocket>`, for DOCKER_HOST and `--docker-host`. */
  readonly dockerHost: string;
  /** This host's `/run/docker/plugins`, as seen from the test process. */
  readonly pluginDir: string;
  /** The Berth agent's run directory (admin socket). */
  readonly runDir: string;
  /** The Berth agent's data root. */
  readonly berthRoot: string;
  /** dockerd and agent logs of this host. */
  readonly logDir: string;
  /** The engine's data root (images, containers, local volumes). */
  readonly dataRoot: string;
  /** The engine's exec root (`/run/docker` inside the host). */
  readonly execRoot: string;
  /** The engine's cgroup parent for containers. */
  readonly cgroupParent: string;
  /** A Dockerode client for this engine. */
  readonly dockerode: Docker;
  /** dockerd's log, appended across restarts. */
  readonly engineLogPath: string;

  private readonly context: HostContext;
  private readonly pidFile: string;
  private readonly configFile: string;
  private engine: EngineHandle | undefined;
  private readonly agents = new Map<string, AgentProcess>();
  private lastAgent: AgentProcess | undefined;

  constructor(layout: HostLayout, context: HostContext) {
    this.context = context;
    this.name = layout.name;
    this.netns = layout.netns;
    this.netnsPath = `/run/netns/${layout.netns}`;
    this.mountNamespaceFile = layout.mountNamespaceFile;
    this.address = layout.address;
    this.dir = layout.dir;
    this.cgroupParent = layout.cgroupParent;
    this.dockerSocket = join(layout.dir, 'docker.sock');
    this.dockerHost = `unix://${this.dockerSocket}`;
    this.pluginDir = join(layout.dir, 'plugins');
    this.runDir = join(layout.dir, 'run');
    this.berthRoot = join(layout.dir, 'berth-root');
    this.logDir = join(layout.dir, 'logs');
    this.dataRoot = join(layout.dir, 'data');
    this.execRoot = join(layout.dir, 'exec');
    this.engineLogPath = join(this.logDir, 'dockerd.log');
    this.pidFile = join(layout.dir, 'docker.pid');
    this.configFile = join(layout.dir, 'daemon.json');
    this.dockerode = new Docker({ socketPath: this.dockerSocket });
  }

  /** Pid of the running dockerd, or undefined when the engine is stopped. */
  get enginePid(): number | undefined {
    return this.engine !== undefined && !this.engine.done ? this.engine.pid : undefined;
  }

  /** Runs the docker CLI against this engine. Resolves whatever the exit code. */
  docker(args: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    return runCommand(['docker', '--host', this.dockerHost, ...args], { timeoutMs: 120_000, ...options, env: this.cliEnv(options.env) });
  }

  /** Like docker(), but throws (with stderr) unless the command exits 0. */
  dockerOk(args: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    return checkCommand(['docker', '--host', this.dockerHost, ...args], { timeoutMs: 120_000, ...options, env: this.cliEnv(options.env) });
  }

  /** Runs docker-compose (v1) against this engine. */
  compose(args: readonly string[], options: ComposeOptions = {}): Promise<CommandResult> {
    const { projectName, env, ...rest } = options;
    const project = projectName === undefined ? [] : ['--project-name', projectName];
    return runCommand(['docker-compose', ...project, ...args], {
      timeoutMs: 300_000,
      ...rest,
      env: { ...this.cliEnv(env), DOCKER_HOST: this.dockerHost },
    });
  }

  /** Runs a command inside this host's network and mount namespaces (where its engine and agents run). */
  inNamespaces(command: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    return runCommand(this.nsenter(command), { timeoutMs: 120_000, ...options });
  }

  /** Runs `node <agent entry> <args> --run-dir <runDir>` inside the host, i.e. the `berth` CLI. */
  berth(args: readonly string[], options: RunOptions & { entry?: string } = {}): Promise<CommandResult> {
    const { entry, ...rest } = options;
    return this.inNamespaces([process.execPath, entry ?? this.context.agentEntry, ...args, '--run-dir', this.runDir], rest);
  }

  /** Starts dockerd with this host's fixed configuration and waits until it answers `docker version`. */
  async startEngine(): Promise<void> {
    if (this.enginePid !== undefined) throw new Error(`engine of ${this.name} is already running (pid ${this.enginePid})`);
    // A containerd left behind by a killed engine would fight the new one for its socket and state.
    await this.endProcessesNamed(['dockerd', 'containerd']);
    // dockerd refuses to start while its pid file names a live process, and its containerd supervisor
    // reuses a containerd whose pid answers kill(0). After a kill both pids can be unreaped zombies
    // (this machine's init reaps orphans late), so remove pid files whose process is dead.
    rmSync(this.pidFile, { force: true });
    removeStalePidFile(join(this.execRoot, 'containerd', 'containerd.pid'));

    const command = this.nsenter([
      'dockerd',
      '--host', this.dockerHost,
      '--data-root', this.dataRoot,
      '--exec-root', EXEC_ROOT_IN_HOST,
      '--pidfile', this.pidFile,
      '--config-file', this.configFile,
      '--cgroup-parent', `/${this.cgroupParent}`,
      ...this.context.engineArgs,
    ]);
    appendFileSync(this.engineLogPath, `\n=== ${new Date().toISOString()} test harness: ${formatCommand(command)}\n`);
    const log = openSync(this.engineLogPath, 'a');
    try {
      // Own process group, so a Ctrl-C meant for mocha does not half-stop engines that dispose() still needs.
      const child = spawn(command[0] ?? 'nsenter', command.slice(1), { stdio: ['ignore', log, log], detached: true });
      child.unref();
      if (child.pid === undefined) throw new Error(`cannot start dockerd for ${this.name}: ${formatCommand(command)}`);
      const handle: EngineHandle = { pid: child.pid, exited: exitPromise(child), done: false };
      void handle.exited.then(() => (handle.done = true));
      this.engine = handle;
    } finally {
      closeSync(log);
    }
    await this.waitEngineReady(this.engine);
  }

  /** SIGTERM to dockerd and wait until it and its containerd have exited (SIGKILL after `timeoutMs`). */
  async stopEngine(options: { timeoutMs?: number } = {}): Promise<void> {
    const engine = this.engine;
    if (engine === undefined || engine.done) return;
    signal(engine.pid, 'SIGTERM');
    const status = await waitForChildExit(engine.exited, options.timeoutMs ?? 60_000);
    if (status === undefined) {
      signal(engine.pid, 'SIGKILL');
      if ((await waitForChildExit(engine.exited, 15_000)) === undefined) {
        throw new Error(`dockerd of ${this.name} (pid ${engine.pid}) did not exit after SIGKILL`);
      }
    }
    await this.waitProcessesGone(['containerd'], 20_000);
    this.engine = undefined;
  }

  /**
   * The host loses power: its agents, its containers' processes and its engine are SIGKILLed at once,
   * nothing is unmounted or flushed by them. The namespaces stay (a later startEngine boots it again).
   */
  async crash(): Promise<void> {
    await Promise.all(this.runningAgents().map((agent) => agent.kill()));
    await killAll(() => pidsInCgroups(cgroupDirs(this.cgroupParent)), { signal: 'SIGKILL', timeoutMs: 15_000 });
    await this.killEngine();
  }

  /**
   * SIGKILL to dockerd, as in a crash. Its containerd dies with it (parent-death signal); container
   * shims and containers keep running until the next startEngine() reconnects to them.
   */
  async killEngine(): Promise<void> {
    const engine = this.engine;
    if (engine === undefined || engine.done) return;
    signal(engine.pid, 'SIGKILL');
    if ((await waitForChildExit(engine.exited, 15_000)) === undefined) {
      throw new Error(`dockerd of ${this.name} (pid ${engine.pid}) did not exit after SIGKILL`);
    }
    await this.waitProcessesGone(['containerd'], 10_000);
    this.engine = undefined;
  }

  async restartEngine(): Promise<void> {
    await this.stopEngine();
    await this.startEngine();
  }

  /**
   * Starts a Berth agent inside this host's namespaces:
   * `node <entry> agent --name <name> --root <berthRoot> --run-dir <runDir> --plugin-dir /run/docker/plugins --docker-host <dockerHost> <args>`.
   * Resolves once `<pluginDir>/<name>.sock` accepts connections.
   */
  async startAgent(options: StartAgentOptions = {}): Promise<AgentProcess> {
    const name = options.name ?? 'berth';
    const running = this.agents.get(name);
    if (running?.running === true) throw new Error(`agent ${name} already runs on ${this.name} (pid ${running.pid})`);
    const entry = options.entry ?? this.context.agentEntry;
    if (!existsSync(entry)) throw new Error(`agent entry ${entry} not found; build first (npx tsc -p tsconfig.json)`);

    const socketPath = join(this.pluginDir, `${name}.sock`);
    // sun_path holds 108 bytes including the terminating NUL.
    if (Buffer.byteLength(socketPath) > 107) throw new Error(`plugin socket path ${socketPath} exceeds the 107-byte Unix socket limit`);
    const command = this.nsenter([
      process.execPath, entry, 'agent',
      '--name', name,
      '--root', this.berthRoot,
      '--run-dir', this.runDir,
      '--plugin-dir', PLUGIN_DIR_IN_HOST,
      '--docker-host', this.dockerHost,
      ...(options.args ?? []),
    ]);
    const logPath = join(this.logDir, `agent-${name}.log`);
    appendFileSync(logPath, `\n=== ${new Date().toISOString()} test harness: ${formatCommand(command)}\n`);
    const log = openSync(logPath, 'a');
    let agent: AgentProcess;
    try {
      const child = spawn(command[0] ?? 'nsenter', command.slice(1), {
        stdio: ['ignore', log, log],
        env: { ...process.env, ...options.env },
        detached: true,
      });
      child.unref();
      agent = new AgentProcess(child, { name, socketPath, logPath, command });
    } finally {
      closeSync(log);
    }
    this.agents.set(name, agent);
    this.lastAgent = agent;
    try {
      await agent.waitReady(options.readyTimeoutMs ?? 30_000);
    } catch (err) {
      await agent.kill().catch(() => undefined);
      throw err;
    }
    return agent;
  }

  /** The agent started last on this host (running or not), or undefined before the first startAgent(). */
  get agent(): AgentProcess | undefined {
    return this.lastAgent;
  }

  /** Agents started on this host that are still running. */
  runningAgents(): AgentProcess[] {
    return [...this.agents.values()].filter((agent) => agent.running);
  }

  /** Stops every agent of this host (SIGTERM, then SIGKILL). */
  async stopAgents(timeoutMs = 15_000): Promise<void> {
    await Promise.all(this.runningAgents().map((agent) => agent.stop(timeoutMs)));
  }

  /** Force-removes every container of this engine (with anonymous volumes). No-op when the engine is down. */
  async removeAllContainers(): Promise<void> {
    if (this.enginePid === undefined) return;
    const ids = (await this.dockerOk(['ps', '--all', '--quiet', '--no-trunc'], { timeoutMs: 60_000 })).stdout.split('\n').filter((id) => id !== '');
    if (ids.length > 0) await this.dockerOk(['rm', '--force', '--volumes', ...ids], { timeoutMs: 120_000 });
  }

  /**
   * Reads a file as this host sees it. Mounts made by the engine or an agent are private to the
   * host's mount namespace, so paths below them are not visible to the test process directly.
   */
  async readFile(path: string): Promise<string> {
    return (await checkCommand(this.nsenter(['cat', '--', path]), { timeoutMs: 60_000 })).stdout;
  }

  /** Writes (replaces) a file as this host sees it; see readFile(). */
  async writeFile(path: string, content: string | Uint8Array): Promise<void> {
    await checkCommand(this.nsenter(['sh', '-c', 'cat > "$1"', 'sh', path]), { input: content, timeoutMs: 60_000 });
  }

  /** Names in a directory as this host sees it (sorted, without . and ..); see readFile(). */
  async listDir(path: string): Promise<string[]> {
    const listed = await checkCommand(this.nsenter(['find', path, '-mindepth', '1', '-maxdepth', '1', '-printf', '%f\\0']), { timeoutMs: 60_000 });
    return listed.stdout.split('\0').filter((name) => name !== '').sort();
  }

  /** The end of dockerd's log, for assertion messages. */
  engineLogTail(lines = 40): string {
    return readLogTail(this.engineLogPath, lines);
  }

  /** `command` prefixed to run in this host's network and mount namespaces. */
  nsenter(command: readonly string[]): string[] {
    return ['nsenter', `--net=${this.netnsPath}`, `--mount=${this.mountNamespaceFile}`, '--', ...command];
  }

  private async waitEngineReady(engine: EngineHandle): Promise<void> {
    try {
      await waitUntil(
        async () => {
          if (engine.done) throw new AbortWait(new Error('dockerd exited'));
          // The API socket accepts connections while the engine still restores containers; the CLI waits.
          const version = await runCommand(['docker', '--host', this.dockerHost, 'version', '--format', '{{.Server.Version}}'], {
            timeoutMs: 20_000,
            env: this.cliEnv(undefined),
          });
          return version.code === 0 && version.stdout.trim() !== '';
        },
        { description: `engine of ${this.name} to answer docker version`, timeoutMs: this.context.engineReadyTimeoutMs, intervalMs: 200 },
      );
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new Error(`engine of ${this.name} did not start: ${reason}\n--- ${this.engineLogPath} (tail) ---\n${this.engineLogTail()}`, { cause: err });
    }
  }

  private processesNamed(names: readonly string[]): number[] {
    const inode = namespaceInode(this.mountNamespaceFile);
    if (inode === undefined) return [];
    return pidsInNamespaces('mnt', new Set([inode])).filter((pid) => names.includes(processName(pid) ?? ''));
  }

  /** Waits (bounded) for the named processes of this host to exit, then kills any that remain. */
  private async waitProcessesGone(names: readonly string[], timeoutMs: number): Promise<void> {
    try {
      await waitUntil(() => this.processesNamed(names).length === 0, { description: `${names.join(', ')} of ${this.name} to exit`, timeoutMs, intervalMs: 100 });
    } catch {
      await this.endProcessesNamed(names);
    }
  }

  private async endProcessesNamed(names: readonly string[]): Promise<void> {
    const left = await killAll(() => this.processesNamed(names), { timeoutMs: 15_000 });
    if (left.length > 0) throw new Error(`cannot end ${names.join(', ')} of ${this.name}: pids ${left.join(', ')} survive SIGKILL`);
  }

  private cliEnv(extra: RunOptions['env']): Record<string, string | undefined> {
    // DOCKER_HOST or a context from the caller's environment must not redirect the CLI to another engine.
    return { DOCKER_HOST: undefined, DOCKER_CONTEXT: undefined, DOCKER_CONFIG: this.context.dockerConfigDir, ...extra };
  }
}

function removeStalePidFile(path: string): void {
  let pid: number;
  try {
    pid = Number(readFileSync(path, 'utf8').trim());
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !isProcessAlive(pid)) rmSync(path, { force: true });
}

function signal(pid: number, name: NodeJS.Signals): void {
  if (!isProcessAlive(pid)) return;
  try {
    process.kill(pid, name);
  } catch {
    // Exited meanwhile.
  }
}
