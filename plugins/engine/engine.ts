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
}

/** Container states in which the engine holds a volume mounted, or is about to. */
export const ACTIVE_CONTAINER_STATES: ReadonlySet<string> = new Set(['created', 'running', 'paused', 'restarting', 'removing']);
