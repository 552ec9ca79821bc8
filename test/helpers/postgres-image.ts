// A real PostgreSQL 15 image for the tests, built without a registry: `debootstrap` fetches Debian
// bookworm's own packages from the mirror this machine's apt already uses, a small entrypoint is
// added, and the root filesystem is cached as a tarball under .cache/berth-test (ignored by git).
// The ~45 s build happens once per machine (and again only when RECIPE_VERSION changes); every
// engine then `docker import`s the tarball (a few seconds).
//
// Concurrent builds (two test processes at once) are safe: the tarball only ever appears by an
// atomic rename of a complete file. A lock file only saves the second process the duplicate work.
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { unmountUnder } from './mounts.js';
import { requirePrerequisites } from './prerequisites.js';
import { isProcessAlive, processStartTime } from './processes.js';
import { checkCommand, runCommand } from './run-command.js';
import { IMAGE_CACHE_DIR, type DockerCli } from './test-images.js';
import { waitUntil } from './wait-until.js';

/** The PostgreSQL image every engine of a test cluster can use. */
export const POSTGRES_IMAGE = 'berth-test/postgres:15';

/** Where the image keeps its database cluster (a Berth volume is mounted here). */
export const POSTGRES_DATA_DIR = '/var/lib/postgresql/data';

/** PostgreSQL's own programs come first, ahead of Debian's pg_wrapper scripts in /usr/bin. */
export const POSTGRES_PATH = '/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Bump whenever the recipe below (packages, entrypoint, trimming) changes: it names the cached tarball. */
const RECIPE_VERSION = '1';

const SUITE = 'bookworm';

/** postgresql-15 ships initdb, postgres and pgbench (and the amcheck extension); postgresql-client-15 ships psql, pg_isready and pg_amcheck. */
const PACKAGES = ['postgresql-15', 'postgresql-client-15'];

/** Programs the tests run inside the image; the build fails when one is missing. */
const REQUIRED_PROGRAMS = ['postgres', 'initdb', 'pg_ctl', 'pgbench', 'psql', 'pg_isready', 'pg_amcheck'];

const ENTRYPOINT = '/usr/local/bin/berth-postgres-entrypoint';

/** Label holding RECIPE_VERSION on the imported image, so a stale import is replaced. */
const RECIPE_LABEL = 'org.berth.test.recipe';

const DEBOOTSTRAP_TIMEOUT_MS = 15 * 60_000;
const BUILD_WAIT_TIMEOUT_MS = 25 * 60_000;

/**
 * The image's entrypoint (POSIX sh). On first start (no PG_VERSION in $PGDATA) it hands the empty
 * data directory (a fresh Berth volume) to user postgres and runs initdb; then it execs postgres as
 * user postgres, so postgres is PID 1 and receives the stop signal itself. Authentication is
 * `trust` for local sockets and every IPv4 address: this image only ever runs on the private
 * networks of a test cluster. Settings suit a small test machine while keeping durability on.
 * Arguments given to the container are appended to postgres' command line (`-c name=value`).
 * `docker import` cannot set STOPSIGNAL (engine 20.10 refuses it as a change), so containers are
 * started with `--stop-signal SIGINT` (see postgres.ts): PostgreSQL's fast shutdown.
 */
const ENTRYPOINT_SCRIPT = `#!/bin/sh
# Berth test image (test/helpers/postgres-image.ts): initialise $PGDATA once, then run PostgreSQL.
set -eu
PGDATA="\${PGDATA:-${POSTGRES_DATA_DIR}}"
export PGDATA
as_postgres() {
  setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/var/lib/postgresql "$@"
}

mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres /run/postgresql
chmod 2775 /run/postgresql

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "$(ls -A "$PGDATA")" ]; then
    echo "berth-postgres: $PGDATA is not empty but holds no database cluster (no PG_VERSION); refusing to initialise it" >&2
    ls -la "$PGDATA" >&2
    exit 1
  fi
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  as_postgres initdb --pgdata="$PGDATA" --username=postgres --auth=trust \\
    --encoding=UTF8 --locale=C.UTF-8 --data-checksums
  # Trust from anywhere: a test image on a test cluster's private network only.
  echo 'host all all 0.0.0.0/0 trust' >> "$PGDATA/pg_hba.conf"
  echo "berth-postgres: initialised $PGDATA"
else
  # A volume restored or cloned by another engine may carry another owner on its root; postgres
  # insists on owning its data directory with mode 0700.
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/var/lib/postgresql \\
  postgres -D "$PGDATA" \\
  -c listen_addresses='*' \\
  -c max_connections=40 \\
  -c shared_buffers=32MB \\
  -c fsync=on \\
  -c synchronous_commit=on \\
  -c full_page_writes=on \\
  -c max_wal_size=512MB \\
  -c jit=off \\
  -c log_checkpoints=on \\
  "$@"
`;

