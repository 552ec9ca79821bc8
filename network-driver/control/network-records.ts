import { recordReader, type Fields } from '../../plugins/state/record-reader.js';

/**
 * A network's lifecycle, cluster-wide:
 * - `reserved`: an engine asked for the pool (IpamDriver.RequestPool) but has not created the network yet;
 *   the engine's overlap probing and failed creates end here, released by ReleasePool;
 * - `active`: created on one host (VNI assigned); once its name is known, every host's agent creates it
 *   on its own engine;
 * - `removing`: a user removed it on some host; each host drops it from its engine once no local container
 *   uses it, and the record goes when no endpoint is left anywhere.
 */
export type NetworkState = 'reserved' | 'active' | 'removing';

export interface NetworkRecord {
  /** Cluster-wide identity (16 hex digits); the engines' own network IDs differ per host. */
  readonly id: string;
  /** The engine never sends a network's name: it is learned from the creating engine after the create. */
  readonly name?: string;
  readonly subnet: string;
  /** `--ip-range`: where automatic addresses come from (defaults to the subnet). */
  readonly ipRange?: string;
  /** Gateway address (no prefix); reserved, never handed to an endpoint. */
  readonly gateway: string;
  /** `--aux-address` values: reserved for the user, never handed to an endpoint. */
  readonly auxAddresses?: readonly string[];
  readonly vni?: number;
  /** `-o mtu=`; absent means underlay MTU minus the VXLAN overhead, per host. */
  readonly mtu?: number;
  readonly internal: boolean;
  /** The driver options as given (`-o k=v`), replayed when other hosts create the network. */
  readonly options: Readonly<Record<string, string>>;
  readonly state: NetworkState;
  readonly createdBy: string;
  readonly createdAt: string;
  readonly removeRequestedBy?: string;
}

/** All networks in one record: network changes are rare, and one compare-and-swap keeps subnets, VNIs and names unique. */
export interface NetworkIndex {
  readonly networks: Readonly<Record<string, NetworkRecord>>;
}

/**
 * One address of a network, keyed by the address: at most one record per address cluster-wide.
 * `allocated` holds the address for an engine between RequestAddress and CreateEndpoint (only user-chosen
 * addresses are recorded that early) and after DeleteEndpoint until ReleaseAddress; `active` is a live
 * endpoint, which every host of the network programs into its forwarding tables.
 */
export interface EndpointRecord {
  readonly network: string;
  readonly ip: string;
  readonly host: string;
  readonly state: 'allocated' | 'active';
  /** The engine's endpoint ID on `host` (active only). */
  readonly endpointId?: string;
  readonly mac?: string;
  readonly updatedAt: string;
}

/** A block of a network's addresses owned by one host: that host allocates inside it without asking anyone. */
export interface BlockRecord {
  readonly network: string;
  /** First address of the block. */
  readonly start: string;
  readonly size: number;
  readonly host: string;
  readonly claimedAt: string;
}

/** A live host, under its lease: gone when the agent stops renewing it. */
export interface HostRecord {
  readonly name: string;
  /** Underlay address other hosts send VXLAN traffic to (the VTEP); absent on a single host without one. */
  readonly address?: string;
  /** The agent's authenticated peer port (on `address`), when it has one. */
  readonly peerPort?: number;
  readonly version: string;
  readonly startedAt: string;
}

/** A host that ever joined, kept after its lease expires so its blocks and addresses can be reclaimed later. */
export interface MemberRecord {
  readonly name: string;
  readonly address?: string;
  readonly firstSeen: string;
  readonly lastSeen: string;
}

/** This host's engine network ID for a cluster network (the engine addresses networks by its own IDs). */
export interface LocalNetworkRecord {
  readonly engineNetworkId: string;
  readonly network: string;
  readonly createdAt: string;
}

const NETWORK_STATES: ReadonlySet<string> = new Set(['reserved', 'active', 'removing']);

const { object, str, optionalStr, optionalInt, corrupt } = recordReader('network state');

/** Spreads only defined optional fields (exactOptionalPropertyTypes). */
function defined<T extends Fields>(fields: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)) as { [K in keyof T]: Exclude<T[K], undefined> };
}

