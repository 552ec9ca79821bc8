// One Berth operation in its own process, so that run.ts measures Berth like restic and borg: a
// command timed and sized by /usr/bin/time (wall, CPU of the process and its zstd children, peak
// RSS). In the process, the BackupService call is timed on its own too (what the agent spends),
// with coarse phases from its progress callback.
//
//   node dist/bench/backup/berth-worker.js '<request JSON>'     (run.ts builds the request)
//
// The last stdout line is RESULT_PREFIX followed by the WorkerResult JSON (worker-protocol.ts).
import { DirectoryBackupTarget } from '../../volume-driver/backups/directory-backup-target.js';
import { openBerthStack } from './berth-stack.js';
import { RESULT_PREFIX, type WorkerRequest, type WorkerResult } from './worker-protocol.js';

/** Marks phase starts; `finish` turns them into durations. */
class PhaseClock {
  private readonly marks: Array<{ name: string; at: number }> = [];

  constructor(first: string) {
    this.mark(first);
  }

  mark(name: string): void {
    if (this.marks[this.marks.length - 1]?.name !== name && !this.marks.some((mark) => mark.name === name)) this.marks.push({ name, at: performance.now() });
  }

  finish(): Array<{ name: string; ms: number }> {
    const end = performance.now();
    return this.marks.map((mark, i) => ({ name: mark.name, ms: round((this.marks[i + 1]?.at ?? end) - mark.at) }));
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

async function main(): Promise<void> {
  const request = JSON.parse(process.argv[2] ?? '') as WorkerRequest;
  const opened = performance.now();
  const stack = await openBerthStack(request.root, request.state);
  const openMs = performance.now() - opened;
  let result: Omit<WorkerResult, 'openMs' | 'nodeMaxRssKiB' | 'nodeCpuSeconds'>;
  try {
    const started = performance.now();
    switch (request.op) {
      case 'create-volume': {
        const view = await stack.service.create(request.volume, {});
        result = { opMs: round(performance.now() - started), phases: [], path: view.mountpoint };
        break;
      }
      case 'remove-volume': {
        await stack.service.remove(request.volume);
        result = { opMs: round(performance.now() - started), phases: [] };
        break;
      }
      case 'backup': {
        // Phases: find the parent (read its index) | snapshot + walk | read, hash, compress, write | fsync, rename, remove snapshot.
        const clock = new PhaseClock('parent-index');
        const { manifest } = await stack.backups.create({
          volume: request.volume,
          target: new DirectoryBackupTarget(request.target),
          ...(request.keyPath === undefined ? {} : { keyPath: request.keyPath }),
          onProgress: (phase) => clock.mark(phase === 'full' || phase === 'incremental' ? 'write' : phase === 'snapshot' ? 'snapshot-walk' : phase),
        });
        result = { opMs: round(performance.now() - started), phases: clock.finish(), manifest };
        break;
      }
      case 'restore': {
        // Phases: create the volume, load the chain | extract + apply incrementals | verify every block.
        const clock = new PhaseClock('prepare');
        const restored = await stack.backups.restore({
          target: new DirectoryBackupTarget(request.target),
          volume: request.volume,
          id: request.id,
          to: request.to,
          ...(request.keyPath === undefined ? {} : { keyPath: request.keyPath }),
          onProgress: (phase) => clock.mark(phase),
        });
        result = { opMs: round(performance.now() - started), phases: clock.finish(), chain: restored.chain, path: stack.backend.path(request.to) };
        break;
      }
    }
  } finally {
    await stack.close();
  }
  const usage = process.resourceUsage();
  const output: WorkerResult = { ...result, openMs: round(openMs), nodeMaxRssKiB: usage.maxRSS, nodeCpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6 };
  console.log(`${RESULT_PREFIX}${JSON.stringify(output)}`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
    process.exit(1);
  },
);
