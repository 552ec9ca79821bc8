// Command-line parsing shared by the benchmarks.
import { parseArgs } from 'node:util';

export interface BenchArgs<S extends string, M extends string, F extends string = never> {
  /** The single-valued options given. */
  readonly values: Readonly<Partial<Record<S, string>>>;
  /** The repeatable options given, each with its values in order. */
  readonly lists: Readonly<Partial<Record<M, string[]>>>;
  /** The switches (options without a value), true when given. */
  readonly switches: Readonly<Record<F, boolean>>;
}

/**
 * Parses `--name VALUE` options and `--name` switches strictly (an unknown option or a positional
 * argument throws). `--help` or `-h` prints `usage` and exits with 0.
 */
export function parseBenchArgs<S extends string, M extends string = never, F extends string = never>(
  argv: readonly string[],
  usage: string,
  single: readonly S[],
  repeatable: readonly M[] = [],
  switchNames: readonly F[] = [],
): BenchArgs<S, M, F> {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const name of single) options[name] = { type: 'string' };
  for (const name of repeatable) options[name] = { type: 'string', multiple: true };
  for (const name of switchNames) options[name] = { type: 'boolean' };
  const { values } = parseArgs({ args: [...argv], strict: true, options });
  if (values['help'] === true) {
    console.log(usage);
    process.exit(0);
  }
  const given: Partial<Record<S, string>> = {};
  for (const name of single) {
    const value = values[name];
    if (typeof value === 'string') given[name] = value;
  }
  const lists: Partial<Record<M, string[]>> = {};
  for (const name of repeatable) {
    const value = values[name];
    if (Array.isArray(value)) lists[name] = value.map(String);
  }
  const switches = {} as Record<F, boolean>;
  for (const name of switchNames) switches[name] = values[name] === true;
  return { values: given, lists, switches };
}

/**
 * The benchmark's options parsed from the command line by `parse`; undefined after printing the problem and
 * `usage` when they are wrong (the benchmark then exits with 2).
 */
export function optionsOrUsage<T>(parse: (argv: string[]) => T, usage: string): T | undefined {
  try {
    return parse(process.argv.slice(2));
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n${usage}`);
    return undefined;
  }
}

/** `raw` as an integer from `min` to `max`, or `fallback` when absent; throws naming `--name` otherwise. */
export function integerOption(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) throw new Error(`--${name} must be an integer from ${min} to ${max}, got ${raw}`);
  return value;
}
