import type { AdminRoute } from '../../plugins/server/admin-app.js';
import type { SnapshotService } from './snapshot-service.js';

export function createSnapshotAdminRoutes(snapshots: SnapshotService): AdminRoute[] {
  return [
    { method: 'GET', path: '/v1/volumes/:volume/snapshots', handler: async ({ params }) => ({ snapshots: await snapshots.list(params.volume ?? '') }) },
    {
      method: 'POST',
      path: '/v1/volumes/:volume/snapshots',
      handler: async ({ params, body }) => ({ snapshot: await snapshots.create(params.volume ?? '', typeof body.name === 'string' ? body.name : undefined) }),
    },
    {
      method: 'DELETE',
      path: '/v1/volumes/:volume/snapshots/:snapshot',
      handler: async ({ params }) => {
        await snapshots.remove(params.volume ?? '', params.snapshot ?? '');
        return { removed: `${params.volume}@${params.snapshot}` };
      },
    },
    {
      method: 'POST',
      path: '/v1/volumes/:volume/snapshots/:snapshot/restore',
      handler: async ({ params, body }) => ({ restore: await snapshots.restore(params.volume ?? '', params.snapshot ?? '', { force: body.force === true }) }),
    },
  ];
}
