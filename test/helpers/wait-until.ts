// Every wait in the test helpers is bounded both in time and in number of attempts,
// so a broken engine or agent fails the test instead of hanging it.

export interface WaitOptions {
  /** What is awaited, for the error message ("engine hA to answer"). */
  description: string;
  timeoutMs: number;
  /** Pause between attempts. Default 100 ms. */
  intervalMs?: number;
}

/**
 * Calls `probe` until it returns a value other than undefined/false and resolves with that value.
 * A probe that throws counts as "not yet"; its last error becomes the cause of the timeout error.
 * A probe may throw an `AbortWait` to stop waiting at once (e.g. the awaited process died).
 */
export async function waitUntil<T>(probe: () => Promise<T | undefined | false> | T | undefined | false, options: WaitOptions): Promise<T> {
  const interval = options.intervalMs ?? 100;
  const deadline = Date.now() + options.timeoutMs;
  const maxAttempts = Math.ceil(options.timeoutMs / Math.max(interval, 1)) + 1;
  let lastError: unknown;
  for (let attempt = 0; attempt < maxAttempts; attempt++) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      if (err instanceof AbortWait) throw err.cause instanceof Error ? err.cause : err;
      lastError = err;
    }
    if (Date.now() >= deadline) break;
    await sleep(Math.min(interval, Math.max(0, deadline - Date.now())));
  }
  const reason = lastError instanceof Error ? `: ${lastError.message}` : '';
  throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.description}${reason}`, { cause: lastError });
}

/** Thrown by a probe to end a wait early with `cause` as the error. */
export class AbortWait extends Error {
  constructor(cause: Error) {
    super(cause.message, { cause });
    this.name = 'AbortWait';
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
