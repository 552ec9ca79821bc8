const UNITS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `30s`, `15m`, `1h`, `7d` (or combinations such as `1h30m`) to milliseconds; undefined otherwise. */
export function parseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (!/^(\d+[smhd])+$/.test(trimmed)) return undefined;
  let total = 0;
  for (const [, amount = '0', unit = 's'] of trimmed.matchAll(/(\d+)([smhd])/g)) total += Number(amount) * (UNITS[unit] ?? 0);
  return Number.isSafeInteger(total) && total > 0 ? total : undefined;
}