function parseNetwork(key: string, fields: Fields): NetworkRecord {
  const state = str(key, fields, 'state');
  if (!NETWORK_STATES.has(state)) throw corrupt(key, `state ${state} is invalid`);
  const options = fields.options;
  if (typeof options !== 'object' || options === null || !Object.values(options).every((value) => typeof value === 'string')) throw corrupt(key, 'options are invalid');
  return {
    id: str(key, fields, 'id'),
    subnet: str(key, fields, 'subnet'),
    gateway: str(key, fields, 'gateway'),
    internal: fields.internal === true,
    options: options as Record<string, string>,
    state: state as NetworkState,
    createdBy: str(key, fields, 'createdBy'),
    createdAt: str(key, fields, 'createdAt'),
    ...(Array.isArray(fields.auxAddresses) && fields.auxAddresses.every((value) => typeof value === 'string') ? { auxAddresses: fields.auxAddresses as string[] } : {}),
    ...defined({
      name: optionalStr(key, fields, 'name'),
      ipRange: optionalStr(key, fields, 'ipRange'),
      vni: optionalInt(key, fields, 'vni'),
      mtu: optionalInt(key, fields, 'mtu'),
      removeRequestedBy: optionalStr(key, fields, 'removeRequestedBy'),
    }),
  };
}

export function parseNetworkIndex(key: string, text: string): NetworkIndex {
  const fields = object(key, text);
  const networks = fields.networks;
  if (typeof networks !== 'object' || networks === null || Array.isArray(networks)) throw corrupt(key, 'networks are missing');
  const parsed: Record<string, NetworkRecord> = {};
  for (const [id, value] of Object.entries(networks)) {
    if (typeof value !== 'object' || value === null) throw corrupt(key, `network ${id} is not an object`);
    const record = parseNetwork(`${key}#${id}`, value as Fields);
    if (record.id !== id) throw corrupt(key, `network ${id} carries id ${record.id}`);
    parsed[id] = record;
  }
  return { networks: parsed };
}

export function parseEndpointRecord(key: string, text: string): EndpointRecord {
  const fields = object(key, text);
  const state = str(key, fields, 'state');
  if (state !== 'allocated' && state !== 'active') throw corrupt(key, `state ${state} is invalid`);
  return {
    network: str(key, fields, 'network'),
    ip: str(key, fields, 'ip'),
    host: str(key, fields, 'host'),
    state,
    updatedAt: str(key, fields, 'updatedAt'),
    ...defined({ endpointId: optionalStr(key, fields, 'endpointId'), mac: optionalStr(key, fields, 'mac') }),
  };
}

export function parseBlockRecord(key: string, text: string): BlockRecord {
  const fields = object(key, text);
  const size = optionalInt(key, fields, 'size');
  if (size === undefined || size < 1) throw corrupt(key, 'size is invalid');
  return { network: str(key, fields, 'network'), start: str(key, fields, 'start'), size, host: str(key, fields, 'host'), claimedAt: str(key, fields, 'claimedAt') };
}

export function parseHostRecord(key: string, text: string): HostRecord {
  const fields = object(key, text);
  return {
    name: str(key, fields, 'name'),
    version: str(key, fields, 'version'),
    startedAt: str(key, fields, 'startedAt'),
    ...defined({ address: optionalStr(key, fields, 'address'), peerPort: optionalInt(key, fields, 'peerPort') }),
  };
}

export function parseMemberRecord(key: string, text: string): MemberRecord {
  const fields = object(key, text);
  return {
    name: str(key, fields, 'name'),
    firstSeen: str(key, fields, 'firstSeen'),
    lastSeen: str(key, fields, 'lastSeen'),
    ...defined({ address: optionalStr(key, fields, 'address') }),
  };
}

export function parseLocalNetworkRecord(key: string, text: string): LocalNetworkRecord {
  const fields = object(key, text);
  return { engineNetworkId: str(key, fields, 'engineNetworkId'), network: str(key, fields, 'network'), createdAt: str(key, fields, 'createdAt') };
}
