import { BerthError } from '../plugins/errors/berth-error.js';
import type { PluginApi } from '../plugins/server/plugin-app.js';
import { optionalString, requiredString } from '../plugins/wire/request-fields.js';
import { genericOptions } from './network-options.js';
import type { NetworkService } from './network-service.js';

/**
 * The NetworkDriver methods, one to one with the wire (docker-plugin-protocol.md §3). Local scope: the
 * engine keeps each network in its own store, and Berth makes the network one across hosts itself
 * (swarm's global scope needs managed plugins and a swarm; see the README).
 */
export function createNetworkPluginApi(networks: NetworkService): PluginApi {
  return {
    implements: 'NetworkDriver',
    methods: {
      GetCapabilities: () => ({ Scope: 'local', ConnectivityScope: 'global' }),
      CreateNetwork: async (body, { log }) => {
        const options = objectField(body, 'Options');
        const ipv4 = firstIpamData(body, 'IPv4Data');
        const ipv6 = firstIpamData(body, 'IPv6Data');
        await networks.createNetwork(
          {
            engineNetworkId: requiredString(body, 'NetworkID'),
            options: genericOptions(options),
            internal: options['com.docker.network.internal'] === true,
            ipv6: options['com.docker.network.enable_ipv6'] === true || ipv6 !== undefined,
            ...(ipv4?.Pool ? { pool: ipv4.Pool } : {}),
            ...(ipv4?.Gateway ? { gateway: ipv4.Gateway } : {}),
          },
          log,
        );
        return {};
      },
      DeleteNetwork: async (body, { log }) => {
        await networks.deleteNetwork(requiredString(body, 'NetworkID'), log);
        return {};
      },
      CreateEndpoint: async (body, { log }) => {
        const iface = objectField(body, 'Interface');
        if (typeof iface.AddressIPv6 === 'string' && iface.AddressIPv6) throw new BerthError('ERR_INVALID_OPTION', 'IPv6 addresses are not supported on berth networks yet');
        const mac = await networks.createEndpoint(
          requiredString(body, 'NetworkID'),
          requiredString(body, 'EndpointID'),
          optionalString(iface, 'Address'),
          optionalString(iface, 'MacAddress'),
          log,
        );
        // A field the engine already set must come back empty, or it rolls the endpoint back (§3.3).
        return mac.generated ? { Interface: { MacAddress: mac.mac } } : {};
      },
      DeleteEndpoint: async (body, { log }) => {
        await networks.deleteEndpoint(requiredString(body, 'NetworkID'), requiredString(body, 'EndpointID'), log);
        return {};
      },
      EndpointOperInfo: () => ({ Value: {} }),
      Join: async (body) => {
        const joined = await networks.join(requiredString(body, 'NetworkID'), requiredString(body, 'EndpointID'));
        // No gateway: the engine gives the container its default route through docker_gwbridge (egress and
        // published ports, as with Docker's overlay); internal networks get none.
        return { InterfaceName: { SrcName: joined.srcName, DstPrefix: 'eth' }, DisableGatewayService: false };
      },
      Leave: async (body) => {
        await networks.leave(requiredString(body, 'EndpointID'));
        return {};
      },
      ProgramExternalConnectivity: () => ({}),
      RevokeExternalConnectivity: () => ({}),
      DiscoverNew: () => ({}),
      DiscoverDelete: () => ({}),
    },
  };
}

function objectField(body: Record<string, unknown>, field: string): Record<string, unknown> {
  const value = body[field];
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new BerthError('ERR_INVALID_REQUEST', `${field} must be an object`);
  return value as Record<string, unknown>;
}

function firstIpamData(body: Record<string, unknown>, field: string): { Pool?: string; Gateway?: string } | undefined {
  const value = body[field];
  if (!Array.isArray(value) || value.length === 0) return undefined;
  const first = value[0] as Record<string, unknown>;
  return {
    ...(typeof first.Pool === 'string' ? { Pool: first.Pool } : {}),
    ...(typeof first.Gateway === 'string' ? { Gateway: first.Gateway } : {}),
  };
}
