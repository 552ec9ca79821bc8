import { BerthError, errorMessage } from '../../plugins/errors/berth-error.js';
import { NetlinkError } from './netlink-error.js';

/**
 * Translates a failure of `action` ("creating vxlan bvx4097") once, where it happened, into an
 * ERR_DATAPLANE BerthError keeping the cause; a kernel refusal also puts its errno name in
 * `details.errno` for callers that branch on it. BerthErrors pass through unchanged.
 */
export function dataplaneError(action: string, error: unknown): BerthError {
  if (error instanceof BerthError) return error;
  const options = error instanceof NetlinkError ? { cause: error, details: { errno: error.code } } : { cause: error };
  return new BerthError('ERR_DATAPLANE', `${action}: ${errorMessage(error)}`, options);
}
