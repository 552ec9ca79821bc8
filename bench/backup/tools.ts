// The backup tools compared, behind one interface: Berth (through berth-worker.js, one process
// per operation), restic and borg (their Debian commands). Each backs up, into its own repository
// directory, either the Berth volume (Berth snapshots it itself) or a read-only btrfs snapshot of
// it at a fixed path (restic and borg: a fixed path lets them find their parent snapshot or files
// cache, as they would in daily use), and restores its latest backup into a new directory on the
// same btrfs filesystem.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkCommand } from '../../test/helpers/run-command.js';
import { measureCommand, type Measured } from './measure.js';
import { RESULT_PREFIX, type WorkerOp, type WorkerRequest, type WorkerResult } from './worker-protocol.js';

export type ToolId = 'berth' | 'berth-enc' | 'restic' | 'borg-lz4' | 'borg-zstd1';
export type BackupStep = 'full' | 'incremental' | 'unchanged';

export interface ToolRun {
  readonly measured: Measured;
  /** Berth only: the worker's own report. */
  readonly berth?: WorkerResult;
}

export interface RestoreRun extends ToolRun {
  /** The directory holding the restored volume tree. */
  readonly restoredRoot: string;
  /** Removes what the restore wrote (not measured). */
  cleanup(): Promise<void>;
}

export interface Tool {
  readonly id: ToolId;
  readonly label: string;
  /** How it was configured, for the results. */
  readonly settings: string;
  readonly repo: string;
  init(): Promise<void>;
  backup(step: BackupStep): Promise<ToolRun>;
  /** Restores the latest backup into a new directory (or volume) named after `name`. */
  restore(name: string): Promise<RestoreRun>;
}

export interface ToolContext {
  /** Scratch space on the disk (GNU time reports, caches, keys). */
  readonly work: string;
  /** Berth's data root on btrfs and its state store file. */
  readonly berthRoot: string;
  readonly berthState: string;
  readonly volume: string;
  /** What restic and borg back up: a read-only snapshot of the volume, always at this path. */
  readonly sourcePath: string;
  /** Where restic and borg restore: a directory on the same btrfs filesystem as Berth's volumes. */
  readonly restoreDir: string;
  /** When set, every Berth worker writes a V8 CPU profile there (see profile-summary.ts). */
  readonly cpuProfileDir?: string;
  /** berth-worker.js to run: the copy of the build taken at the start of the run. */
  readonly workerScript: string;
}

/** berth-worker.js next to this module (in the build the run was started from). */
export const WORKER_SCRIPT = fileURLToPath(new URL('./berth-worker.js', import.meta.url));
const PASSWORD = 'berth-bench-not-secret';

/** Berth through the worker process; with `keyPath`, encrypted (AES-256-GCM). Compression is the default, zstd. */
export class BerthTool implements Tool {
  readonly settings: string;
  private latest: string | undefined;
  private runs = 0;

  constructor(
    readonly id: 'berth' | 'berth-enc',
    readonly label: string,
    readonly repo: string,
    private readonly context: ToolContext,
    private readonly keyPath?: string,
  ) {
    this.settings = `DirectoryBackupTarget ${repo}; compression zstd (default: zstd -1 -T0)${keyPath ? '; AES-256-GCM with a key file' : '; unencrypted'}`;
  }

  async init(): Promise<void> {
    await mkdir(this.repo, { recursive: true });
  }

  async backup(): Promise<ToolRun> {
    const run = await this.worker({ op: 'backup', volume: this.context.volume, target: this.repo, ...(this.keyPath ? { keyPath: this.keyPath } : {}) });
    this.latest = run.berth.manifest?.id;
    return run;
  }

  async restore(name: string): Promise<RestoreRun> {
    if (this.latest === undefined) throw new Error(`${this.id}: nothing to restore`);
    const volume = `restored-${name}`;
    const run = await this.worker({ op: 'restore', volume: this.context.volume, target: this.repo, id: this.latest, to: volume, ...(this.keyPath ? { keyPath: this.keyPath } : {}) });
    if (run.berth.path === undefined) throw new Error(`${this.id}: the worker did not say where it restored`);
    return { ...run, restoredRoot: run.berth.path, cleanup: async () => void (await this.worker({ op: 'remove-volume', volume })) };
  }

