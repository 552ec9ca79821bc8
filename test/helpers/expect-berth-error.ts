import { isBerthError, type BerthError, type BerthErrorCode } from '../../plugins/errors/berth-error.js';

/** Awaits `promise` and returns its BerthError of `code`; fails on success or on any other error. */
export async function expectBerthError(promise: Promise<unknown>, code: BerthErrorCode): Promise<BerthError> {
  try {
    await promise;
  } catch (error) {
    if (isBerthError(error, code)) return error;
    throw new Error(`expected a BerthError ${code}, got ${String(error)}`, { cause: error });
  }
  throw new Error(`expected a BerthError ${code}, but the call succeeded`);
}
