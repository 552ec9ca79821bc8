import { BerthError } from '../../plugins/errors/berth-error.js';
import { validateVolumeName } from '../volume-name.js';
import type { PeerRoute, PeerStreamReply } from './peer-link.js';
import type { ReplicationService } from './replication-service.js';

/** What other hosts' agents ask of this one over the peer port. */
export function createReplicationPeerRoutes(replication: ReplicationService): PeerRoute[] {
  return [
    {
      method: 'GET',
      path: '/v1/replication/volumes/:volume/send',
      handler: async ({ params, query, peer }): Promise<PeerStreamReply> => {
        const id = query.get('id');
        if (!id) throw new BerthError('ERR_INVALID_REQUEST', 'query parameter id is required');
        const parent = query.get('parent') ?? undefined;
        return { stream: await replication.serveSnapshot(validateVolumeName(params.volume ?? ''), id, parent, peer) };
      },
    },
    {
      method: 'POST',
      path: '/v1/replication/volumes/:volume/handoff',
      handler: async ({ params, body, peer }) => {
        const epoch = (body as { epoch?: unknown } | undefined)?.epoch;
        if (!Number.isInteger(epoch)) throw new BerthError('ERR_INVALID_REQUEST', 'field epoch must be an integer');
        // The certificate names who asks: a host can only ask for the volume for itself.
        return replication.prepareHandoff(validateVolumeName(params.volume ?? ''), peer, epoch as number);
      },
    },
  ];
}
