import { access, constants, readFile, stat, writeFile, unlink } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { loadPeerTls } from '../plugins/peer/peer-tls.js';
import { singleHostStorePath, type AgentConfig } from '../plugins/config/agent-config.js';
import type { Engine } from '../plugins/engine/engine.js';
import { errorMessage } from '../plugins/errors/berth-error.js';
import type { StateStore } from '../plugins/state/state-store.js';
import { socketIsLive } from '../plugins/server/unix-socket.js';
import { pluginSocketPath } from '../plugins/config/plugin-name.js';
import type { MountReconciler } from '../volume-driver/mount-reconciler.js';
import type { StorageBackend } from '../volume-driver/storage/storage-backend.js';
import type { VolumeService } from '../volume-driver/volume-service.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface DoctorCheck {
  readonly name: string;
  readonly status: CheckStatus;
  readonly detail: string;
}

export interface DoctorDeps {
  readonly config: AgentConfig;
  readonly store: StateStore;
  readonly engine: Engine;
  readonly backend: StorageBackend;
  readonly volumes: VolumeService;
  readonly reconciler: MountReconciler;
}

/** Each check says what it found and, when something is wrong, what to do about it. */
export async function runDoctor(deps: DoctorDeps): Promise<DoctorCheck[]> {
  const checks: Array<() => Promise<DoctorCheck>> = [
    async () => check('root privileges', process.getuid?.() === 0, 'running as root', 'not running as root: mounts, sockets under /run and kernel networking need root'),
    async () => {
      const probe = join(deps.config.root, `.doctor-${process.pid}`);
      try {
        await writeFile(probe, 'ok');
        await unlink(probe);
        return ok('data root', `${deps.config.root} is writable`);
      } catch (error) {
        return fail('data root', `${deps.config.root} is not writable: ${errorMessage(error)}`);
      }
    },
    async () => {
      const path = pluginSocketPath(deps.config.pluginDir, deps.config.name);
      return check('plugin socket', await socketIsLive(path), `serving ${path}`, `${path} does not answer; the engine cannot reach the agent`);
    },
    async () => {
      try {
        const info = await deps.engine.info();
        return ok('engine', `Docker Engine ${info.version} (API ${info.apiVersion}) at ${deps.engine.endpoint}`);
      } catch (error) {
        return fail('engine', `${errorMessage(error)}; start the engine or set --docker-host`);
      }
    },
    async () => {
      try {
        return ok('state store', `${deps.store.description} at revision ${await deps.store.revision()}`);
      } catch (error) {
        return fail('state store', `${deps.store.description}: ${errorMessage(error)}`);
      }
    },
    async () => {
      const filesystems = await readFile('/proc/filesystems', 'utf8').catch(() => '');
      return check('kernel: btrfs', /\tbtrfs$/m.test(filesystems), 'btrfs is available (snapshot backend)', 'btrfs is not available: the btrfs backend cannot be used');
    },
    async () => {
      const present = await stat('/sys/module/vxlan').then(() => true, () => false);
      return present ? ok('kernel: vxlan', 'vxlan module loaded') : warn('kernel: vxlan', 'vxlan module not loaded yet; it loads on first use where module loading is allowed');
    },
    async () => {
      const present = await access('/proc/self/ns/net', constants.R_OK).then(() => true, () => false);
      return check('kernel: network namespaces', present, 'available', 'network namespaces are not available');
    },
    async () => {
      const known = new Set((await deps.volumes.list()).map((volume) => volume.name));
      const orphans = (await deps.backend.listNames()).filter((name) => !known.has(name));
      return orphans.length === 0
        ? ok('orphaned data', 'every data directory belongs to a volume')
        : warn('orphaned data', `data without a volume record (left untouched): ${orphans.map((name) => deps.backend.path(name)).join(', ')}`);
    },
    async () => {
      try {
        const users = await deps.reconciler.activeUsers();
        const stale = (await deps.volumes.list()).filter((volume) => volume.mountCount > 0 && !(users.get(volume.name)?.length));
        return stale.length === 0
          ? ok('mount references', 'every recorded mount is held by an active container')
          : warn('mount references', `recorded mounts with no active container: ${stale.map((volume) => volume.name).join(', ')} (released on the next remove or agent start)`);
      } catch (error) {
        return warn('mount references', `not checked: ${errorMessage(error)}`);
      }
    },
    async () => {
      if (deps.config.store.kind !== 'etcd') return ok('local volumes', 'single host: every volume is local');
      const store = singleHostStorePath(deps.config);
      const leftInStore = await stat(store).then(() => true, () => false);
      return leftInStore
        ? warn('local volumes', `volumes of the single-host store were not carried over to the cluster, data untouched: they are left in ${store} (the agent's log at start says why for each)`)
        : ok('local volumes', 'no single-host store left to carry over');
    },
    async () => {
      const { config } = deps;
      if (config.store.kind !== 'etcd') return ok('peer port', 'single host: no peer port needed');
      if (config.pkiDir === undefined) return warn('peer port', 'no --pki-dir: volumes stay on the host that made them (no replicas, no moves); see berth cluster init');
      try {
        const tls = await loadPeerTls(config.pkiDir, config.hostName);
        const until = new X509Certificate(tls.certificate).validTo;
        return ok('peer port', `certificate of ${config.hostName} from ${config.pkiDir} valid until ${until}; listening on ${config.advertiseAddr ?? '0.0.0.0'}:${config.peerPort}`);
      } catch (error) {
        return fail('peer port', errorMessage(error));
      }
    },
  ];
  return Promise.all(checks.map((run) => run().catch((error: unknown) => fail('internal', errorMessage(error)))));
}

function ok(name: string, detail: string): DoctorCheck {
  return { name, status: 'ok', detail };
}
function warn(name: string, detail: string): DoctorCheck {
  return { name, status: 'warn', detail };
}
function fail(name: string, detail: string): DoctorCheck {
  return { name, status: 'fail', detail };
}
function check(name: string, passed: boolean, good: string, bad: string): DoctorCheck {
  return passed ? ok(name, good) : fail(name, bad);
}
