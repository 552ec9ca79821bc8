import { BerthError } from '../plugins/errors/berth-error.js';
import { parseByteSize } from '../plugins/util/byte-size.js';
import { parseDuration } from '../plugins/util/duration.js';
import { isValidVolumeName } from './volume-name.js';

export type QuiesceMode = 'none' | 'pause' | 'exec';

/** Options as validated and normalised at create time; stored with the volume. */
export interface VolumeOptions {
  /** Owner of the volume's root directory (e.g. the uid a database runs as). */
  readonly uid?: number;
  readonly gid?: number;
  /** Permission bits of the volume's root directory. */
  readonly mode?: number;
  /** Most bytes the volume may hold (`size`); only backends with `capabilities.sizeLimit` enforce it. */
  readonly sizeBytes?: number;
  /** Take a scheduled snapshot this often (`snapshot-every`). */
  readonly snapshotEveryMs?: number;
  /** Keep this many scheduled snapshots (`snapshot-keep`); older ones are pruned. */
  readonly snapshotKeep?: number;
  /** How snapshots are made consistent for the containers using the volume (`quiesce`). */
  readonly quiesce?: QuiesceMode;
  /** Shell command run in each using container before a snapshot (`quiesce-pre`, with quiesce=exec). */
  readonly quiescePre?: string;
  /** Shell command run in each using container after a snapshot (`quiesce-post`). */
  readonly quiescePost?: string;
  /** Create the volume from a backup: the backup's directory, `<target>/<volume>/<id>` (`from-backup`). */
  readonly fromBackup?: string;
  /** Key file for an encrypted `from-backup` (`backup-key`). */
  readonly backupKey?: string;
  /** Create the volume as a clone of this snapshot (`from-snapshot=VOLUME@SNAPSHOT`). */
  readonly fromSnapshot?: { readonly volume: string; readonly snapshot: string };
  /** Copies kept of the volume, the owner's included (`replicas`; default 1, on a shared etcd only). */
  readonly replicas?: number;
  /** Hosts that keep the copies (`replica-hosts`, comma-separated); chosen automatically when absent. */
  readonly replicaHosts?: readonly string[];
  /** Whether a live replica takes over by itself when the owner host is gone (`failover`; default manual). */
  readonly failover?: 'auto' | 'manual';
  /** How often the owner ships changes to the replicas (`replicate-every`; default 1s). */
  readonly replicateEveryMs?: number;
}

interface OptionSpec {
  readonly description: string;
  readonly apply: (value: string, into: { -readonly [K in keyof VolumeOptions]?: VolumeOptions[K] }) => void;
}

const MAX_ID = 2 ** 32 - 2;
/** Smaller limits leave no room for a filesystem's own metadata; every write would fail. */
const MIN_SIZE_BYTES = 1024 * 1024;
const MIN_SNAPSHOT_INTERVAL_MS = 10_000;
const MAX_REPLICAS = 9;
const HOST_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

function absolutePathOption(key: string, value: string): string {
  if (!value.startsWith('/') || value.includes('\0') || value.split('/').includes('..')) throw new BerthError('ERR_INVALID_OPTION', `option ${key}=${JSON.stringify(value)} must be an absolute path without ".."`);
  return value;
}

function nonEmptyCommand(key: string, value: string): string {
  if (value.trim() === '' || value.includes('\0')) throw new BerthError('ERR_INVALID_OPTION', `option ${key} must be a non-empty shell command`);
  return value;
}

function parseId(key: string, value: string): number {
  if (!/^\d{1,10}$/.test(value) || Number(value) > MAX_ID) throw new BerthError('ERR_INVALID_OPTION', `option ${key}=${JSON.stringify(value)} must be a numeric id between 0 and ${MAX_ID}`);
  return Number(value);
}

