const UNITS: Readonly<Record<string, number>> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/**
 * Parses a size such as `10G`, `512M`, `1.5T`, `64KiB` or `1048576` (plain bytes). Units are binary
 * (K = 1024), as in Docker's own size options; `B`, `iB` suffixes and lower case are accepted.
 * Returns undefined for anything else, so each caller can word its own error.
 */
export function parseByteSize(text: string): number | undefined {
  const match = /^(\d+)(?:\.(\d+))?\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!match) return undefined;
  const [, whole = '', fraction = '', unit = ''] = match;
  const multiplier = UNITS[unit.toUpperCase()];
  if (multiplier === undefined || (fraction !== '' && unit === '')) return undefined;
  const bytes = Math.floor(Number(`${whole}.${fraction || '0'}`) * multiplier);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** `21474836480` → `20G`; exact units only, for messages and logs. */
export function formatByteSize(bytes: number): string {
  for (const unit of ['T', 'G', 'M', 'K'] as const) {
    const multiplier = UNITS[unit] ?? 1;
    if (bytes >= multiplier && bytes % multiplier === 0) return `${bytes / multiplier}${unit}`;
  }
  return String(bytes);
}
