import { BerthError } from '../plugins/errors/berth-error.js';
import { optionalStringMap } from '../plugins/wire/request-fields.js';

/** What `docker network create -o k=v` may set on a Berth network. */
export interface NetworkOptions {
  readonly mtu?: number;
  readonly vni?: number;
}

export const NETWORK_OPTION_KEYS = ['mtu', 'vni'] as const;

/** Options the engine adds on its own, not the user's (docker-plugin-protocol.md §3.2). */
const ENGINE_OPTION_PREFIX = 'com.docker.network.';

export const MIN_MTU = 576;
export const MAX_MTU = 9000;
export const MAX_VNI = 0xffffff;

/** Validates the user's `-o` options; unknown keys are refused with the list of known ones. */
export function parseNetworkOptions(options: Readonly<Record<string, string>>): NetworkOptions {
  const result: { mtu?: number; vni?: number } = {};
  for (const [key, value] of Object.entries(options)) {
    if (key.startsWith(ENGINE_OPTION_PREFIX)) continue;
    switch (key) {
      case 'mtu':
        result.mtu = integerOption(key, value, MIN_MTU, MAX_MTU);
        break;
      case 'vni':
        result.vni = integerOption(key, value, 1, MAX_VNI);
        break;
      default:
        throw new BerthError('ERR_INVALID_OPTION', `unknown network option ${JSON.stringify(key)}; known options: ${NETWORK_OPTION_KEYS.join(', ')}`);
    }
  }
  return result;
}

function integerOption(key: string, value: string, min: number, max: number): number {
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new BerthError('ERR_INVALID_OPTION', `network option ${key}=${JSON.stringify(value)} must be a whole number from ${min} to ${max}`);
  }
  return Number(value);
}

/** The user's `-o` options from CreateNetwork's option map (`com.docker.network.generic`). */
export function genericOptions(options: Record<string, unknown>): Record<string, string> {
  return optionalStringMap(options, 'com.docker.network.generic');
}