const OPTION_SPECS: Readonly<Record<string, OptionSpec>> = {
  uid: { description: 'numeric owner of the volume root', apply: (value, into) => (into.uid = parseId('uid', value)) },
  gid: { description: 'numeric group of the volume root', apply: (value, into) => (into.gid = parseId('gid', value)) },
  mode: {
    description: 'octal permissions of the volume root, e.g. 0750',
    apply: (value, into) => {
      if (!/^0?[0-7]{3,4}$/.test(value)) throw new BerthError('ERR_INVALID_OPTION', `option mode=${JSON.stringify(value)} must be octal permissions such as 0755`);
      into.mode = parseInt(value, 8);
    },
  },
  size: {
    description: 'most bytes the volume may hold, e.g. 10G (units K, M, G, T; plain bytes accepted; btrfs backend)',
    apply: (value, into) => {
      const bytes = parseByteSize(value);
      if (bytes === undefined || bytes < MIN_SIZE_BYTES) {
        throw new BerthError('ERR_INVALID_OPTION', `option size=${JSON.stringify(value)} must be a size of at least 1M such as 512M or 10G`);
      }
      into.sizeBytes = bytes;
    },
  },
  'snapshot-every': {
    description: 'take a scheduled snapshot this often, e.g. 15m, 1h, 1d (at least 10s)',
    apply: (value, into) => {
      const ms = parseDuration(value);
      if (ms === undefined || ms < MIN_SNAPSHOT_INTERVAL_MS) throw new BerthError('ERR_INVALID_OPTION', `option snapshot-every=${JSON.stringify(value)} must be a duration of at least 10s such as 15m or 1h`);
      into.snapshotEveryMs = ms;
    },
  },
  'snapshot-keep': {
    description: 'how many scheduled snapshots to keep (older ones are pruned; manual snapshots never are)',
    apply: (value, into) => {
      if (!/^\d{1,6}$/.test(value) || Number(value) < 1) throw new BerthError('ERR_INVALID_OPTION', `option snapshot-keep=${JSON.stringify(value)} must be a whole number of at least 1`);
      into.snapshotKeep = Number(value);
    },
  },
  quiesce: {
    description: 'consistency of snapshots for running containers: none (crash-consistent), pause (freeze them), exec (run quiesce-pre/quiesce-post in them)',
    apply: (value, into) => {
      if (value !== 'none' && value !== 'pause' && value !== 'exec') throw new BerthError('ERR_INVALID_OPTION', `option quiesce=${JSON.stringify(value)} must be none, pause or exec`);
      into.quiesce = value;
    },
  },
  'quiesce-pre': {
    description: 'with quiesce=exec: shell command run in each container using the volume before a snapshot (e.g. a database checkpoint)',
    apply: (value, into) => (into.quiescePre = nonEmptyCommand('quiesce-pre', value)),
  },
  'quiesce-post': {
    description: 'with quiesce=exec: shell command run in each container after the snapshot',
    apply: (value, into) => (into.quiescePost = nonEmptyCommand('quiesce-post', value)),
  },
  'from-backup': {
    description: 'create the volume from a backup: the absolute path of the backup, TARGET/VOLUME/ID (see berth backup ls)',
    apply: (value, into) => (into.fromBackup = absolutePathOption('from-backup', value)),
  },
  'backup-key': {
    description: 'with from-backup: absolute path of the key file of an encrypted backup',
    apply: (value, into) => (into.backupKey = absolutePathOption('backup-key', value)),
  },
  replicas: {
    description: `copies of the volume kept on different hosts, the owner's included (1 to ${MAX_REPLICAS}; needs a shared etcd store and the btrfs backend)`,
    apply: (value, into) => {
      if (!/^\d$/.test(value) || Number(value) < 1 || Number(value) > MAX_REPLICAS) throw new BerthError('ERR_INVALID_OPTION', `option replicas=${JSON.stringify(value)} must be a whole number from 1 to ${MAX_REPLICAS}`);
      into.replicas = Number(value);
    },
  },
  'replica-hosts': {
    description: 'with replicas: the hosts that keep the copies, comma-separated (default: chosen among live hosts)',
    apply: (value, into) => {
      const hosts = value.split(',').map((host) => host.trim());
      if (hosts.some((host) => !HOST_NAME.test(host))) throw new BerthError('ERR_INVALID_OPTION', `option replica-hosts=${JSON.stringify(value)} must be host names separated by commas`);
      into.replicaHosts = hosts;
    },
  },
  failover: {
    description: 'when the owner host is gone: auto (a Mount elsewhere promotes the most up-to-date live replica) or manual (default; berth volume promote)',
    apply: (value, into) => {
      if (value !== 'auto' && value !== 'manual') throw new BerthError('ERR_INVALID_OPTION', `option failover=${JSON.stringify(value)} must be auto or manual`);
      into.failover = value;
    },
  },
  'replicate-every': {
    description: 'how often the owner ships changes to the replicas, e.g. 1s, 30s (at least 1s; default 1s)',
    apply: (value, into) => {
      const ms = parseDuration(value);
      if (ms === undefined || ms < 1000) throw new BerthError('ERR_INVALID_OPTION', `option replicate-every=${JSON.stringify(value)} must be a duration of at least 1s such as 2s`);
      into.replicateEveryMs = ms;
    },
  },
  'from-snapshot': {
    description: 'create the volume as a copy of a snapshot: VOLUME@SNAPSHOT',
    apply: (value, into) => {
      const at = value.indexOf('@');
      const volume = value.slice(0, at);
      const snapshot = value.slice(at + 1);
      if (at <= 0 || !isValidVolumeName(volume) || !isValidVolumeName(snapshot)) {
        throw new BerthError('ERR_INVALID_OPTION', `option from-snapshot=${JSON.stringify(value)} must name a snapshot as VOLUME@SNAPSHOT`);
      }
      into.fromSnapshot = { volume, snapshot };
    },
  },
};

