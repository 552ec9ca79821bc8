import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { parseArgs } from 'node:util';
import type { LevelWithSilent } from 'pino';
import { BerthError, errorMessage } from '../errors/berth-error.js';
import { LOG_LEVELS } from '../logging/logger.js';
import { formatByteSize, parseByteSize } from '../util/byte-size.js';
import { parseDuration } from '../util/duration.js';
import { PLUGIN_NAME_PATTERN } from './plugin-name.js';

export type BackendChoice = 'auto' | 'dir' | 'btrfs';
export type StoreConfig = { readonly kind: 'file' } | { readonly kind: 'etcd'; readonly endpoints: readonly string[] };

export interface AgentConfig {
  /** Plugin name: the engine finds the agent as `<pluginDir>/<name>.sock`. */
  readonly name: string;
  /** Data root: volumes, state database, staging areas. */
  readonly root: string;
  /** Directory of the root-only admin socket `<runDir>/<name>.sock`. */
  readonly runDir: string;
  /** Directory the engine scans for legacy plugin sockets. */
  readonly pluginDir: string;
  readonly store: StoreConfig;
  readonly backend: BackendChoice;
  /** Pool file for the btrfs backend: created (sparse), formatted once and loop-mounted at `<root>/pool`. */
  readonly btrfsPool?: string;
  /** Size in bytes of a pool file the agent creates; an existing pool keeps its size. */
  readonly poolSize: number;
  /** Engine API endpoint, used to reconcile mounts against the engine's containers. */
  readonly dockerHost: string;
  readonly logLevel: LevelWithSilent;
  /** This host's name in a shared store (etcd); defaults to the machine's host name. */
  readonly hostName: string;
  /** Largest request body accepted on either socket. */
  readonly bodyLimitBytes: number;
  /** This host's underlay address: other hosts send VXLAN traffic here (the VTEP). */
  readonly advertiseAddr?: string;
  /** Subnets for networks created without --subnet come from here, one /networkPoolPrefix each. */
  readonly networkPool: string;
  readonly networkPoolPrefix: number;
  /** UDP port of the VXLAN tunnels (the same on every host). */
  readonly vxlanPort: number;
  /** Lease TTL of this host's registration: how soon other hosts notice it is gone. */
  readonly hostTtlSeconds: number;
  /** How long a host must be gone before its addresses and address blocks are given to others. */
  readonly reclaimAfterMs: number;
  /** TCP port of the authenticated peer port (volume replication between hosts). */
  readonly peerPort: number;
  /** Directory with ca.crt, <host>.crt and <host>.key (`berth cluster init`); without it there is no peer port. */
  readonly pkiDir?: string;
  /** A replica host gone this long is replaced by another live host (its copy is rebuilt there). */
  readonly replaceReplicasAfterMs: number;
}

export const DEFAULT_CONFIG: AgentConfig = Object.freeze({
  name: 'berth',
  root: '/var/lib/berth',
  runDir: '/run/berth',
  pluginDir: '/run/docker/plugins',
  store: Object.freeze({ kind: 'file' }) as StoreConfig,
  backend: 'auto',
  poolSize: 20 * 1024 ** 3,
  dockerHost: 'unix:///var/run/docker.sock',
  logLevel: 'info',
  hostName: hostname(),
  bodyLimitBytes: 1024 * 1024,
  networkPool: '10.210.0.0/16',
  networkPoolPrefix: 24,
  vxlanPort: 4789,
  hostTtlSeconds: 10,
  reclaimAfterMs: 3_600_000,
  peerPort: 7470,
  replaceReplicasAfterMs: 300_000,
});

/** Flag name → (environment variable, config file key). */
const SETTINGS = {
  name: { env: 'BERTH_NAME', key: 'name' },
  root: { env: 'BERTH_ROOT', key: 'root' },
  'run-dir': { env: 'BERTH_RUN_DIR', key: 'runDir' },
  'plugin-dir': { env: 'BERTH_PLUGIN_DIR', key: 'pluginDir' },
  store: { env: 'BERTH_STORE', key: 'store' },
  backend: { env: 'BERTH_BACKEND', key: 'backend' },
  'btrfs-pool': { env: 'BERTH_BTRFS_POOL', key: 'btrfsPool' },
  'pool-size': { env: 'BERTH_POOL_SIZE', key: 'poolSize' },
  'docker-host': { env: 'BERTH_DOCKER_HOST', key: 'dockerHost' },
  'log-level': { env: 'BERTH_LOG_LEVEL', key: 'logLevel' },
  'host-name': { env: 'BERTH_HOST_NAME', key: 'hostName' },
  'advertise-addr': { env: 'BERTH_ADVERTISE_ADDR', key: 'advertiseAddr' },
  'network-pool': { env: 'BERTH_NETWORK_POOL', key: 'networkPool' },
  'vxlan-port': { env: 'BERTH_VXLAN_PORT', key: 'vxlanPort' },
  'host-ttl': { env: 'BERTH_HOST_TTL', key: 'hostTtl' },
  'reclaim-after': { env: 'BERTH_RECLAIM_AFTER', key: 'reclaimAfter' },
  'peer-port': { env: 'BERTH_PEER_PORT', key: 'peerPort' },
  'pki-dir': { env: 'BERTH_PKI_DIR', key: 'pkiDir' },
  'replace-replicas-after': { env: 'BERTH_REPLACE_REPLICAS_AFTER', key: 'replaceReplicasAfter' },
} as const;
type SettingFlag = keyof typeof SETTINGS;

