import type { PluginApi } from '../plugins/server/plugin-app.js';
import { optionalString, optionalStringMap, requiredString } from '../plugins/wire/request-fields.js';
import type { IpamService } from './ipam-service.js';

/** The IpamDriver methods, one to one with the wire (docker-plugin-protocol.md §4). */
export function createIpamPluginApi(ipam: IpamService): PluginApi {
  return {
    implements: 'IpamDriver',
    methods: {
      GetCapabilities: () => ({ RequiresMACAddress: false, RequiresRequestReplay: false }),
      GetDefaultAddressSpaces: () => ipam.defaultAddressSpaces(),
      RequestPool: async (body, { log }) => {
        // Every real RequestPool names its address space; an empty body is a retry that lost its payload, and
        // guessing would reserve a subnet the user did not ask for.
        requiredString(body, 'AddressSpace');
        const grant = await ipam.requestPool(
          { pool: optionalString(body, 'Pool'), subPool: optionalString(body, 'SubPool'), options: optionalStringMap(body, 'Options'), v6: body.V6 === true },
          log,
        );
        return { PoolID: grant.poolId, Pool: grant.pool, Data: grant.data };
      },
      ReleasePool: async (body, { log }) => {
        await ipam.releasePool(requiredString(body, 'PoolID'), log);
        return {};
      },
      RequestAddress: async (body, { log }) => ({
        Address: await ipam.requestAddress(requiredString(body, 'PoolID'), optionalString(body, 'Address'), optionalStringMap(body, 'Options'), log),
        Data: {},
      }),
      ReleaseAddress: async (body, { log }) => {
        await ipam.releaseAddress(requiredString(body, 'PoolID'), requiredString(body, 'Address'), log);
        return {};
      },
    },
  };
}

