import Docker from 'dockerode';
import { BerthError, translateError } from '../errors/berth-error.js';
import type { Engine, EngineContainer, EngineInfo } from './engine.js';

/** The engine through its API socket (dockerode), with a short timeout: never hold a plugin call hostage. */
export class DockerEngine implements Engine {
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

  async startContainer(id: string): Promise<void> {
    try {
      await this.client.getContainer(id).start();
    } catch (error) {
      if (statusCode(error) === 304) return; // already running
      throw translateError(error, 'ERR_ENGINE_UNAVAILABLE', `cannot start container ${id}`);
    }
  }
}

function statusCode(error: unknown): number | undefined {
  return typeof error === 'object' && error !== null && 'statusCode' in error ? Number((error as { statusCode: unknown }).statusCode) : undefined;
}

function parseDockerHost(endpoint: string): Docker.DockerOptions {
  if (endpoint.startsWith('unix://')) return { socketPath: endpoint.slice('unix://'.length) };
  const url = new URL(endpoint.replace(/^tcp:/, 'http:'));
  if (!url.port) throw new BerthError('ERR_INVALID_CONFIG', `docker host ${endpoint} names no port`);
  return { host: url.hostname, port: Number(url.port), protocol: 'http' };
}
