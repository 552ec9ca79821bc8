// Summary statistics for benchmark samples (milliseconds). Percentiles use the nearest-rank method:
// p99 of 200 samples is the 198th smallest, so one outlier in a hundred does not move it.

export interface Summary {
  readonly count: number;
  readonly totalMs: number;
  readonly meanMs: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly minMs: number;
  readonly maxMs: number;
}

/** Nearest-rank percentile of ascending `sorted` samples; `p` in (0, 100]. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new Error('percentile of no samples');
  if (!(p > 0 && p <= 100)) throw new Error(`percentile ${p} is not in (0, 100]`);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) throw new Error('summary of no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  const total = sorted.reduce((sum, value) => sum + value, 0);
  return {
    count: sorted.length,
    totalMs: round(total),
    meanMs: round(total / sorted.length),
    p50Ms: round(percentile(sorted, 50)),
    p90Ms: round(percentile(sorted, 90)),
    p99Ms: round(percentile(sorted, 99)),
    minMs: round(sorted[0] as number),
    maxMs: round(sorted[sorted.length - 1] as number),
  };
}

/** Summary of samples in any unit (seconds, bytes): nearest-rank percentiles, rounded to `digits`. */
export interface Distribution {
  readonly count: number;
  readonly mean: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly min: number;
  readonly max: number;
}

export function distribution(samples: readonly number[], digits = 3): Distribution {
  if (samples.length === 0) throw new Error('distribution of no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (p: number): number => round(percentile(sorted, p), digits);
  return {
    count: sorted.length,
    mean: round(sorted.reduce((sum, value) => sum + value, 0) / sorted.length, digits),
    p50: at(50),
    p95: at(95),
    p99: at(99),
    min: round(sorted[0] as number, digits),
    max: round(sorted[sorted.length - 1] as number, digits),
  };
}

/** Median (nearest-rank p50), unrounded. */
export function median(samples: readonly number[]): number {
  return percentile([...samples].sort((a, b) => a - b), 50);
}

export function round(value: number, digits = 3): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/** `a / b` rounded to 3 digits; NaN when `b` is not positive. */
export function ratio(a: number, b: number): number {
  return b > 0 ? round(a / b) : Number.NaN;
}

/** Milliseconds taken by `task`, measured with the monotonic high-resolution clock. */
export async function timed<T>(task: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = process.hrtime.bigint();
  const value = await task();
  return { ms: Number(process.hrtime.bigint() - started) / 1e6, value };
}

/** Small deterministic PRNG (mulberry32), so a run's random names can be reproduced from its seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
