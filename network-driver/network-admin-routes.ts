import type { EngineNetworks } from '../plugins/engine/engine.js';
import { BerthError } from '../plugins/errors/berth-error.js';
import type { AdminRoute } from '../plugins/server/admin-app.js';
import type { ClusterView } from './control/cluster-view.js';
import type { NetworkRecord } from './control/network-records.js';

export interface NetworkView {
  readonly id: string;
  readonly name: string | null;
  readonly state: string;
  readonly subnet: string;
  readonly gateway: string;
  readonly ipRange: string | null;
  readonly vni: number | null;
  readonly mtu: number | null;
  readonly internal: boolean;
  readonly options: Readonly<Record<string, string>>;
  readonly createdBy: string;
  readonly createdAt: string;
  /** Active endpoints per host. */
  readonly endpoints: Readonly<Record<string, number>>;
  /** This host's engine ID of the network, when its engine has it. */
  readonly engineNetworkId: string | null;
}

/** Operator routes: `berth host ls`, `berth network ls|inspect|create|rm`. */
export function createNetworkAdminRoutes(view: ClusterView, engine: EngineNetworks, driverName: string, requestRemoval: (networkId: string) => Promise<void>): AdminRoute[] {
  const describe = (network: NetworkRecord): NetworkView => {
    const endpoints: Record<string, number> = {};
    for (const endpoint of view.endpoints(network.id)) if (endpoint.state === 'active') endpoints[endpoint.host] = (endpoints[endpoint.host] ?? 0) + 1;
    const local = [...view.localNetworks().values()].find((candidate) => candidate.network === network.id);
    return {
      id: network.id,
      name: network.name ?? null,
      state: network.state,
      subnet: network.subnet,
      gateway: network.gateway,
      ipRange: network.ipRange ?? null,
      vni: network.vni ?? null,
      mtu: network.mtu ?? null,
      internal: network.internal,
      options: network.options,
      createdBy: network.createdBy,
      createdAt: network.createdAt,
      endpoints,
      engineNetworkId: local?.engineNetworkId ?? null,
    };
  };
  const find = (nameOrId: string): NetworkRecord => {
    const network = view.networks().find((candidate) => candidate.name === nameOrId || candidate.id === nameOrId);
    if (!network) throw new BerthError('ERR_NETWORK_NOT_FOUND', `no berth network named ${JSON.stringify(nameOrId)}`);
    return network;
  };
  return [
    {
      method: 'GET',
      path: '/v1/hosts',
      handler: () => {
        const live = view.liveHosts();
        const members = new Map(view.members().map((member) => [member.name, member]));
        const names = [...new Set([...live.keys(), ...members.keys()])].sort();
        return {
          hosts: names.map((name) => ({
            name,
            alive: live.has(name),
            address: live.get(name)?.address ?? members.get(name)?.address ?? null,
            version: live.get(name)?.version ?? null,
            startedAt: live.get(name)?.startedAt ?? null,
            lastSeen: live.has(name) ? new Date().toISOString() : (members.get(name)?.lastSeen ?? null),
            self: name === view.hostName,
          })),
        };
      },
    },
    { method: 'GET', path: '/v1/networks', handler: () => ({ networks: view.networks().filter((network) => network.state !== 'reserved').map(describe) }) },
    {
      method: 'GET',
      path: '/v1/networks/:name',
      handler: ({ params }) => {
        const network = find(params.name ?? '');
        return { network: { ...describe(network), addresses: view.endpoints(network.id).map(({ ip, host, state, mac }) => ({ ip, host, state, mac: mac ?? null })) } };
      },
    },
    {
      method: 'POST',
      path: '/v1/networks',
      handler: async ({ body }) => {
        const text = (field: string): string | undefined => {
          const value = body[field];
          if (value === undefined || value === null || value === '') return undefined;
          if (typeof value !== 'string') throw new BerthError('ERR_INVALID_REQUEST', `${field} must be a string`);
          return value;
        };
        const name = text('name');
        if (!name) throw new BerthError('ERR_INVALID_REQUEST', 'network create needs a name');
        const options = body.options ?? {};
        if (typeof options !== 'object' || options === null || !Object.values(options).every((value) => typeof value === 'string')) {
          throw new BerthError('ERR_INVALID_REQUEST', 'options must be an object of strings');
        }
        const subnet = text('subnet');
        const gateway = text('gateway');
        const ipRange = text('ipRange');
        // Through the engine, exactly as `docker network create` would: the engine calls back into this agent.
        await engine.createNetwork({
          name,
          driver: driverName,
          ipamDriver: driverName,
          ...(subnet ? { subnet } : {}),
          ...(gateway ? { gateway } : {}),
          ...(ipRange ? { ipRange } : {}),
          ipamOptions: {},
          options: options as Record<string, string>,
          internal: body.internal === true,
          labels: {},
        });
        const created = await engine.inspectNetwork(name);
        return { network: { name, engineNetworkId: created?.id ?? null } };
      },
    },
    {
      method: 'DELETE',
      path: '/v1/networks/:name',
      handler: async ({ params }) => {
        const network = find(params.name ?? '');
        const local = [...view.localNetworks().values()].find((candidate) => candidate.network === network.id);
        // Through this engine when it has the network (it refuses while local containers use it), else directly.
        if (local) await engine.removeNetwork(local.engineNetworkId);
        else await requestRemoval(network.id);
        return { network: { name: network.name ?? network.id, removed: true } };
      },
    },
  ];
}
