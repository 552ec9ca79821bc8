import type { AdminRoute } from '../plugins/server/admin-app.js';
import type { VolumeService } from './volume-service.js';

export function createVolumeAdminRoutes(volumes: VolumeService): AdminRoute[] {
  return [
    { method: 'GET', path: '/v1/volumes', handler: async () => ({ volumes: await volumes.list() }) },
    { method: 'GET', path: '/v1/volumes/:name', handler: async ({ params }) => ({ volume: await volumes.inspect(params.name ?? '') }) },
  ];
}
