import { formatBytes } from './output.js';

/**
 * One line on stderr, redrawn in place: phase, bytes done of total, rate and ETA. Only on a
 * terminal; in scripts and CI nothing is drawn, so stdout stays clean for `--json`.
 */
export class ProgressBar {
  private readonly started = Date.now();
  private drawn = false;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  update(event: Record<string, unknown>): void {
    if (!this.stream.isTTY) return;
    const phase = typeof event.phase === 'string' ? event.phase : '';
    const done = typeof event.doneBytes === 'number' ? event.doneBytes : undefined;
    const total = typeof event.totalBytes === 'number' ? event.totalBytes : undefined;
    this.stream.write(`\r\x1b[2K${renderProgress(phase, done, total, (Date.now() - this.started) / 1000, this.stream.columns ?? 80)}`);
    this.drawn = true;
  }

  finish(): void {
    if (this.drawn) this.stream.write('\r\x1b[2K');
  }
}

export function renderProgress(phase: string, done: number | undefined, total: number | undefined, elapsedSeconds: number, width: number): string {
  if (done === undefined) return phase;
  const rate = elapsedSeconds > 0 ? done / elapsedSeconds : 0;
  const parts = [phase.padEnd(10)];
  if (total !== undefined && total > 0) {
    const fraction = Math.min(1, done / total);
    const barWidth = Math.max(10, Math.min(30, width - 60));
    const filled = Math.round(fraction * barWidth);
    parts.push(`[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]`, `${(fraction * 100).toFixed(0).padStart(3)}%`, `${formatBytes(done)}/${formatBytes(total)}`);
    const eta = rate > 0 ? (total - done) / rate : undefined;
    parts.push(`${formatBytes(rate)}/s`, eta === undefined ? 'ETA -' : `ETA ${formatDuration(eta)}`);
  } else {
    parts.push(formatBytes(done), `${formatBytes(rate)}/s`);
  }
  return parts.join(' ');
}

function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}
