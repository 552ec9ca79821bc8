import Docker from 'dockerode';
import { BerthError, translateError } from '../errors/berth-error.js';
import type { Engine, EngineContainer, EngineInfo, EngineNetwork, EngineNetworks, EngineNetworkSpec, ExecResult } from './engine.js';

/** The engine through its API socket (dockerode), with a short timeout: never hold a plugin call hostage. */
export class DockerEngine implements Engine, EngineNetworks {
  private readonly client: Docker;

  constructor(
    readonly endpoint: string,
    timeoutMs = 5000,
  ) {
    this.client = new Docker({ ...parseDockerHost(endpoint), timeout: timeoutMs });
  }

  async info(): Promise<EngineInfo> {
    try {
      const version = await this.client.version();
      return { version: version.Version, apiVersion: version.ApiVersion };
    } catch (error) {
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `engine at ${this.endpoint} is unreachable`);
    }
  }

  async listContainers(): Promise<readonly EngineContainer[]> {
    try {
      const containers = await this.client.listContainers({ all: true });
      return containers.map((container) => ({
        id: container.Id,
        name: (container.Names[0] ?? container.Id).replace(/^\//, ''),
        state: container.State,
        mounts: container.Mounts.filter((mount) => mount.Type === 'volume' && typeof mount.Name === 'string').map((mount) => ({
          name: mount.Name as string,
          driver: mount.Driver ?? '',
        })),
      }));
    } catch (error) {
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `cannot list containers of the engine at ${this.endpoint}`);
    }
  }

  async stopContainer(id: string, timeoutSeconds: number): Promise<void> {
    try {
      await this.client.getContainer(id).stop({ t: timeoutSeconds });
    } catch (error) {
      if (statusCode(error) === 304) return; // already stopped
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `cannot stop container ${id}`);
    }
  }

  async pauseContainer(id: string): Promise<void> {
    try {
      await this.client.getContainer(id).pause();
    } catch (error) {
      if (statusCode(error) === 409 && /already paused/i.test(errorText(error))) return;
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `cannot pause container ${id}`);
    }
  }

  async unpauseContainer(id: string): Promise<void> {
    try {
      await this.client.getContainer(id).unpause();
    } catch (error) {
      if (statusCode(error) === 409 && /not paused/i.test(errorText(error))) return;
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `cannot unpause container ${id}`);
    }
  }

  async exec(id: string, command: readonly string[], timeoutMs: number): Promise<ExecResult> {
    try {
      const exec = await this.client.getContainer(id).exec({ Cmd: [...command], AttachStdout: true, AttachStderr: true });
      const stream = await exec.start({ hijack: true, stdin: false });
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (chunk: Buffer) => {
        if (size < MAX_EXEC_OUTPUT) chunks.push(chunk);
        size += chunk.length;
      });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          stream.destroy();
          reject(new Error(`command did not finish within ${timeoutMs} ms`));
        }, timeoutMs);
        stream.once('end', () => (clearTimeout(timer), resolve()));
        stream.once('close', () => (clearTimeout(timer), resolve()));
        stream.once('error', (error: Error) => (clearTimeout(timer), reject(error)));
      });
      const inspected = await exec.inspect();
      return { exitCode: inspected.ExitCode ?? -1, output: demultiplex(Buffer.concat(chunks)).slice(0, MAX_EXEC_OUTPUT) };
    } catch (error) {
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `cannot run ${JSON.stringify(command.join(' '))} in container ${id}`);
    }
  }

  async listNetworks(driver: string): Promise<readonly EngineNetwork[]> {
    try {
      // The list endpoint leaves Containers empty: inspect each network of the driver.
      const listed = (await this.client.listNetworks({ filters: { driver: [driver] } })) as NetworkInspect[];
      const networks = await Promise.all(listed.filter((network) => network.Driver === driver).map((network) => this.inspectNetwork(network.Id)));
      return networks.filter((network): network is EngineNetwork => network !== undefined);
    } catch (error) {
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `cannot list networks of the engine at ${this.endpoint}`);
    }
  }

  async inspectNetwork(idOrName: string): Promise<EngineNetwork | undefined> {
    try {
      return toEngineNetwork((await this.client.getNetwork(idOrName).inspect()) as NetworkInspect);
    } catch (error) {
      if (statusCode(error) === 404) return undefined;
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `cannot inspect network ${idOrName}`);
    }
  }

  async createNetwork(spec: EngineNetworkSpec): Promise<string> {
    try {
      const created = await this.client.createNetwork({
        Name: spec.name,
        Driver: spec.driver,
        CheckDuplicate: true,
        Internal: spec.internal,
        Options: { ...spec.options },
        Labels: { ...spec.labels },
        IPAM: {
          Driver: spec.ipamDriver,
          Config: spec.subnet ? [{ Subnet: spec.subnet, ...(spec.gateway ? { Gateway: spec.gateway } : {}), ...(spec.ipRange ? { IPRange: spec.ipRange } : {}) }] : [],
          Options: { ...spec.ipamOptions },
        },
      });
      return created.id;
    } catch (error) {
      if (statusCode(error) === 409) throw translateError(error, 'ERR_NETWORK_EXISTS', `the engine already has a network named ${spec.name}`);
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `cannot create network ${spec.name}: ${errorText(error)}`);
    }
  }

  async removeNetwork(idOrName: string): Promise<void> {
    try {
      await this.client.getNetwork(idOrName).remove();
    } catch (error) {
      if (statusCode(error) === 404) return;
      if (statusCode(error) === 403 || /active endpoints/i.test(errorText(error))) {
        throw translateError(error, 'ERR_NETWORK_IN_USE', `network ${idOrName} still has containers on this host`);
      }
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `cannot remove network ${idOrName}: ${errorText(error)}`);
    }
  }

  async startContainer(id: string): Promise<void> {
    try {
      await this.client.getContainer(id).start();
    } catch (error) {
      if (statusCode(error) === 304) return; // already running
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `cannot start container ${id}`);
    }
  }
}