/**
 * Makes sure `berth-test/postgres:15` exists on the engine behind `host` (importing it from the cached
 * root filesystem, which is built first when this machine has none) and resolves with its name.
 */
export async function ensurePostgresImage(host: DockerCli): Promise<string> {
  const present = await host.docker(['image', 'inspect', '--format', `{{index .Config.Labels "${RECIPE_LABEL}"}}`, POSTGRES_IMAGE], { timeoutMs: 30_000 });
  if (present.code === 0 && present.stdout.trim() === RECIPE_VERSION) return POSTGRES_IMAGE;
  const tarball = await postgresTarball();
  const imported = await host.docker(
    [
      'import',
      '--change', `ENTRYPOINT ["${ENTRYPOINT}"]`,
      '--change', `ENV PATH=${POSTGRES_PATH}`,
      '--change', `ENV PGDATA=${POSTGRES_DATA_DIR}`,
      '--change', 'ENV LANG=C.UTF-8',
      '--change', 'EXPOSE 5432',
      '--change', `LABEL org.berth.test=postgres ${RECIPE_LABEL}=${RECIPE_VERSION}`,
      '--message', `berth test postgres (recipe ${RECIPE_VERSION})`,
      '-',
      POSTGRES_IMAGE,
    ],
    { input: createReadStream(tarball), timeoutMs: 300_000 },
  );
  if (imported.code !== 0) {
    throw new Error(`cannot import ${POSTGRES_IMAGE} from ${tarball} (exit ${imported.code}): ${imported.stderr.trim()}`);
  }
  return POSTGRES_IMAGE;
}

let tarballPromise: Promise<string> | undefined;

/** Path of the cached PostgreSQL root filesystem tarball, building it on first use on this machine. */
export function postgresTarball(): Promise<string> {
  tarballPromise ??= obtainTarball().catch((err: unknown) => {
    tarballPromise = undefined;
    throw err;
  });
  return tarballPromise;
}

function tarballPath(): string {
  return join(IMAGE_CACHE_DIR, `postgres-15-${SUITE}-r${RECIPE_VERSION}.tar`);
}

async function obtainTarball(): Promise<string> {
  const target = tarballPath();
  if (existsSync(target)) return target;
  mkdirSync(IMAGE_CACHE_DIR, { recursive: true });
  const lock = `${target}.lock`;
  const outcome = await waitUntil<'built' | 'locked'>(
    () => {
      if (existsSync(target)) return 'built';
      return tryLock(lock) ? 'locked' : false;
    },
    { description: `another process to finish building ${target} (lock file ${lock})`, timeoutMs: BUILD_WAIT_TIMEOUT_MS, intervalMs: 1000 },
  );
  if (outcome === 'built') return target;
  try {
    // It may have been finished between our check and taking the lock.
    if (!existsSync(target)) await buildTarball(target);
    removeOlderRecipes(target);
    return target;
  } finally {
    rmSync(lock, { force: true });
  }
}

