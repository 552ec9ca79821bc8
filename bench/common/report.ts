// What every benchmark writes next to its figures: the source measured, and the results files
// (results.json, results.md, and the table between the markers of the README next to them).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { repoRoot } from '../../test/helpers/repo-root.js';
import { runCommand } from '../../test/helpers/run-command.js';

export interface SourceDescription {
  readonly commit: string;
  /** Tracked files outside bench/ that differ from the commit (a dirty tree is measured as built). */
  readonly uncommittedFiles: readonly string[];
}

/** The commit measured, and the tracked files outside bench/ that differ from it. */
export async function describeSource(): Promise<SourceDescription> {
  const head = await runCommand(['git', '-C', repoRoot, 'rev-parse', 'HEAD']).catch(() => undefined);
  const status = await runCommand(['git', '-C', repoRoot, 'status', '--porcelain', '--untracked-files=no']).catch(() => undefined);
  const changed = status?.code === 0 ? status.stdout.split('\n').filter((line) => line.trim() !== '' && !line.slice(3).startsWith('bench/')) : [];
  return { commit: head?.code === 0 ? head.stdout.trim() : 'unknown', uncommittedFiles: changed.map((line) => line.slice(3)) };
}

/** results.md beside results.json. */
export function mdPathFor(out: string): string {
  return out.endsWith('.json') ? `${out.slice(0, -'.json'.length)}.md` : `${out}.md`;
}

/** A goal a benchmark states, with the figure measured against it. */
export interface Target {
  readonly name: string;
  readonly target: string;
  /** null when what it needs was not measured in this run. */
  readonly value: number | null;
  readonly unit: string;
  readonly met: boolean | null;
}

/** The targets as a Markdown table (lines, without a trailing blank line). */
export function renderTargets(targets: readonly Target[]): string[] {
  const lines = ['| Target | goal | measured | met |', '|---|---|---:|:---:|'];
  for (const t of targets) {
    const value = t.value === null ? 'not measured' : `${t.value}${t.unit}`;
    lines.push(`| ${t.name} | ${t.target} | ${value} | ${t.met === null ? '–' : t.met ? 'yes' : '**no**'} |`);
  }
  return lines;
}

export const RESULTS_START = '<!-- results:start -->';
export const RESULTS_END = '<!-- results:end -->';

/**
 * Writes `results` as JSON to `out`, `markdown` to results.md beside it, and `table` between the
 * results markers of the README.md in the same directory (when there is one with both markers).
 * `marker` names another pair of markers (`<!-- NAME:start -->`, `<!-- NAME:end -->`), for a README
 * that shows the tables of more than one benchmark.
 */
export function writeResultFiles(out: string, results: unknown, markdown: string, table: string, marker = 'results'): void {
  writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(mdPathFor(out), markdown);
  const readme = join(dirname(out), 'README.md');
  if (!existsSync(readme)) return;
  const start = `<!-- ${marker}:start -->`;
  const end = `<!-- ${marker}:end -->`;
  const text = readFileSync(readme, 'utf8');
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  if (from < 0 || to < from) return;
  writeFileSync(readme, `${text.slice(0, from + start.length)}\n${table}${text.slice(to)}`);
}
