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
}

export async function runVolumeCommand(context: CliContext): Promise<number> {
  const [sub, ...args] = context.positionals;
  if (sub === 'ls' || sub === 'list') return listVolumes(context);
  if (sub === 'inspect') return inspectVolumes(context, args);
  throw new BerthError('ERR_INVALID_REQUEST', `unknown volume command ${JSON.stringify(sub ?? '')}; use: volume ls | volume inspect NAME`);
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
        '',
      ].join('\n'),
    );
  }
  return 0;
}