export const AGENT_USAGE = `usage: berth agent [options]
  --name NAME          plugin name (default berth; env BERTH_NAME)
  --root DIR           data root (default /var/lib/berth; env BERTH_ROOT)
  --run-dir DIR        admin socket directory (default /run/berth; env BERTH_RUN_DIR)
  --plugin-dir DIR     engine plugin socket directory (default /run/docker/plugins; env BERTH_PLUGIN_DIR)
  --store STORE        state store: file (embedded, default) or etcd://HOST:PORT,... (env BERTH_STORE)
  --host-name NAME     this host's name in a shared etcd store (default: the machine's host name; env BERTH_HOST_NAME)
  --backend KIND       storage backend: auto, dir or btrfs (default auto; env BERTH_BACKEND);
                       auto picks btrfs when the data root is on btrfs or a pool is set, else dir
  --btrfs-pool FILE    btrfs pool file the agent creates and loop-mounts at <root>/pool; implies btrfs
                       (env BERTH_BTRFS_POOL)
  --pool-size SIZE     size of a new pool file, units K, M, G, T, at least 256M (default 20G; env BERTH_POOL_SIZE)
  --docker-host URL    engine API socket (default unix:///var/run/docker.sock; env BERTH_DOCKER_HOST or DOCKER_HOST)
  --log-level LEVEL    ${LOG_LEVELS.join(', ')} (default info; env BERTH_LOG_LEVEL)
  --advertise-addr IP  this host's underlay address, the VXLAN endpoint other hosts send to
                       (default: none, single host; env BERTH_ADVERTISE_ADDR)
  --network-pool CIDR[:PREFIX]  where subnets of networks created without --subnet come from
                       (default 10.210.0.0/16:24; env BERTH_NETWORK_POOL)
  --vxlan-port PORT    UDP port of the VXLAN tunnels, the same on every host (default 4789; env BERTH_VXLAN_PORT)
  --host-ttl DURATION  lease of this host's registration; other hosts purge its entries this long after
                       it stops (default 10s; env BERTH_HOST_TTL)
  --reclaim-after DURATION  a host gone this long loses its addresses to the others (default 1h; env BERTH_RECLAIM_AFTER)
  --pki-dir DIR        cluster certificates (ca.crt, <host>.crt, <host>.key from berth cluster init); enables the
                       peer port other agents replicate volumes through (env BERTH_PKI_DIR)
  --peer-port PORT     TCP port of the peer port, on the advertised address (default 7470; env BERTH_PEER_PORT)
  --replace-replicas-after DURATION  a host keeping a replica that is gone this long is replaced by another
                       live host, where the copy is rebuilt (default 5m; env BERTH_REPLACE_REPLICAS_AFTER)
  --config FILE        JSON file with the same settings in camelCase (env BERTH_CONFIG)`;

function invalid(message: string): BerthError {
  return new BerthError('ERR_INVALID_CONFIG', message);
}

/** The single-host file store of an agent's data root (also read once when the host joins a cluster). */
export function singleHostStorePath(config: Pick<AgentConfig, 'root'>): string {
  return join(config.root, 'state', 'berth.db');
}

