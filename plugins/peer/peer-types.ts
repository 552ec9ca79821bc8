/** A request a peer made; `peer` is the host name its client certificate carries. */
export interface PeerRequest {
  readonly peer: string;
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
  /** Parsed JSON body of a POST (undefined without one). */
  readonly body: unknown;
}

/** A reply streamed to the peer, followed by the SHA-256 of every byte sent (an HTTP trailer). */
export interface PeerStreamReply {
  readonly stream: AsyncIterable<Buffer>;
}

export interface PeerRoute {
  readonly method: 'GET' | 'POST';
  /** Path pattern with `:name` parameters, e.g. `/v1/replication/volumes/:volume/send`. */
  readonly path: string;
  /** Resolves with a JSON value, or a PeerStreamReply. */
  readonly handler: (request: PeerRequest) => Promise<unknown>;
}

export const DIGEST_TRAILER = 'x-berth-sha256';

export function isStreamReply(value: unknown): value is PeerStreamReply {
  return typeof value === 'object' && value !== null && 'stream' in value && typeof (value as { stream: unknown }).stream === 'object';
}
