import { isBerthError, type BerthError, type BerthErrorCode } from '../../plugins/errors/berth-error.js';

/** Awaits `promise` and returns its BerthError of `code` (with a message matching `message`); fails on success or on any other error. */
export async function expectBerthError(promise: Promise<unknown>, code: BerthErrorCode, message?: RegExp): Promise<BerthError> {
  try {
    await promise;
  } catch (error) {
    if (isBerthError(error, code)) {
      if (message && !message.test(error.message)) throw new Error(`expected a message matching ${message}, got ${JSON.stringify(error.message)}`, { cause: error });
      return error;
    }
    throw new Error(`expected a BerthError ${code}, got ${String(error)}`, { cause: error });
  }
  throw new Error(`expected a BerthError ${code}, but the call succeeded`);
}
