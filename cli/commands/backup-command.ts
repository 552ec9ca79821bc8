import { isAbsolute, resolve } from 'node:path';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { generateBackupKey } from '../../volume-driver/backups/codec/encryption.js';
import type { CliContext } from '../main.js';
import { formatBytes, formatTable, printJson } from '../output.js';
import { ProgressBar } from '../progress-bar.js';

interface BackupSummary {
  volume: string;
  id: string;
  kind: string;
  parent: string | null;
  createdAt: string;
  encrypted: boolean;
  logicalBytes: number;
  changedBytes: number;
  storedBytes: number;
  durationMs: number;
  damaged?: string;
}

export async function runBackupCommand(context: CliContext): Promise<number> {
  const [sub, ...args] = context.positionals;
  switch (sub) {
    case 'create':
      return create(context, args);
    case 'ls':
    case 'list':
      return list(context, args);
    case 'verify':
      return verify(context, args);
    case 'restore':
      return restore(context, args);
    case 'keygen':
      return keygen(context, args);
    default:
      throw usage('backup create|ls|verify|restore|keygen ...');
  }
}

async function create(context: CliContext, args: readonly string[]): Promise<number> {
  const [volume] = args;
  const to = context.options.to;
  if (!volume || !to) throw usage('backup create VOLUME --to DIR [--key FILE] [--compression zstd|gzip|none] [--full] [--keep-last N]');
  const body = {
    volume,
    to: absolute(to),
    ...(context.options.key ? { key: absolute(context.options.key) } : {}),
    ...(context.options.compression ? { compression: context.options.compression } : {}),
    full: context.options.full === true,
    ...(context.options['keep-last'] ? { keepLast: Number(context.options['keep-last']) } : {}),
  };
  const result = await streamed<{ backup: BackupSummary; removedByRetention: string[]; skipped: string[]; warnings: string[] }>(context, '/v1/backups', body);
  if (context.json) printJson(result);
  else {
    const backup = result.backup;
    process.stdout.write(`${backup.kind} backup ${backup.volume}/${backup.id}: ${formatBytes(backup.logicalBytes)} in volume, ${formatBytes(backup.changedBytes)} changed, ${formatBytes(backup.storedBytes)} stored, ${(backup.durationMs / 1000).toFixed(1)} s\n`);
    if (result.removedByRetention.length > 0) process.stdout.write(`retention removed ${result.removedByRetention.join(', ')}\n`);
    for (const skipped of result.skipped) process.stderr.write(`left out: ${skipped}\n`);
    for (const warning of result.warnings) process.stderr.write(`warning: ${warning}\n`);
  }
  return 0;
}

async function list({ client, json }: CliContext, args: readonly string[]): Promise<number> {
  const [dir, volume] = args;
  if (!dir) throw usage('backup ls DIR [VOLUME]');
  const query = new URLSearchParams({ target: absolute(dir), ...(volume ? { volume } : {}) });
  const { backups } = await client.get<{ backups: BackupSummary[] }>(`/v1/backups?${query}`);
  if (json) printJson(backups);
  else {
    const rows = backups.map((backup) =>
      backup.damaged ? [`${backup.volume}/${backup.id}`, 'DAMAGED', '-', '-', '-', backup.damaged] : [`${backup.volume}/${backup.id}`, backup.kind, backup.createdAt, formatBytes(backup.logicalBytes), formatBytes(backup.storedBytes), backup.encrypted ? 'encrypted' : ''],
    );
    process.stdout.write(`${formatTable(['backup', 'kind', 'created', 'size', 'stored', ''], rows)}\n`);
  }
  return 0;
}

async function verify(context: CliContext, args: readonly string[]): Promise<number> {
  const reference = parseBackupReference(args[0], context.options.from, 'backup verify VOLUME/ID --from DIR | backup verify DIR/VOLUME/ID [--key FILE]');
  const result = await streamed<{ verified: Array<{ id: string; bytes: number }> }>(context, '/v1/backups/verify', { ...reference, ...(context.options.key ? { key: absolute(context.options.key) } : {}) });
  if (context.json) printJson(result);
  else process.stdout.write(`verified ${reference.volume}/${reference.id} and its chain: ${result.verified.map((entry) => entry.id).join(' <- ')}\n`);
  return 0;
}

async function restore(context: CliContext, args: readonly string[]): Promise<number> {
  const reference = parseBackupReference(args[0], context.options.from, 'backup restore VOLUME/ID --from DIR --to NEWVOLUME | backup restore DIR/VOLUME/ID --to NEWVOLUME [--key FILE]');
  const to = context.options.to;
  if (!to) throw usage('backup restore ... --to NEWVOLUME');
  const result = await streamed<{ volume: string; chain: string[] }>(context, '/v1/backups/restore', {
    ...reference,
    to,
    ...(context.options.key ? { key: absolute(context.options.key) } : {}),
    allowEscapingSymlinks: context.options['allow-escaping-symlinks'] === true,
  });
  if (context.json) printJson(result);
  else process.stdout.write(`restored ${reference.volume}/${reference.id} into volume ${result.volume} (${result.chain.length} backup${result.chain.length > 1 ? 's' : ''} applied, every file verified)\n`);
  return 0;
}

/** Writes a new random key locally: a key file is not agent state. */
async function keygen({ json }: CliContext, args: readonly string[]): Promise<number> {
  const [path] = args;
  if (!path) throw usage('backup keygen FILE');
  const key = await generateBackupKey(absolute(path));
  if (json) printJson({ path: absolute(path), keyId: key.id });
  else process.stdout.write(`wrote key ${key.id} to ${absolute(path)} (mode 0600); keep a copy: backups made with it cannot be restored without it\n`);
  return 0;
}

/** `VOLUME/ID` with --from DIR, or the backup's path `DIR/VOLUME/ID`. */
function parseBackupReference(argument: string | undefined, from: string | undefined, form: string): { target: string; volume: string; id: string } {
  if (!argument) throw usage(form);
  const parts = argument.split('/').filter((part) => part !== '');
  if (isAbsolute(argument) && parts.length >= 3 && from === undefined) {
    return { target: `/${parts.slice(0, -2).join('/')}`, volume: parts[parts.length - 2]!, id: parts[parts.length - 1]! };
  }
  if (parts.length === 2 && from !== undefined) return { target: absolute(from), volume: parts[0]!, id: parts[1]! };
  throw usage(form);
}

async function streamed<T>(context: CliContext, path: string, body: Record<string, unknown>): Promise<T> {
  const bar = new ProgressBar();
  try {
    return await context.client.stream<T>(path, body, (event) => bar.update(event));
  } finally {
    bar.finish();
  }
}

function absolute(path: string): string {
  return resolve(path);
}

function usage(form: string): BerthError {
  return new BerthError('ERR_INVALID_REQUEST', `usage: berth ${form}`);
}
