import { BerthError } from '../../plugins/errors/berth-error.js';
import type { CliContext } from '../main.js';
import { formatTable, printJson } from '../output.js';

interface HostReply {
  name: string;
  alive: boolean;
  address: string | null;
  version: string | null;
  startedAt: string | null;
  lastSeen: string | null;
  self: boolean;
}

interface NetworkReply {
  id: string;
  name: string | null;
  state: string;
  subnet: string;
  gateway: string;
  ipRange: string | null;
  vni: number | null;
  mtu: number | null;
  internal: boolean;
  options: Record<string, string>;
  createdBy: string;
  createdAt: string;
  endpoints: Record<string, number>;
  engineNetworkId: string | null;
  addresses?: { ip: string; host: string; state: string; mac: string | null }[];
}

export async function runHostCommand({ client, json, positionals }: CliContext): Promise<number> {
  const [sub] = positionals;
  if (sub !== 'ls' && sub !== 'list') throw new BerthError('ERR_INVALID_REQUEST', `unknown host command ${JSON.stringify(sub ?? '')}; use: host ls`);
  const { hosts } = await client.get<{ hosts: HostReply[] }>('/v1/hosts');
  if (json) {
    printJson(hosts);
    return 0;
  }
  const rows = hosts.map((host) => [host.name + (host.self ? ' (this host)' : ''), host.alive ? 'alive' : 'gone', host.address ?? '-', host.version ?? '-', host.lastSeen ?? '-']);
  process.stdout.write(`${formatTable(['host', 'state', 'address', 'version', 'last seen'], rows)}\n`);
  return 0;
}

export async function runNetworkCommand(context: CliContext): Promise<number> {
  const [sub, ...args] = context.positionals;
  switch (sub) {
    case 'ls':
    case 'list':
      return listNetworks(context);
    case 'inspect':
      return inspectNetworks(context, args);
    case 'create':
      return createNetwork(context, args);
    case 'rm':
    case 'remove':
      return removeNetworks(context, args);
    default:
      throw new BerthError('ERR_INVALID_REQUEST', `unknown network command ${JSON.stringify(sub ?? '')}; use: network ls | inspect NAME | create NAME | rm NAME`);
  }
}

async function listNetworks({ client, json }: CliContext): Promise<number> {
  const { networks } = await client.get<{ networks: NetworkReply[] }>('/v1/networks');
  if (json) {
    printJson(networks);
    return 0;
  }
  const rows = networks.map((network) => [
    network.name ?? `(${network.id})`,
    network.subnet,
    String(network.vni ?? '-'),
    network.state + (network.internal ? ', internal' : ''),
    Object.entries(network.endpoints).map(([host, count]) => `${host}:${count}`).join(' ') || '-',
  ]);
  process.stdout.write(`${formatTable(['name', 'subnet', 'vni', 'state', 'endpoints'], rows)}\n`);
  return 0;
}

async function inspectNetworks({ client, json }: CliContext, names: readonly string[]): Promise<number> {
  if (names.length === 0) throw new BerthError('ERR_INVALID_REQUEST', 'network inspect needs at least one network name');
  const networks: NetworkReply[] = [];
  for (const name of names) networks.push((await client.get<{ network: NetworkReply }>(`/v1/networks/${encodeURIComponent(name)}`)).network);
  if (json) {
    printJson(networks);
    return 0;
  }
  for (const network of networks) {
    process.stdout.write(
      [
        `name:     ${network.name ?? '-'} (id ${network.id})`,
        `state:    ${network.state}${network.internal ? ', internal' : ''}`,
        `subnet:   ${network.subnet}${network.ipRange ? ` (range ${network.ipRange})` : ''}, gateway ${network.gateway}`,
        `vni:      ${network.vni ?? '-'}${network.mtu ? `, mtu ${network.mtu}` : ''}`,
        `created:  ${network.createdAt} on ${network.createdBy}`,
        formatTable(['address', 'host', 'state', 'mac'], (network.addresses ?? []).map((address) => [address.ip, address.host, address.state, address.mac ?? '-'])),
        '',
      ].join('\n'),
    );
  }
  return 0;
}

async function createNetwork({ client, json, options }: CliContext, args: readonly string[]): Promise<number> {
  const [name] = args;
  if (!name || args.length > 1) throw new BerthError('ERR_INVALID_REQUEST', 'network create needs exactly one network name');
  const driverOptions: Record<string, string> = {};
  for (const pair of options.opt ?? []) {
    const equals = pair.indexOf('=');
    if (equals <= 0) throw new BerthError('ERR_INVALID_REQUEST', `option ${JSON.stringify(pair)} must be KEY=VALUE`);
    driverOptions[pair.slice(0, equals)] = pair.slice(equals + 1);
  }
  const body = { name, subnet: options.subnet, gateway: options.gateway, ipRange: options['ip-range'], internal: options.internal === true, options: driverOptions };
  const { network } = await client.post<{ network: { name: string; engineNetworkId: string | null } }>('/v1/networks', body);
  if (json) printJson(network);
  else process.stdout.write(`${network.name}\n`);
  return 0;
}

async function removeNetworks({ client, json }: CliContext, names: readonly string[]): Promise<number> {
  if (names.length === 0) throw new BerthError('ERR_INVALID_REQUEST', 'network rm needs at least one network name');
  for (const name of names) await client.delete(`/v1/networks/${encodeURIComponent(name)}`);
  if (json) printJson(names);
  else process.stdout.write(`${names.join('\n')}\n`);
  return 0;
}
