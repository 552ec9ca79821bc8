import type { PluginApi } from '../plugins/server/plugin-app.js';
import { optionalStringMap, requiredString } from '../plugins/wire/request-fields.js';
import type { VolumeCapabilitiesResponse, VolumeGetResponse, VolumeListResponse, VolumeMountResponse, WireVolume } from '../plugins/wire/volume-wire.js';
import type { VolumeDriverOps } from './volume-driver-ops.js';
import type { VolumeView } from './volume-service.js';

/** The eight VolumeDriver methods, one to one with the wire (docker-plugin-protocol.md §2). */
export function createVolumePluginApi(volumes: VolumeDriverOps): PluginApi {
  return {
    implements: 'VolumeDriver',
    methods: {
      Create: async (body, { log }) => {
        await volumes.create(requiredString(body, 'Name'), optionalStringMap(body, 'Opts'), log);
        return {};
      },
      Remove: async (body, { log }) => {
        await volumes.remove(requiredString(body, 'Name'), log);
        return {};
      },
      Mount: async (body, { log }): Promise<VolumeMountResponse> => ({
        Mountpoint: await volumes.mount(requiredString(body, 'Name'), requiredString(body, 'ID'), log),
      }),
      Unmount: async (body, { log }) => {
        await volumes.unmount(requiredString(body, 'Name'), requiredString(body, 'ID'), log);
        return {};
      },
      Path: async (body): Promise<VolumeMountResponse> => ({ Mountpoint: await volumes.path(requiredString(body, 'Name')) }),
      Get: async (body): Promise<VolumeGetResponse> => ({ Volume: toWireVolume(await volumes.get(requiredString(body, 'Name'))) }),
      List: async (): Promise<VolumeListResponse> => ({
        Volumes: (await volumes.listMountpoints()).map((volume) => ({ Name: volume.name, Mountpoint: volume.mountpoint })),
      }),
      Capabilities: (): VolumeCapabilitiesResponse => ({ Capabilities: { Scope: 'local' } }),
    },
  };
}

/** `Status` is what `docker volume inspect` shows under the volume's Status. */
export function toWireVolume(volume: VolumeView): WireVolume {
  return {
    Name: volume.name,
    Mountpoint: volume.mountpoint,
    CreatedAt: volume.createdAt,
    Status: {
      backend: volume.backend,
      usedBytes: volume.usedBytes,
      usageMeasuredAt: volume.usageMeasuredAt,
      mountCount: volume.mountCount,
      ...(volume.snapshots !== undefined ? { snapshots: volume.snapshots } : {}),
      ...(volume.options.size !== undefined ? { sizeLimit: volume.options.size } : {}),
      ...(volume.replication !== undefined ? { replication: volume.replication } : {}),
    },
  };
}
