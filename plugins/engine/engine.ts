/** What the agent needs to know from the local Docker Engine. */
export interface EngineContainer {
  readonly id: string;
  readonly name: string;
  /** Engine state: created, running, paused, restarting, removing, exited, dead. */
  readonly state: string;
  readonly mounts: readonly { readonly name: string; readonly driver: string }[];
}

export interface EngineInfo {
  readonly version: string;
  readonly apiVersion: string;
}

export interface Engine {
  readonly endpoint: string;
  info(): Promise<EngineInfo>;
  listContainers(): Promise<readonly EngineContainer[]>;
  /** Stops a container (SIGTERM, then SIGKILL after `timeoutSeconds`); succeeds if already stopped. */
  stopContainer(id: string, timeoutSeconds: number): Promise<void>;
  /** Starts a stopped container; succeeds if already running. */
  startContainer(id: string): Promise<void>;
  /** Freezes every process of a running container (cgroup freezer); succeeds if already paused. */
  pauseContainer(id: string): Promise<void>;
  unpauseContainer(id: string): Promise<void>;
  /** Runs a command inside a running container and waits for it. */
  exec(id: string, command: readonly string[], timeoutMs: number): Promise<ExecResult>;
}

export interface ExecResult {
  readonly exitCode: number;
  /** Combined stdout and stderr, truncated to a few KiB for messages. */
  readonly output: string;
}

/** Container states in which the engine holds a volume mounted, or is about to. */
export const ACTIVE_CONTAINER_STATES: ReadonlySet<string> = new Set(['created', 'running', 'paused', 'restarting', 'removing']);
