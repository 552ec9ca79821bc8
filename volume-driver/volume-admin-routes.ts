import type { AdminRoute } from '../plugins/server/admin-app.js';
import type { VolumeDriverOps } from './volume-driver-ops.js';

export function createVolumeAdminRoutes(volumes: VolumeDriverOps): AdminRoute[] {
  return [
    { method: 'GET', path: '/v1/volumes', handler: async () => ({ volumes: await volumes.list() }) },
    { method: 'GET', path: '/v1/volumes/:name', handler: async ({ params }) => ({ volume: await volumes.inspect(params.name ?? '') }) },
  ];
}