/** Creates the lock file, or replaces one whose owner is gone. True when this process holds the lock. */
function tryLock(lock: string): boolean {
  const owner = `${process.pid} ${processStartTime(process.pid) ?? ''}\n`;
  try {
    writeFileSync(lock, owner, { flag: 'wx' });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  let content: string;
  try {
    content = readFileSync(lock, 'utf8');
  } catch {
    return false; // Released meanwhile; the next attempt takes it.
  }
  const [pidText, startTime] = content.trim().split(' ');
  const pid = Number(pidText);
  const alive = Number.isInteger(pid) && pid > 0 && isProcessAlive(pid) && (startTime === undefined || startTime === '' || processStartTime(pid) === startTime);
  // Left by a process that died mid-build. Two waiters may both remove it; then both build, which
  // wastes time but stays correct (each build renames a complete tarball into place).
  if (!alive) rmSync(lock, { force: true });
  return false;
}

async function buildTarball(target: string): Promise<void> {
  requirePrerequisites(['debootstrap', 'tar', 'mount', 'umount']);
  const mirror = debianMirror();
  const buildRoot = join(IMAGE_CACHE_DIR, '.build');
  mkdirSync(buildRoot, { recursive: true });
  await removeAbandonedBuilds(buildRoot);
  const staging = join(buildRoot, `postgres-${process.pid}-${randomBytes(4).toString('hex')}`);
  const rootfs = join(staging, 'rootfs');
  mkdirSync(staging);
  const logPath = join(IMAGE_CACHE_DIR, 'postgres-build.log');
  const started = Date.now();
  try {
    const command = ['debootstrap', '--variant=minbase', `--include=${PACKAGES.join(',')}`, SUITE, rootfs, mirror];
    const result = await runCommand(command, { timeoutMs: DEBOOTSTRAP_TIMEOUT_MS, env: { DEBIAN_FRONTEND: 'noninteractive' } }).catch((err: unknown) => {
      writeFileSync(logPath, `${command.join(' ')}\n${String(err)}\n`);
      throw new Error(`debootstrap did not finish building the PostgreSQL test image: ${err instanceof Error ? err.message : String(err)}; log in ${logPath}`, { cause: err });
    });
    const innerLog = join(rootfs, 'debootstrap', 'debootstrap.log');
    const log = `$ ${command.join(' ')}\n${result.stdout}${result.stderr}${existsSync(innerLog) ? `\n--- ${innerLog} ---\n${readFileSync(innerLog, 'utf8')}` : ''}`;
    writeFileSync(logPath, log);
    if (result.code !== 0) {
      throw new Error(
        `debootstrap failed (exit ${result.code ?? result.signal}) building the PostgreSQL test image from ${mirror}; full log in ${logPath}\n` +
          `--- tail of the debootstrap log ---\n${log.trimEnd().split('\n').slice(-30).join('\n')}`,
      );
    }
    finishRootfs(rootfs);
    const partial = `${target}.${process.pid}.partial`;
    try {
      await checkCommand(['tar', '--numeric-owner', '-C', rootfs, '--exclude=./dev/*', '--exclude=./proc/*', '--exclude=./sys/*', '-cf', partial, '.'], { timeoutMs: 600_000 });
      renameSync(partial, target);
    } finally {
      rmSync(partial, { force: true });
    }
    console.log(`built the PostgreSQL test image root filesystem ${target} in ${Math.round((Date.now() - started) / 1000)} s`);
  } finally {
    await removeBuildDir(staging);
    try {
      rmdirSync(buildRoot); // Only when empty: a concurrent build may be using it.
    } catch {
      // Not empty, or already gone.
    }
  }
}

/** Adds the entrypoint and the data directory, drops what a test image does not need, checks the programs. */
function finishRootfs(rootfs: string): void {
  const missing = REQUIRED_PROGRAMS.filter((program) => !existsSync(join(rootfs, 'usr/lib/postgresql/15/bin', program)));
  if (missing.length > 0) {
    throw new Error(`the PostgreSQL test image lacks ${missing.join(', ')} in /usr/lib/postgresql/15/bin after installing ${PACKAGES.join(', ')}`);
  }
  const { uid, gid } = passwdEntry(rootfs, 'postgres');
  // Package caches, documentation, translations, and the cluster Debian's package creates (the image makes its own in $PGDATA).
  for (const path of ['var/cache/apt/archives', 'usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale', 'var/lib/postgresql/15', 'etc/postgresql/15', 'debootstrap']) {
    rmSync(join(rootfs, path), { recursive: true, force: true });
  }
  mkdirSync(join(rootfs, 'var/cache/apt/archives/partial'), { recursive: true });
  const data = join(rootfs, POSTGRES_DATA_DIR);
  mkdirSync(data, { recursive: true });
  chownSync(data, uid, gid);
  chmodSync(data, 0o700);
  const socketDir = join(rootfs, 'run/postgresql');
  mkdirSync(socketDir, { recursive: true });
  chownSync(socketDir, uid, gid);
  chmodSync(socketDir, 0o2775);
  const entrypoint = join(rootfs, ENTRYPOINT);
  mkdirSync(dirname(entrypoint), { recursive: true });
  writeFileSync(entrypoint, ENTRYPOINT_SCRIPT, { mode: 0o755 });
  chmodSync(entrypoint, 0o755);
}

function passwdEntry(rootfs: string, user: string): { uid: number; gid: number } {
  const line = readFileSync(join(rootfs, 'etc/passwd'), 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith(`${user}:`));
  const [, , uid, gid] = line?.split(':') ?? [];
  if (uid === undefined || gid === undefined) throw new Error(`the PostgreSQL test image has no user ${user} in /etc/passwd`);
  return { uid: Number(uid), gid: Number(gid) };
}

/**
 * The Debian mirror this machine's apt uses for `bookworm` (never a name written into the
 * repository): from /etc/apt/sources.list and /etc/apt/sources.list.d/*.list (one-line format) and
 * *.sources (deb822 format). BERTH_TEST_DEBIAN_MIRROR overrides it.
 */
export function debianMirror(): string {
  const override = process.env['BERTH_TEST_DEBIAN_MIRROR'];
  if (override !== undefined && override !== '') return override;
  const files = ['/etc/apt/sources.list'];
  const dir = '/etc/apt/sources.list.d';
  if (existsSync(dir)) files.push(...readdirSync(dir).sort().map((name) => join(dir, name)));
  const found: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    if (file.endsWith('.sources')) found.push(...deb822Mirrors(text));
    else if (file.endsWith('.list') || file === '/etc/apt/sources.list') found.push(...oneLineMirrors(text));
  }
  const mirror = found[0];
  if (mirror === undefined) {
    throw new Error(
      `no apt source for Debian ${SUITE} found in ${files.join(', ')}; the PostgreSQL test image is built with debootstrap from the machine's Debian mirror ` +
        '(or set BERTH_TEST_DEBIAN_MIRROR to a mirror URL)',
    );
  }
  return mirror;
}

