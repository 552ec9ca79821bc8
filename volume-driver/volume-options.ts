import { BerthError } from '../plugins/errors/berth-error.js';

/** Options as validated and normalised at create time; stored with the volume. */
export interface VolumeOptions {
  /** Owner of the volume's root directory (e.g. the uid a database runs as). */
  readonly uid?: number;
  readonly gid?: number;
  /** Permission bits of the volume's root directory. */
  readonly mode?: number;
}

interface OptionSpec {
  readonly description: string;
  readonly apply: (value: string, into: { -readonly [K in keyof VolumeOptions]?: VolumeOptions[K] }) => void;
}

const MAX_ID = 2 ** 32 - 2;

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
  return Object.freeze(parsed);
}

export function describeVolumeOptions(): Record<string, string> {
  return Object.fromEntries(KNOWN_VOLUME_OPTIONS.map((key) => [key, OPTION_SPECS[key]?.description ?? '']));
}
