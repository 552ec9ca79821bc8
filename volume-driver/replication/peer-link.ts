import type { Readable } from 'node:stream';

/** A stream from a peer whose end-to-end checksum is checked once it has been read to the end. */
export interface VerifiedStream {
  readonly body: Readable;
  /** Resolves when the whole body arrived with a matching checksum; rejects on a cut or a mismatch. */
  readonly verified: Promise<void>;
}

/**
 * What replication needs from the authenticated peer port, by host name (the implementation resolves
 * the host's address and port from the cluster's membership and checks the peer's certificate names it).
 */
export interface PeerLink {
  json<T>(host: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T>;
  stream(host: string, path: string): Promise<VerifiedStream>;
}

/** The hosts whose agents are alive now (their membership lease is current). */
export interface LiveHosts {
  liveHostNames(): ReadonlySet<string>;
}


export type { PeerRequest, PeerRoute, PeerStreamReply } from '../../plugins/peer/peer-types.js';
