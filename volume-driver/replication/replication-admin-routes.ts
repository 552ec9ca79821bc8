import type { AdminRoute } from '../../plugins/server/admin-app.js';
import { requiredString } from '../../plugins/wire/request-fields.js';
import { validateVolumeName } from '../volume-name.js';
import type { ReplicationService } from './replication-service.js';

/** `berth volume promote` and `berth volume replicate`. */
export function createReplicationAdminRoutes(replication: ReplicationService): AdminRoute[] {
  return [
    {
      method: 'POST',
      path: '/v1/volumes/:name/promote',
      handler: async ({ params, log }) => ({ volume: await replication.promote(validateVolumeName(params.name ?? ''), log) }),
    },
    {
      method: 'POST',
      path: '/v1/volumes/:name/replicas',
      handler: async ({ params, body }) => ({ volume: await replication.addReplica(validateVolumeName(params.name ?? ''), requiredString(body, 'host')) }),
    },
  ];
}
