// Measurement 2: the bytes one replication cycle ships for database-style page writes: N scattered
// 4 KiB blocks overwritten in place in a file of random data, compared with the bytes changed.
import { seededRandom } from '../common/stats.js';
import { chainPosition, type ReceivedSnapshot } from './observe.js';
import type { ReplicatedHosts } from './volumes.js';

export const PAGE_BYTES = 4096;

export interface PageSettings {
  readonly volume: string;
  readonly fileMiB: number;
  readonly pages: number;
  /** `replicate-every` of this volume: long, so that only the unmount ships the change. */
  readonly replicateEvery: string;
  readonly attempts: number;
  readonly seed: number;
}

export interface PageAttempt {
  /** The replica's snapshot before the writes and the one holding them. */
  readonly before: string;
  readonly after: string;
  /** The replica's `lastTransferBytes` for `after`. */
  readonly shippedBytes: number | null;
  /** What Berth counted as changed on the owner after the writes, before the unmount (`lagBytes`). */
  readonly countedBytes: number | null;
  /** The replica's 'replica caught up' lines for the volume since the writes began. */
  readonly received: readonly ReceivedSnapshot[];
  /** True when exactly one snapshot, taken at the unmount, carried the writes (else the attempt is repeated). */
  readonly clean: boolean;
  readonly note?: string;
}

export interface PageFigures {
  readonly settings: PageSettings;
  readonly fileBytes: number;
  /** Bytes of the first transfer (the whole file, for scale). */
  readonly initialTransferBytes: number | null;
  readonly changedBytes: number;
  /** From the clean attempt (null when none was clean). */
  readonly shippedBytes: number | null;
  /** The same transfer's bytes as the replica's log reports them. */
  readonly loggedBytes: number | null;
  readonly countedBytes: number | null;
  /** shipped / changed. */
  readonly ratio: number | null;
  readonly attempts: readonly PageAttempt[];
}

/** Block numbers of `count` distinct pages of a file of `pagesInFile` pages, from `seed`. */
export function pickPages(count: number, pagesInFile: number, seed: number): number[] {
  if (count > pagesInFile) throw new Error(`cannot pick ${count} distinct pages of ${pagesInFile}`);
  const random = seededRandom(seed);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(Math.floor(random() * pagesInFile));
  return [...picked];
}

/**
 * A volume with `replicate-every` long, a file of random data written in a container (its exit ships
 * it), a wait until the replica holds everything; then, in a container that keeps the volume mounted,
 * the page writes, and its removal: the last Unmount takes the final snapshot and ships it. Repeated
 * (new pages) when the volume's own timer took a snapshot in the middle of the writes.
 */
export async function measurePageWrites(hosts: ReplicatedHosts, settings: PageSettings, log: (message: string) => void): Promise<PageFigures> {
  const { owner, inspector } = hosts;
  const fileBytes = settings.fileMiB * 1024 * 1024;
  await hosts.createVolume(settings.volume, [`replicate-every=${settings.replicateEvery}`]);
  log(`pages: writing ${settings.fileMiB} MiB of random data into ${settings.volume}`);
  await owner.dockerOk(['run', '--rm', '--volume', `${settings.volume}:/d`, hosts.busyboxImage, 'sh', '-c', `head -c ${fileBytes} /dev/urandom > /d/data && sync`], { timeoutMs: 300_000 });
  const initial = await inspector.waitInSync(settings.volume, 300_000);
  const attempts: PageAttempt[] = [];
  for (let attempt = 1; attempt <= settings.attempts; attempt++) {
    const result = await pageAttempt(hosts, settings, fileBytes, attempt);
    attempts.push(result);
    log(`pages: attempt ${attempt}: ${result.before} → ${result.after}, ${result.shippedBytes ?? '?'} bytes shipped${result.clean ? '' : ` (not clean: ${result.note ?? ''}; again)`}`);
    if (result.clean) break;
  }
  const clean = attempts.find((a) => a.clean);
  const changedBytes = settings.pages * PAGE_BYTES;
  const logged = clean?.received.find((entry) => entry.id === clean.after)?.bytes ?? null;
  return {
    settings,
    fileBytes,
    initialTransferBytes: initial.replica.lastTransferBytes,
    changedBytes,
    shippedBytes: clean?.shippedBytes ?? null,
    loggedBytes: logged,
    countedBytes: clean?.countedBytes ?? null,
    ratio: clean?.shippedBytes == null ? null : Math.round((clean.shippedBytes / changedBytes) * 1000) / 1000,
    attempts,
  };
}

async function pageAttempt(hosts: ReplicatedHosts, settings: PageSettings, fileBytes: number, attempt: number): Promise<PageAttempt> {
  const { owner, inspector } = hosts;
  const name = `bench-pages-${attempt}`;
  const pages = pickPages(settings.pages, fileBytes / PAGE_BYTES, settings.seed + attempt);
  const writes = `for n in ${pages.join(' ')}; do dd if=/dev/urandom of=/d/data bs=${PAGE_BYTES} seek=$n count=1 conv=notrunc 2>/dev/null || exit 1; done; sync`;
  await owner.dockerOk(['run', '--detach', '--name', name, '--volume', `${settings.volume}:/d`, hosts.busyboxImage, 'sleep', '3600']);
  let removed = false;
  try {
    const before = await inspector.waitInSync(settings.volume, 120_000);
    const mark = hosts.mark();
    await owner.dockerOk(['exec', name, 'sh', '-c', writes], { timeoutMs: 300_000 });
    const written = await inspector.replica(settings.volume);
    // The container's removal is the volume's last Unmount: it takes the final snapshot and waits for the replica.
    await owner.dockerOk(['rm', '--force', name], { timeoutMs: 120_000 });
    removed = true;
    const after = await inspector.waitInSync(settings.volume, 300_000);
    const beforeId = before.replica.snapshot ?? '';
    const afterId = after.replica.snapshot ?? '';
    const lines = hosts.logged(settings.volume, mark).received;
    const problems: string[] = [];
    if (written.view.head !== before.view.head) problems.push(`the owner took ${written.view.head ?? '?'} during the writes`);
    if (chainPosition(afterId).seq !== chainPosition(beforeId).seq + 1) problems.push(`the change spans ${beforeId} → ${afterId}`);
    if (lines.length !== 1 || lines[0]?.id !== afterId) problems.push(`the replica received ${lines.map((line) => line.id).join(', ') || 'nothing'} meanwhile`);
    return {
      before: beforeId,
      after: afterId,
      shippedBytes: after.replica.lastTransferBytes,
      countedBytes: written.replica.lagBytes,
      received: lines,
      clean: problems.length === 0,
      ...(problems.length > 0 ? { note: problems.join('; ') } : {}),
    };
  } finally {
    if (!removed) await owner.docker(['rm', '--force', name], { timeoutMs: 120_000 }).catch(() => undefined);
  }
}