/** Precedence: flags, then BERTH_* variables, then the config file, then defaults. */
export function loadAgentConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): AgentConfig {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        ...Object.fromEntries(Object.keys(SETTINGS).map((flag) => [flag, { type: 'string' as const }])),
        config: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    throw invalid(`${errorMessage(error)}\n${AGENT_USAGE}`);
  }
  const flags = parsed.values as Partial<Record<SettingFlag | 'config', string>>;
  const configPath = flags.config ?? env.BERTH_CONFIG;
  const file = configPath ? readConfigFile(configPath) : {};

  const pick = (flag: SettingFlag): string | undefined => {
    const { env: variable, key } = SETTINGS[flag];
    const fromFile = file[key];
    if (fromFile !== undefined && typeof fromFile !== 'string') throw invalid(`config file key ${key} must be a string`);
    return flags[flag] ?? env[variable] ?? (flag === 'docker-host' ? env.DOCKER_HOST : undefined) ?? fromFile;
  };

  const name = pick('name') ?? DEFAULT_CONFIG.name;
  if (!PLUGIN_NAME_PATTERN.test(name)) throw invalid(`plugin name ${JSON.stringify(name)} must match ${PLUGIN_NAME_PATTERN.source}`);
  const backend = pick('backend') ?? DEFAULT_CONFIG.backend;
  if (backend !== 'auto' && backend !== 'dir' && backend !== 'btrfs') throw invalid(`backend ${JSON.stringify(backend)} is not one of auto, dir, btrfs`);
  const logLevel = pick('log-level') ?? DEFAULT_CONFIG.logLevel;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw invalid(`log level ${JSON.stringify(logLevel)} is not one of ${LOG_LEVELS.join(', ')}`);
  const dockerHost = pick('docker-host') ?? DEFAULT_CONFIG.dockerHost;
  if (!dockerHost.startsWith('unix://') && !/^(tcp|http):\/\//.test(dockerHost)) throw invalid(`docker host ${JSON.stringify(dockerHost)} must be unix://PATH or tcp://HOST:PORT`);

  const root = absolutePath('root', pick('root') ?? DEFAULT_CONFIG.root);
  const poolText = pick('btrfs-pool');
  const btrfsPool = poolText === undefined ? undefined : absolutePath('btrfs-pool', poolText);
  const poolSizeText = pick('pool-size');
  if (btrfsPool !== undefined && backend === 'dir') throw invalid('btrfs-pool needs backend btrfs or auto, not dir');
  const poolMountpoint = join(root, 'pool');
  if (btrfsPool !== undefined && (btrfsPool === poolMountpoint || btrfsPool.startsWith(`${poolMountpoint}/`))) {
    throw invalid(`btrfs-pool ${JSON.stringify(btrfsPool)} must lie outside ${poolMountpoint}, where the pool is mounted`);
  }
  if (btrfsPool === undefined && poolSizeText !== undefined) throw invalid('pool-size applies only with btrfs-pool');
  const poolSize = poolSizeText === undefined ? DEFAULT_CONFIG.poolSize : parsePoolSize(poolSizeText);

  return Object.freeze({
    name,
    root,
    runDir: absolutePath('run-dir', pick('run-dir') ?? DEFAULT_CONFIG.runDir),
    pluginDir: absolutePath('plugin-dir', pick('plugin-dir') ?? DEFAULT_CONFIG.pluginDir),
    store: parseStore(pick('store') ?? 'file'),
    backend,
    ...(btrfsPool === undefined ? {} : { btrfsPool }),
    poolSize,
    dockerHost,
    logLevel: logLevel as LevelWithSilent,
    hostName: parseHostName(pick('host-name') ?? hostname()),
    bodyLimitBytes: DEFAULT_CONFIG.bodyLimitBytes,
    ...parseNetworkSettings(pick),
    ...parsePeerSettings(pick),
  });
}

