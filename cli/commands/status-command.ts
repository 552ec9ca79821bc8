import type { CliContext } from '../main.js';
import { printJson } from '../output.js';

interface StatusReply {
  name: string;
  version: string;
  pid: number;
  uptimeSeconds: number;
  root: string;
  store: string;
  backend: string;
  pluginSocket: string;
  adminSocket: string;
  volumes: { total: number; mounted: number };
  engine: { endpoint: string; reachable: boolean; version?: string; error?: string };
}

export async function runStatusCommand({ client, json }: CliContext): Promise<number> {
  const status = await client.get<StatusReply>('/v1/status');
  if (json) {
    printJson(status);
    return 0;
  }
  const lines = [
    `agent:     ${status.name} ${status.version} (pid ${status.pid}, up ${status.uptimeSeconds}s)`,
    `data root: ${status.root} (backend ${status.backend})`,
    `state:     ${status.store}`,
    `sockets:   plugin ${status.pluginSocket}, admin ${status.adminSocket}`,
    `volumes:   ${status.volumes.total} (${status.volumes.mounted} mounted)`,
    `engine:    ${status.engine.reachable ? `Docker Engine ${status.engine.version} at ${status.engine.endpoint}` : `unreachable at ${status.engine.endpoint}: ${status.engine.error}`}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}
