import { BerthError } from '../errors/berth-error.js';

/** A required string field of a plugin request; a retried call may arrive with an empty body. */
export function requiredString(body: Record<string, unknown>, field: string): string {
  const value = body[field];
  if (typeof value !== 'string' || value.length === 0) {
    throw new BerthError('ERR_INVALID_REQUEST', `request has no ${field}${Object.keys(body).length === 0 ? ' (empty body)' : ''}`);
  }
  return value;
}

/** An optional string map (`Opts`, `Options`); the engine sends `null` when none were given. */
export function optionalStringMap(body: Record<string, unknown>, field: string): Record<string, string> {
  const value = body[field];
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new BerthError('ERR_INVALID_REQUEST', `${field} must be an object of strings`);
  const result: Record<string, string> = {};
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') throw new BerthError('ERR_INVALID_OPTION', `option ${key} must be a string, got ${JSON.stringify(entry)}`);
    result[key] = entry;
  }
  return result;
}

/** An optional string field; the engine sends it empty (or leaves it out) when unset. */
export function optionalString(body: Record<string, unknown>, field: string): string {
  const value = body[field];
  return typeof value === 'string' ? value : '';
}
