// No registry is reachable from the test machines, so test images are built from local files and
// loaded with `docker import`. Each engine has its own data root, so each one imports the image;
// the tarball itself is built once per machine and cached.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync, chmodSync, copyFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { repoRoot } from './repo-root.js';
import { checkCommand, type CommandResult, type RunOptions } from './run-command.js';

/** The busybox image every engine of a test cluster can use; `sh` is its default command. */
export const BUSYBOX_IMAGE = 'berth-test/busybox:latest';

/** Where built image tarballs are cached between runs (ignored by git). */
export const IMAGE_CACHE_DIR = join(repoRoot, '.cache', 'berth-test');

/** Debian's busybox-static binary; the dynamic `busybox` package would not run in an empty image. */
const BUSYBOX_BINARY = '/bin/busybox';

/** Bump when the image layout changes so stale cached tarballs are not reused. */
const RECIPE_VERSION = '1';

/** Anything that runs the docker CLI against one engine (a cluster Host qualifies). */
export interface DockerCli {
  docker(args: readonly string[], options?: RunOptions): Promise<CommandResult>;
}

/**
 * Makes sure `berth-test/busybox:latest` exists on the engine behind `host`, importing it from the
 * cached tarball when it does not. Resolves with the image reference.
 */
export async function ensureBusyboxImage(host: DockerCli): Promise<string> {
  const present = await host.docker(['image', 'inspect', '--format', '{{.Id}}', BUSYBOX_IMAGE], { timeoutMs: 30_000 });
  if (present.code === 0) return BUSYBOX_IMAGE;
  const tarball = await busyboxTarball();
  const imported = await host.docker(
    ['import', '--change', 'CMD ["sh"]', '--change', 'LABEL org.berth.test=busybox', '--message', 'berth test busybox', '-', BUSYBOX_IMAGE],
    { input: createReadStream(tarball), timeoutMs: 120_000 },
  );
  if (imported.code !== 0) {
    throw new Error(`cannot import ${BUSYBOX_IMAGE} from ${tarball} (exit ${imported.code}): ${imported.stderr.trim()}`);
  }
  return BUSYBOX_IMAGE;
}

let tarballPromise: Promise<string> | undefined;

/** Path of the cached busybox rootfs tarball, building it on first use. */
export function busyboxTarball(): Promise<string> {
  tarballPromise ??= buildBusyboxTarball().catch((err: unknown) => {
    tarballPromise = undefined;
    throw err;
  });
  return tarballPromise;
}

async function buildBusyboxTarball(): Promise<string> {
  const binary = readBusybox();
  const digest = createHash('sha256').update(RECIPE_VERSION).update(binary).digest('hex').slice(0, 16);
  const target = join(IMAGE_CACHE_DIR, `busybox-${digest}.tar`);
  if (existsSync(target)) return target;

  const applets = (await checkCommand([BUSYBOX_BINARY, '--list-full'])).stdout
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.includes('..'));
  const staging = await mkdtemp(join(tmpdir(), 'berth-busybox-'));
  try {
    const rootfs = join(staging, 'rootfs');
    for (const dir of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'root', 'home', 'var/tmp', 'proc', 'sys', 'dev', 'run', 'mnt', 'data']) {
      mkdirSync(join(rootfs, dir), { recursive: true });
    }
    mkdirSync(join(rootfs, 'tmp'), { mode: 0o1777 });
    chmodSync(join(rootfs, 'tmp'), 0o1777);
    copyFileSync(BUSYBOX_BINARY, join(rootfs, 'bin/busybox'));
    chmodSync(join(rootfs, 'bin/busybox'), 0o755);
    for (const applet of applets) {
      const link = join(rootfs, applet);
      if (existsSync(link) || applet === 'bin/busybox') continue;
      mkdirSync(dirname(link), { recursive: true });
      symlinkSync('/bin/busybox', link);
    }
    writeFileSync(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
    writeFileSync(join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');

    mkdirSync(IMAGE_CACHE_DIR, { recursive: true });
    // Written under a temporary name and renamed, so concurrent runs never import half a tarball.
    const partial = `${target}.${process.pid}.partial`;
    await checkCommand(['tar', '--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', partial, '.']);
    renameSync(partial, target);
    return target;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

function readBusybox(): Buffer {
  if (!existsSync(BUSYBOX_BINARY)) {
    throw new Error(`${BUSYBOX_BINARY} not found; run \`scripts/install-prereqs\` (installs busybox-static)`);
  }
  const binary = readFileSync(BUSYBOX_BINARY);
  if (hasElfInterpreter(binary)) {
    throw new Error(`${BUSYBOX_BINARY} is dynamically linked and cannot run in an empty image; install busybox-static (scripts/install-prereqs)`);
  }
  return binary;
}

/** True when a 64-bit little-endian ELF has a PT_INTERP program header, i.e. it is dynamically linked. */
function hasElfInterpreter(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const offset = phoff + i * phentsize;
    if (offset + 4 > elf.length) break;
    if (elf.readUInt32LE(offset) === 3) return true;
  }
  return false;
}
