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

/** A network as the engine knows it (its own ID and name) with the endpoints of its running containers. */
export interface EngineNetwork {
  readonly id: string;
  readonly name: string;
  readonly driver: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly endpoints: readonly { readonly containerId: string; readonly endpointId: string; readonly ipv4: string; readonly mac: string }[];
}

export interface EngineNetworkSpec {
  readonly name: string;
  readonly driver: string;
  readonly ipamDriver: string;
  /** Absent: the IPAM driver picks a subnet (and gateway). */
  readonly subnet?: string;
  readonly gateway?: string;
  readonly ipRange?: string;
  readonly ipamOptions: Readonly<Record<string, string>>;
  readonly options: Readonly<Record<string, string>>;
  readonly internal: boolean;
  readonly labels: Readonly<Record<string, string>>;
}

/** The engine's network API, for drivers whose networks must appear on every host's engine. */
export interface EngineNetworks {
  readonly endpoint: string;
  /** Networks of one driver, with their endpoints. */
  listNetworks(driver: string): Promise<readonly EngineNetwork[]>;
  /** By the engine's ID or name; undefined when there is none. */
  inspectNetwork(idOrName: string): Promise<EngineNetwork | undefined>;
  /** Returns the engine's ID of the new network. */
  createNetwork(spec: EngineNetworkSpec): Promise<string>;
  /** Succeeds if the network is already gone; fails with ERR_NETWORK_IN_USE while containers use it. */
  removeNetwork(idOrName: string): Promise<void>;
}
