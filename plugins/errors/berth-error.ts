/** Every failure Berth reports carries one of these codes; the catalogue is the contract with users and tests. */
export type BerthErrorCode =
  | 'ERR_INVALID_REQUEST'
  | 'ERR_UNKNOWN_METHOD'
  | 'ERR_INVALID_NAME'
  | 'ERR_INVALID_OPTION'
  | 'ERR_INVALID_CONFIG'
  | 'ERR_VOLUME_NOT_FOUND'
  | 'ERR_VOLUME_EXISTS'
  | 'ERR_VOLUME_IN_USE'
  | 'ERR_VOLUME_BUSY'
  | 'ERR_SNAPSHOT_NOT_FOUND'
  | 'ERR_SNAPSHOT_EXISTS'
  | 'ERR_QUIESCE_FAILED'
  | 'ERR_BACKUP_TARGET'
  | 'ERR_BACKUP_NOT_FOUND'
  | 'ERR_STORAGE'
  | 'ERR_STATE_CONFLICT'
  | 'ERR_STATE_COMPACTED'
  | 'ERR_STATE_UNAVAILABLE'
  | 'ERR_STATE_CORRUPT'
  | 'ERR_LEASE_NOT_FOUND'
  | 'ERR_SOCKET_IN_USE'
  | 'ERR_ENGINE_UNAVAILABLE'
  | 'ERR_AGENT_UNREACHABLE'
  | 'ERR_NOT_FOUND'
  | 'ERR_INTERNAL'
  | 'ERR_BACKUP_WRONG_KEY'
  | 'ERR_BACKUP_CORRUPT'
  | 'ERR_BACKUP_TRUNCATED'
  | 'ERR_BACKUP_SOURCE_CHANGED'
  | 'ERR_BACKUP_UNSAFE_ENTRY'
  | 'ERR_NETWORK_NOT_FOUND'
  | 'ERR_NETWORK_EXISTS'
  | 'ERR_NETWORK_IN_USE'
  | 'ERR_SUBNET_OVERLAP'
  | 'ERR_ADDRESS_IN_USE'
  | 'ERR_ADDRESS_EXHAUSTED'
  | 'ERR_DATAPLANE'
  | 'ERR_PEER_UNAVAILABLE'
  | 'ERR_PEER_AUTH'
  | 'ERR_TRANSFER_CORRUPT'
  | 'ERR_VOLUME_MOUNTED_ELSEWHERE'
  | 'ERR_VOLUME_FENCED'
  | 'ERR_OWNER_UNAVAILABLE'
  | 'ERR_CATCH_UP_INCOMPLETE'
  | 'ERR_REPLICATION'
  | 'ERR_NOT_SUPPORTED';

/** HTTP status the admin API uses for each code; the Docker plugin API always answers 500 (the engine only reads `Err`). */
const ADMIN_STATUS: Partial<Record<BerthErrorCode, number>> = {
  ERR_INVALID_REQUEST: 400,
  ERR_INVALID_NAME: 400,
  ERR_INVALID_OPTION: 400,
  ERR_UNKNOWN_METHOD: 404,
  ERR_NOT_FOUND: 404,
  ERR_VOLUME_NOT_FOUND: 404,
  ERR_VOLUME_EXISTS: 409,
  ERR_VOLUME_IN_USE: 409,
  ERR_VOLUME_BUSY: 409,
  ERR_SNAPSHOT_NOT_FOUND: 404,
  ERR_SNAPSHOT_EXISTS: 409,
  ERR_BACKUP_NOT_FOUND: 404,
  ERR_STATE_CONFLICT: 409,
  ERR_STATE_UNAVAILABLE: 503,
  ERR_ENGINE_UNAVAILABLE: 503,
  ERR_BACKUP_WRONG_KEY: 400,
  ERR_NETWORK_NOT_FOUND: 404,
  ERR_NETWORK_EXISTS: 409,
  ERR_NETWORK_IN_USE: 409,
  ERR_SUBNET_OVERLAP: 409,
  ERR_ADDRESS_IN_USE: 409,
  ERR_BACKUP_CORRUPT: 422,
  ERR_BACKUP_TRUNCATED: 422,
  ERR_PEER_UNAVAILABLE: 503,
  ERR_PEER_AUTH: 403,
  ERR_TRANSFER_CORRUPT: 422,
  ERR_VOLUME_MOUNTED_ELSEWHERE: 409,
  ERR_VOLUME_FENCED: 409,
  ERR_OWNER_UNAVAILABLE: 503,
  ERR_CATCH_UP_INCOMPLETE: 503,
  ERR_NOT_SUPPORTED: 400,
};

export interface BerthErrorOptions {
  cause?: unknown;
  details?: Record<string, unknown>;
}

export class BerthError extends Error {
  readonly code: BerthErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: BerthErrorCode, message: string, options: BerthErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BerthError';
    this.code = code;
    this.details = options.details;
  }

  get httpStatus(): number {
    return ADMIN_STATUS[this.code] ?? 500;
  }
}

export function isBerthError(error: unknown, code?: BerthErrorCode): error is BerthError {
  return error instanceof BerthError && (code === undefined || error.code === code);
}

/** Wraps a foreign error once, where it is caught, keeping it as `cause`. */
export function translateError(error: unknown, code: BerthErrorCode, message: string): BerthError {
  if (error instanceof BerthError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new BerthError(code, `${message}: ${reason}`, { cause: error });
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
