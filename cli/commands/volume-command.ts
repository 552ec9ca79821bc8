import { BerthError } from '../../plugins/errors/berth-error.js';
import type { CliContext } from '../main.js';
import { formatBytes, formatTable, printJson } from '../output.js';

interface VolumeReply {
  name: string;
  mountpoint: string;
  createdAt: string;
  backend: string;
  options: Record<string, string>;
  mountCount: number;
  mounts: Record<string, number>;
  usedBytes: number | null;
  usageMeasuredAt: string | null;
  replication?: ReplicationReply;
}

interface ReplicationReply {
  owner: string;
  ownerAlive?: boolean;
  epoch: number;
  failover?: string;
  replicas?: { host: string; alive: boolean; state: string; snapshot: string | null; lagSeconds: number | null; lagBytes: number | null }[];
  replicaHosts?: string[];
}

export async function runVolumeCommand(context: CliContext): Promise<number> {
  const [sub, ...args] = context.positionals;
  if (sub === 'ls' || sub === 'list') return listVolumes(context);
  if (sub === 'inspect') return inspectVolumes(context, args);
  if (sub === 'promote') return promoteVolume(context, args);
  if (sub === 'replicate') return replicateVolume(context, args);
  throw new BerthError('ERR_INVALID_REQUEST', `unknown volume command ${JSON.stringify(sub ?? '')}; use: volume ls | volume inspect NAME | volume promote NAME | volume replicate NAME --to HOST`);
}

/** Manual failover: this host takes the volume over from its gone owner. */
async function promoteVolume({ client, json }: CliContext, args: readonly string[]): Promise<number> {
  const [name] = args;
  if (!name || args.length !== 1) throw new BerthError('ERR_INVALID_REQUEST', 'volume promote needs exactly one volume name');
  const { volume } = await client.post<{ volume: { owner: string; epoch: number; base?: string } }>(`/v1/volumes/${encodeURIComponent(name)}/promote`, {});
  if (json) printJson(volume);
  else process.stdout.write(`volume ${name} is now owned by ${volume.owner} (epoch ${volume.epoch}${volume.base ? `, data as of snapshot ${volume.base}` : ''})\n`);
  return 0;
}

async function replicateVolume({ client, json, options }: CliContext, args: readonly string[]): Promise<number> {
  const [name] = args;
  const host = options.to;
  if (!name || !host || args.length !== 1) throw new BerthError('ERR_INVALID_REQUEST', 'usage: berth volume replicate NAME --to HOST');
  const { volume } = await client.post<{ volume: { replicaHosts: string[] } }>(`/v1/volumes/${encodeURIComponent(name)}/replicas`, { host });
  if (json) printJson(volume);
  else process.stdout.write(`volume ${name} is kept on ${volume.replicaHosts.join(', ')} besides its owner\n`);
  return 0;
}

function replicationLines(replication: ReplicationReply | undefined): string[] {
  if (!replication) return [];
  const lines = [`owner:      ${replication.owner}${replication.ownerAlive === false ? ' (gone)' : ''}, epoch ${replication.epoch}${replication.failover ? `, failover ${replication.failover}` : ''}`];
  for (const replica of replication.replicas ?? []) {
    const lag = replica.lagSeconds === null ? 'unknown' : `${replica.lagSeconds}s${replica.lagBytes === null ? '' : `, ${formatBytes(replica.lagBytes)}`}`;
    lines.push(`replica:    ${replica.host}${replica.alive ? '' : ' (gone)'} ${replica.state}, behind ${lag}`);
  }
  return lines;
}

async function listVolumes({ client, json }: CliContext): Promise<number> {
  const { volumes } = await client.get<{ volumes: VolumeReply[] }>('/v1/volumes');
  if (json) {
    printJson(volumes);
    return 0;
  }
  const rows = volumes.map((volume) => [volume.name, volume.backend, String(volume.mountCount), formatBytes(volume.usedBytes), volume.createdAt]);
  process.stdout.write(`${formatTable(['name', 'backend', 'mounts', 'used', 'created'], rows)}\n`);
  return 0;
}

async function inspectVolumes({ client, json }: CliContext, names: readonly string[]): Promise<number> {
  if (names.length === 0) throw new BerthError('ERR_INVALID_REQUEST', 'volume inspect needs at least one volume name');
  const volumes: VolumeReply[] = [];
  for (const name of names) volumes.push((await client.get<{ volume: VolumeReply }>(`/v1/volumes/${encodeURIComponent(name)}`)).volume);
  if (json) {
    printJson(volumes);
    return 0;
  }
  for (const volume of volumes) {
    const options = Object.entries(volume.options).map(([key, value]) => `${key}=${value}`).join(', ') || '-';
    process.stdout.write(
      [
        `name:       ${volume.name}`,
        `mountpoint: ${volume.mountpoint}`,
        `created:    ${volume.createdAt}`,
        `backend:    ${volume.backend}`,
        `options:    ${options}`,
        `used:       ${formatBytes(volume.usedBytes)}`,
        `mounts:     ${volume.mountCount}`,
        ...replicationLines(volume.replication),
        '',
      ].join('\n'),
    );
  }
  return 0;
}