/** What the engine answers for a network (GET /networks and /networks/{id}). */
interface NetworkInspect {
  Id: string;
  Name: string;
  Driver: string;
  Labels?: Record<string, string> | null;
  Containers?: Record<string, { EndpointID?: string; IPv4Address?: string; MacAddress?: string }> | null;
}

function toEngineNetwork(network: NetworkInspect): EngineNetwork {
  return {
    id: network.Id,
    name: network.Name,
    driver: network.Driver,
    labels: network.Labels ?? {},
    endpoints: Object.entries(network.Containers ?? {}).map(([containerId, endpoint]) => ({
      containerId,
      endpointId: endpoint.EndpointID ?? '',
      ipv4: (endpoint.IPv4Address ?? '').split('/')[0] ?? '',
      mac: endpoint.MacAddress ?? '',
    })),
  };
}

function statusCode(error: unknown): number | undefined {
  return typeof error === 'object' && error !== null && 'statusCode' in error ? Number((error as { statusCode: unknown }).statusCode) : undefined;
}

const MAX_EXEC_OUTPUT = 4096;

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The engine frames a non-TTY exec's output as 8-byte headers plus payloads; keep the payloads. */
function demultiplex(raw: Buffer): string {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= raw.length && raw[offset]! <= 2 && raw[offset + 1] === 0) {
    const length = raw.readUInt32BE(offset + 4);
    parts.push(raw.subarray(offset + 8, offset + 8 + length));
    offset += 8 + length;
  }
  return (parts.length > 0 ? Buffer.concat(parts) : raw).toString('utf8');
}

function parseDockerHost(endpoint: string): Docker.DockerOptions {
  if (endpoint.startsWith('unix://')) return { socketPath: endpoint.slice('unix://'.length) };
  const url = new URL(endpoint.replace(/^tcp:/, 'http:'));
  if (!url.port) throw new BerthError('ERR_INVALID_CONFIG', `docker host ${endpoint} names no port`);
  return { host: url.hostname, port: Number(url.port), protocol: 'http' };
}