function parseNetworkSettings(pick: (flag: SettingFlag) => string | undefined): Pick<AgentConfig, 'advertiseAddr' | 'networkPool' | 'networkPoolPrefix' | 'vxlanPort' | 'hostTtlSeconds' | 'reclaimAfterMs'> {
  const advertiseAddr = pick('advertise-addr');
  if (advertiseAddr !== undefined && !IPV4.test(advertiseAddr)) throw invalid(`advertise-addr ${JSON.stringify(advertiseAddr)} must be an IPv4 address`);
  const poolText = pick('network-pool') ?? `${DEFAULT_CONFIG.networkPool}:${DEFAULT_CONFIG.networkPoolPrefix}`;
  const pool = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)(?::(\d+))?$/.exec(poolText);
  const poolPrefix = Number(pool?.[2]);
  const networkPrefix = pool?.[3] === undefined ? Math.max(24, poolPrefix) : Number(pool[3]);
  if (!pool || !IPV4.test(pool[1]!) || poolPrefix < 8 || poolPrefix > 29 || networkPrefix < poolPrefix || networkPrefix > 29) {
    throw invalid(`network-pool ${JSON.stringify(poolText)} must be CIDR[:PREFIX] such as 10.210.0.0/16:24 (pool /8 to /29, networks no larger than the pool)`);
  }
  const portText = pick('vxlan-port') ?? String(DEFAULT_CONFIG.vxlanPort);
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) throw invalid(`vxlan-port ${JSON.stringify(portText)} must be a port from 1 to 65535`);
  const ttlText = pick('host-ttl');
  const ttl = ttlText === undefined ? DEFAULT_CONFIG.hostTtlSeconds * 1000 : parseDuration(ttlText);
  if (ttl === undefined || ttl < 2000 || ttl % 1000 !== 0) throw invalid(`host-ttl ${JSON.stringify(ttlText)} must be whole seconds, at least 2s, such as 10s`);
  const reclaimText = pick('reclaim-after');
  const reclaim = reclaimText === undefined ? DEFAULT_CONFIG.reclaimAfterMs : parseDuration(reclaimText);
  if (reclaim === undefined) throw invalid(`reclaim-after ${JSON.stringify(reclaimText)} must be a duration such as 1h or 30m`);
  return {
    ...(advertiseAddr === undefined ? {} : { advertiseAddr }),
    networkPool: `${pool[1]}/${poolPrefix}`,
    networkPoolPrefix: networkPrefix,
    vxlanPort: Number(portText),
    hostTtlSeconds: ttl / 1000,
    reclaimAfterMs: reclaim,
  };
}

function parsePeerSettings(pick: (flag: SettingFlag) => string | undefined): Pick<AgentConfig, 'peerPort' | 'pkiDir' | 'replaceReplicasAfterMs'> {
  const portText = pick('peer-port') ?? String(DEFAULT_CONFIG.peerPort);
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) throw invalid(`peer-port ${JSON.stringify(portText)} must be a port from 1 to 65535`);
  const pkiDir = pick('pki-dir');
  const replaceText = pick('replace-replicas-after');
  const replaceAfter = replaceText === undefined ? DEFAULT_CONFIG.replaceReplicasAfterMs : parseDuration(replaceText);
  if (replaceAfter === undefined || replaceAfter < 1000) throw invalid(`replace-replicas-after ${JSON.stringify(replaceText)} must be a duration of at least 1s, such as 5m`);
  return { peerPort: Number(portText), replaceReplicasAfterMs: replaceAfter, ...(pkiDir === undefined ? {} : { pkiDir: absolutePath('pki-dir', pkiDir) }) };
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function parseHostName(value: string): string {
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/.test(value)) throw invalid(`host name ${JSON.stringify(value)} must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}`);
  return value;
}

function absolutePath(setting: string, value: string): string {
  if (!isAbsolute(value)) throw invalid(`${setting} ${JSON.stringify(value)} must be an absolute path`);
  return value.replace(/\/+$/, '') || '/';
}

/** btrfs needs room for its metadata (DUP) and system chunks; smaller pools fill up at once. */
const MIN_POOL_SIZE = 256 * 1024 ** 2;

function parsePoolSize(value: string): number {
  const bytes = parseByteSize(value);
  if (bytes === undefined) throw invalid(`pool-size ${JSON.stringify(value)} must be a size such as 20G (units K, M, G, T)`);
  if (bytes < MIN_POOL_SIZE) throw invalid(`pool-size ${JSON.stringify(value)} is below the ${formatByteSize(MIN_POOL_SIZE)} a btrfs pool needs`);
  return bytes;
}

function parseStore(value: string): StoreConfig {
  if (value === 'file') return Object.freeze({ kind: 'file' });
  if (value.startsWith('etcd://')) {
    const endpoints = value.slice('etcd://'.length).split(',').filter((endpoint) => endpoint.length > 0);
    if (endpoints.length === 0) throw invalid(`store ${JSON.stringify(value)} names no etcd endpoint`);
    return Object.freeze({ kind: 'etcd', endpoints: Object.freeze(endpoints) });
  }
  throw invalid(`store ${JSON.stringify(value)} must be "file" or "etcd://HOST:PORT,..."`);
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw invalid(`cannot read config file ${path}: ${errorMessage(error)}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw invalid(`config file ${path} is not valid JSON: ${errorMessage(error)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid(`config file ${path} must hold a JSON object`);
  const known = new Set<string>(Object.values(SETTINGS).map((setting) => setting.key));
  const unknown = Object.keys(value).filter((key) => !known.has(key));
  if (unknown.length > 0) throw invalid(`config file ${path} has unknown keys ${unknown.join(', ')}; known keys: ${[...known].join(', ')}`);
  return value as Record<string, unknown>;
}