export const KNOWN_VOLUME_OPTIONS: readonly string[] = Object.keys(OPTION_SPECS).sort();

/** Refuses unknown keys (naming the known ones) and malformed values, before anything is created. */
export function parseVolumeOptions(raw: Readonly<Record<string, string>>): VolumeOptions {
  const parsed: { -readonly [K in keyof VolumeOptions]?: VolumeOptions[K] } = {};
  const unknown = Object.keys(raw).filter((key) => !(key in OPTION_SPECS)).sort();
  if (unknown.length > 0) {
    throw new BerthError('ERR_INVALID_OPTION', `unknown option${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; known options: ${KNOWN_VOLUME_OPTIONS.join(', ')}`);
  }
  for (const [key, value] of Object.entries(raw)) OPTION_SPECS[key]?.apply(value, parsed);
  if (parsed.snapshotKeep !== undefined && parsed.snapshotEveryMs === undefined) throw new BerthError('ERR_INVALID_OPTION', 'option snapshot-keep needs snapshot-every');
  if (parsed.fromBackup !== undefined && parsed.fromSnapshot !== undefined) throw new BerthError('ERR_INVALID_OPTION', 'options from-backup and from-snapshot exclude each other');
  if (parsed.backupKey !== undefined && parsed.fromBackup === undefined) throw new BerthError('ERR_INVALID_OPTION', 'option backup-key needs from-backup');
  if (parsed.quiesce === 'exec' && parsed.quiescePre === undefined) throw new BerthError('ERR_INVALID_OPTION', 'option quiesce=exec needs quiesce-pre (the command that makes the data consistent)');
  if ((parsed.quiescePre !== undefined || parsed.quiescePost !== undefined) && parsed.quiesce !== 'exec') {
    throw new BerthError('ERR_INVALID_OPTION', 'options quiesce-pre and quiesce-post need quiesce=exec');
  }
  if (parsed.replicaHosts !== undefined && (parsed.replicas ?? 1) < 2) throw new BerthError('ERR_INVALID_OPTION', 'option replica-hosts needs replicas of at least 2');
  if ((parsed.failover !== undefined || parsed.replicateEveryMs !== undefined) && (parsed.replicas ?? 1) < 2) {
    throw new BerthError('ERR_INVALID_OPTION', 'options failover and replicate-every need replicas of at least 2');
  }
  return Object.freeze(parsed);
}

export function describeVolumeOptions(): Record<string, string> {
  return Object.fromEntries(KNOWN_VOLUME_OPTIONS.map((key) => [key, OPTION_SPECS[key]?.description ?? '']));
}
