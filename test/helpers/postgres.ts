// PostgreSQL containers for e2e tests: one `docker run` of the test image (postgres-image.ts) with
// its data directory on a volume, driven with psql and pgbench through `docker exec`.
import { POSTGRES_DATA_DIR, ensurePostgresImage } from './postgres-image.js';
import { formatCommand, type CommandResult, type RunOptions } from './run-command.js';
import type { DockerCli } from './test-images.js';
import { AbortWait, waitUntil } from './wait-until.js';

export { POSTGRES_IMAGE, POSTGRES_DATA_DIR, ensurePostgresImage } from './postgres-image.js';

export interface StartPostgresOptions {
  /** Container name. */
  name: string;
  /** Volume mounted at the image's PGDATA (`-v volume:/var/lib/postgresql/data`). */
  volume: string;
  /** Image; default `berth-test/postgres:15`, imported into the engine when missing. */
  image?: string;
  /** Extra `docker run` flags, before the image. */
  runArgs?: readonly string[];
  /** Extra postgres settings, e.g. `['-c', 'work_mem=8MB']`. */
  postgresArgs?: readonly string[];
  /** Bound on the wait for `pg_isready` (includes initdb or crash recovery). Default 120 000 ms. */
  readyTimeoutMs?: number;
}

/** Starts PostgreSQL on `volume` and resolves once it accepts connections. */
export async function startPostgres(host: DockerCli, options: StartPostgresOptions): Promise<PostgresContainer> {
  const image = options.image ?? (await ensurePostgresImage(host));
  const container = new PostgresContainer(host, options.name, options.volume, options.readyTimeoutMs ?? 120_000);
  await container.docker([
    'run', '--detach', '--name', options.name,
    '--volume', `${options.volume}:${POSTGRES_DATA_DIR}`,
    // PostgreSQL's fast shutdown; the default SIGTERM (smart shutdown) waits for every client to leave.
    '--stop-signal', 'SIGINT',
    ...(options.runArgs ?? []),
    image,
    ...(options.postgresArgs ?? []),
  ]);
  await container.waitReady();
  return container;
}

/** A PostgreSQL container on one engine; every call goes through the docker CLI and is bounded. */
export class PostgresContainer {
  constructor(
    private readonly host: DockerCli,
    readonly name: string,
    readonly volume: string,
    private readonly readyTimeoutMs: number,
  ) {}

  /** `docker exec <name> <command>`; resolves whatever the exit code. */
  exec(command: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    return this.host.docker(['exec', this.name, ...command], { timeoutMs: 120_000, ...options });
  }

  /** Runs one SQL command with `psql -U postgres -At` and resolves with its output (no trailing newline). */
  async psql(sql: string, options: { database?: string; timeoutMs?: number } = {}): Promise<string> {
    const command = ['psql', '-U', 'postgres', '-d', options.database ?? 'postgres', '-At', '-v', 'ON_ERROR_STOP=1', '-c', sql];
    const result = await this.exec(command, { timeoutMs: options.timeoutMs ?? 120_000 });
    if (result.code !== 0) throw new Error(`${formatCommand(command)} in ${this.name} failed (exit ${result.code}): ${result.stderr.trim()}`);
    return result.stdout.replace(/\n$/, '');
  }

  /**
   * `pgbench -U postgres <args>` inside the container, on database `postgres` unless `args` name
   * another; resolves whatever the exit code.
   */
  pgbench(args: readonly string[], options: { timeoutMs?: number } = {}): Promise<CommandResult> {
    return this.host.docker(['exec', '--env', 'PGDATABASE=postgres', this.name, 'pgbench', '-U', 'postgres', ...args], { timeoutMs: options.timeoutMs ?? 300_000 });
  }

  /** The container's log (the entrypoint's and the server's output). */
  async logs(): Promise<string> {
    const result = await this.host.docker(['logs', this.name], { timeoutMs: 60_000 });
    return `${result.stdout}${result.stderr}`;
  }

  /** `docker start`, then waits until the server accepts connections. */
  async start(): Promise<void> {
    await this.docker(['start', this.name]);
    await this.waitReady();
  }

  /** `docker stop` (SIGINT, PostgreSQL's fast shutdown: a clean checkpoint), bounded. */
  async stop(timeoutSeconds = 60): Promise<void> {
    await this.docker(['stop', '--time', String(timeoutSeconds), this.name], { timeoutMs: (timeoutSeconds + 30) * 1000 });
  }

  /** `docker rm --force`. */
  async remove(): Promise<void> {
    await this.docker(['rm', '--force', this.name]);
  }

  /** Waits (bounded) until `pg_isready` succeeds inside; fails at once, with the log, if the container exits. */
  async waitReady(timeoutMs = this.readyTimeoutMs): Promise<void> {
    try {
      await waitUntil(
        async () => {
          const state = await this.host.docker(['inspect', '--format', '{{.State.Status}} {{.State.ExitCode}}', this.name], { timeoutMs: 30_000 });
          const [status, exitCode] = state.stdout.trim().split(' ');
          if (state.code === 0 && status !== 'running' && status !== 'created' && status !== 'restarting') {
            throw new AbortWait(new Error(`container ${this.name} is ${status} (exit code ${exitCode})`));
          }
          const ready = await this.exec(['pg_isready', '-U', 'postgres', '-q', '-t', '2'], { timeoutMs: 30_000 });
          return ready.code === 0;
        },
        { description: `PostgreSQL in ${this.name} to accept connections`, timeoutMs, intervalMs: 500 },
      );
    } catch (err) {
      const log = await this.logs().catch((logError: unknown) => `(cannot read the log: ${String(logError)})`);
      const reason = err instanceof Error ? err.message : String(err);
      throw new Error(`PostgreSQL in ${this.name} (volume ${this.volume}) did not become ready: ${reason}\n--- docker logs ${this.name} (tail) ---\n${log.trimEnd().split('\n').slice(-40).join('\n')}`, { cause: err });
    }
  }

  /** docker() that throws with stderr unless the command exits 0. */
  async docker(args: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    const result = await this.host.docker(args, { timeoutMs: 120_000, ...options });
    if (result.code !== 0) throw new Error(`docker ${formatCommand(args)} failed (exit ${result.code}): ${result.stderr.trim()}`);
    return result;
  }
}
