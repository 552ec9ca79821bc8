import { Transform, type TransformCallback } from 'node:stream';
import { BerthError, errorMessage, isBerthError } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import type { ReplicationStore } from '../storage/storage-backend.js';
import type { PeerLink } from './peer-link.js';

const PROGRESS_EVERY_MS = 5000;

export interface PullRequest {
  readonly volume: string;
  readonly from: string;
  readonly id: string;
  /** A chain snapshot this host holds and the sender should too; the sender refuses when it lacks it. */
  readonly parent?: string;
  /** Abandon (cleanly) when this time passes: nothing half-received is kept. */
  readonly deadline?: number;
}

/**
 * Pulls one chain snapshot from a peer into the local chain: relative to `parent` when the sender still
 * has it, else whole (a rebuild). The snapshot appears only after the stream's end-to-end checksum
 * matched; a cut, a corrupt stream or a passed deadline leaves nothing behind. Returns the bytes moved.
 */
export async function pullChainSnapshot(chain: ReplicationStore, peers: PeerLink, request: PullRequest, log: Logger): Promise<number> {
  try {
    return await pullOnce(chain, peers, request, log);
  } catch (error) {
    if (request.parent === undefined || !isBerthError(error, 'ERR_SNAPSHOT_NOT_FOUND')) throw error;
    log.warn({ volume: request.volume, parent: request.parent, from: request.from }, 'sender no longer has the common snapshot; rebuilding the replica from a whole copy');
    const { parent: _unused, ...whole } = request;
    return pullOnce(chain, peers, whole, log);
  }
}

async function pullOnce(chain: ReplicationStore, peers: PeerLink, request: PullRequest, log: Logger): Promise<number> {
  const query = new URLSearchParams({ id: request.id, ...(request.parent ? { parent: request.parent } : {}) });
  const started = Date.now();
  log.debug({ volume: request.volume, id: request.id, parent: request.parent ?? null, from: request.from }, 'pulling chain snapshot');
  const { body, verified } = await peers.stream(request.from, `/v1/replication/volumes/${encodeURIComponent(request.volume)}/send?${query}`);
  verified.catch(() => undefined); // observed below; a cut before that point must not surface as unhandled
  const connectedMs = Date.now() - started;
  let bytes = 0;
  let lastReport = started;
  let timer: NodeJS.Timeout | undefined;
  let timedOut: BerthError | undefined;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      bytes += chunk.length;
      const now = Date.now();
      if (now - lastReport >= PROGRESS_EVERY_MS) {
        lastReport = now;
        log.info({ volume: request.volume, id: request.id, from: request.from, bytes, seconds: Math.round((now - started) / 1000) }, 'receiving volume data');
      }
      callback(null, chunk);
    },
  });
  if (request.deadline !== undefined) {
    const remaining = request.deadline - started;
    const abort = (): void => {
      timedOut = new BerthError('ERR_CATCH_UP_INCOMPLETE', `copy of volume ${request.volume} from host ${request.from} did not finish in time (${bytes} bytes received); nothing was kept`);
      body.destroy(timedOut);
    };
    if (remaining <= 0) abort();
    else timer = setTimeout(abort, remaining);
  }
  body.on('error', (error) => counter.destroy(error));
  try {
    await chain.receiveReplicationSnapshot(request.volume, request.id, body.pipe(counter), () => verified);
  } catch (error) {
    body.destroy();
    if (timedOut) throw timedOut;
    if (isBerthError(error)) throw error;
    throw new BerthError('ERR_REPLICATION', `cannot receive ${request.volume}@${request.id} from host ${request.from}: ${errorMessage(error)}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
  log.debug({ volume: request.volume, id: request.id, bytes, connectedMs, ms: Date.now() - started }, 'chain snapshot received');
  return bytes;
}
