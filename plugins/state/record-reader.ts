import { BerthError } from '../errors/berth-error.js';

export type Fields = Record<string, unknown>;

/**
 * Field readers for the JSON records typed repositories keep in the store. A damaged record is reported
 * as ERR_STATE_CORRUPT naming its key, never half-trusted; `what` says what kind of record it is.
 */
export function recordReader(what: string) {
  const corrupt = (key: string, reason: string): BerthError => new BerthError('ERR_STATE_CORRUPT', `${what} ${key} is damaged: ${reason}`);
  return {
    corrupt,
    object(key: string, text: string): Fields {
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        throw corrupt(key, 'not JSON');
      }
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw corrupt(key, 'not an object');
      return value as Fields;
    },
    str(key: string, fields: Fields, name: string): string {
      const value = fields[name];
      if (typeof value !== 'string' || value.length === 0) throw corrupt(key, `${name} is missing`);
      return value;
    },
    optionalStr(key: string, fields: Fields, name: string): string | undefined {
      const value = fields[name];
      if (value === undefined) return undefined;
      if (typeof value !== 'string') throw corrupt(key, `${name} is not a string`);
      return value;
    },
    optionalInt(key: string, fields: Fields, name: string): number | undefined {
      const value = fields[name];
      if (value === undefined) return undefined;
      if (!Number.isInteger(value)) throw corrupt(key, `${name} is not an integer`);
      return value as number;
    },
  };
}