function oneLineMirrors(text: string): string[] {
  const mirrors: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').replace(/\[[^\]]*\]/g, ' ').trim();
    const [type, uri, suite] = line.split(/\s+/);
    if (type === 'deb' && suite === SUITE && uri !== undefined && /^https?:\/\//.test(uri)) mirrors.push(uri);
  }
  return mirrors;
}

function deb822Mirrors(text: string): string[] {
  const mirrors: string[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last: string | undefined;
    for (const line of stanza.split('\n')) {
      if (line.startsWith('#')) continue;
      if (/^\s/.test(line) && last !== undefined) {
        fields.set(last, `${fields.get(last) ?? ''} ${line.trim()}`);
        continue;
      }
      const match = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
      if (match?.[1] === undefined) continue;
      last = match[1].toLowerCase();
      fields.set(last, match[2] ?? '');
    }
    const words = (key: string) => (fields.get(key) ?? '').split(/\s+/).filter((word) => word !== '');
    if (/^(no|false|0)$/i.test(fields.get('enabled') ?? 'yes')) continue;
    if (!words('types').includes('deb') || !words('suites').includes(SUITE)) continue;
    mirrors.push(...words('uris').filter((uri) => /^https?:\/\//.test(uri)));
  }
  return mirrors;
}

/** Removes staging directories of builds whose process is gone (killed mid-build). */
async function removeAbandonedBuilds(buildRoot: string): Promise<void> {
  for (const name of readdirSync(buildRoot)) {
    const pid = Number(/^postgres-(\d+)-/.exec(name)?.[1]);
    if (Number.isInteger(pid) && pid > 0 && isProcessAlive(pid)) continue;
    await removeBuildDir(join(buildRoot, name));
  }
  for (const name of readdirSync(IMAGE_CACHE_DIR)) {
    const pid = Number(/^postgres-.*\.tar\.(\d+)\.partial$/.exec(name)?.[1]);
    if (Number.isInteger(pid) && pid > 0 && !isProcessAlive(pid)) rmSync(join(IMAGE_CACHE_DIR, name), { force: true });
  }
}

/** Deletes a staging directory, first detaching anything debootstrap left mounted in it (/proc, /sys). */
async function removeBuildDir(dir: string): Promise<void> {
  const stuck = await unmountUnder(dir);
  if (stuck.length > 0) throw new Error(`cannot remove ${dir}: still mounted: ${stuck.join(', ')}`);
  rmSync(dir, { recursive: true, force: true });
}

/** Drops tarballs of earlier recipes once the current one exists. */
function removeOlderRecipes(current: string): void {
  for (const name of readdirSync(IMAGE_CACHE_DIR)) {
    const path = join(IMAGE_CACHE_DIR, name);
    if (path !== current && /^postgres-15-.*\.tar$/.test(name)) rmSync(path, { force: true });
  }
}
