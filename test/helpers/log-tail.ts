// Failure messages carry the end of the relevant daemon log, so a CI failure is readable
// without access to the machine.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** The last `lines` lines of a log file (reads at most its last 64 KiB), or a note that it is missing. */
export function readLogTail(path: string, lines = 40): string {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return `(no log at ${path})`;
  }
  try {
    const size = fstatSync(fd).size;
    const length = Math.min(size, 64 * 1024);
    const buffer = Buffer.alloc(length);
    readSync(fd, buffer, 0, length, size - length);
    const text = buffer.toString('utf8').trimEnd();
    return text.split('\n').slice(-lines).join('\n');
  } finally {
    closeSync(fd);
  }
}
