import { BerthError } from '../../plugins/errors/berth-error.js';
import type { AdminRoute } from '../../plugins/server/admin-app.js';
import { requiredString } from '../../plugins/wire/request-fields.js';
import { validateVolumeName } from '../volume-name.js';
import type { ReplicationService } from './replication-service.js';

/**
 * `berth volume promote` and `berth volume replicate`. Without a service (a single host on the file
 * store) they answer why, instead of an unknown endpoint.
 */
export function createReplicationAdminRoutes(replication: ReplicationService | undefined): AdminRoute[] {
  if (!replication) {
    const refuse = async (): Promise<never> => {
      throw new BerthError('ERR_NOT_SUPPORTED', 'volumes move and replicate between hosts only on a shared etcd store (berth agent --store etcd://...); this agent uses the single-host file store');
    };
    return [
      { method: 'POST', path: '/v1/volumes/:name/promote', handler: refuse },
      { method: 'POST', path: '/v1/volumes/:name/replicas', handler: refuse },
    ];
  }
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