  /** Also used by run.ts for setup steps (creating the volume). */
  async worker(request: WorkerOp): Promise<{ measured: Measured; berth: WorkerResult }> {
    const full: WorkerRequest = { ...request, root: this.context.berthRoot, state: this.context.berthState };
    const profile = this.context.cpuProfileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', this.context.cpuProfileDir, '--cpu-prof-name', `${this.id}-${request.op}-${++this.runs}.cpuprofile`];
    const measured = await measureCommand([process.execPath, ...profile, this.context.workerScript, JSON.stringify(full)], this.context.work);
    const line = measured.stdout.split('\n').reverse().find((candidate) => candidate.startsWith(RESULT_PREFIX));
    if (line === undefined) throw new Error(`berth worker ${request.op} printed no result: ${measured.stdout.slice(-2000)}`);
    return { measured, berth: JSON.parse(line.slice(RESULT_PREFIX.length)) as WorkerResult };
  }
}

/** restic 0.14: repository format 2 (zstd, compression `auto`), password file, its cache under the work directory. */
export class ResticTool implements Tool {
  readonly id = 'restic' as const;
  readonly label = 'restic';
  readonly settings: string;
  private readonly passwordFile: string;
  private readonly cacheDir: string;

  constructor(
    readonly repo: string,
    private readonly context: ToolContext,
  ) {
    this.passwordFile = join(context.work, 'restic.password');
    this.cacheDir = join(context.work, 'restic-cache');
    this.settings = `init --repository-version 2, default compression (auto), password file; backup --host bench ${context.sourcePath}; restore latest --target DIR`;
  }

  private base(): string[] {
    return ['restic', '--repo', this.repo, '--password-file', this.passwordFile, '--cache-dir', this.cacheDir];
  }

  async init(): Promise<void> {
    await writeFile(this.passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
    await checkCommand([...this.base(), 'init', '--repository-version', '2'], { timeoutMs: 120_000 });
  }

  async backup(): Promise<ToolRun> {
    return { measured: await measureCommand([...this.base(), 'backup', '--host', 'bench', this.context.sourcePath], this.context.work) };
  }

  async restore(name: string): Promise<RestoreRun> {
    const target = join(this.context.restoreDir, name);
    await mkdir(target);
    const measured = await measureCommand([...this.base(), 'restore', 'latest', '--host', 'bench', '--target', target], this.context.work);
    // restic recreates the absolute path of what it backed up below the target.
    return { measured, restoredRoot: join(target, this.context.sourcePath), cleanup: () => removeTree(target) };
  }
}

/** borg 1.2: `init -e repokey` with BORG_PASSPHRASE, `create --compression C`; cache and keys under the work directory. */
export class BorgTool implements Tool {
  readonly label: string;
  readonly settings: string;
  private readonly env: Record<string, string>;

  constructor(
    readonly id: 'borg-lz4' | 'borg-zstd1',
    readonly repo: string,
    private readonly compression: string,
    private readonly context: ToolContext,
  ) {
    this.label = `borg ${compression}`;
    this.settings = `init -e repokey (BORG_PASSPHRASE); create --compression ${compression} REPO::STEP ${context.sourcePath}; extract REPO::unchanged in DIR`;
    this.env = { BORG_PASSPHRASE: PASSWORD, BORG_BASE_DIR: join(context.work, 'borg-base'), BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes', BORG_DISPLAY_PASSPHRASE: 'no' };
  }

  private lastArchive: string | undefined;

  async init(): Promise<void> {
    await checkCommand(['borg', 'init', '--encryption', 'repokey', this.repo], { env: this.env, timeoutMs: 120_000 });
  }

  async backup(step: BackupStep): Promise<ToolRun> {
    const measured = await measureCommand(['borg', 'create', '--compression', this.compression, `${this.repo}::${step}`, this.context.sourcePath], this.context.work, { env: this.env });
    this.lastArchive = step;
    return { measured };
  }

  async restore(name: string): Promise<RestoreRun> {
    if (this.lastArchive === undefined) throw new Error(`${this.id}: nothing to restore`);
    const target = join(this.context.restoreDir, name);
    await mkdir(target);
    const measured = await measureCommand(['borg', 'extract', `${this.repo}::${this.lastArchive}`], this.context.work, { env: this.env, cwd: target });
    // borg stores paths without the leading slash and extracts them below the working directory.
    return { measured, restoredRoot: join(target, this.context.sourcePath.replace(/^\/+/, '')), cleanup: () => removeTree(target) };
  }
}

async function removeTree(path: string): Promise<void> {
  await checkCommand(['rm', '-rf', '--one-file-system', path], { timeoutMs: 10 * 60_000 });
}

/** First line of `command`'s output, e.g. a version. */
export async function firstLine(command: readonly string[]): Promise<string> {
  const result = await checkCommand(command, { timeoutMs: 30_000 });
  return (result.stdout || result.stderr).trim().split('\n')[0] ?? '';
}
