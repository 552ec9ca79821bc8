import { getSystemErrorMap } from 'node:util';

/** libuv names errno 95 after sockets (ENOTSUP); from rtnetlink it means the device cannot do that. */
const OVERRIDES: ReadonlyMap<number, [string, string]> = new Map([[-95, ['EOPNOTSUPP', 'operation not supported']]]);

/** The kernel refused a netlink request; `code` is the errno name (`EEXIST`, `ENODEV`, ...). */
export class NetlinkError extends Error {
  readonly errno: number;
  readonly code: string;

  /** `errno` as the kernel sends it in an NLMSG_ERROR: negative. */
  constructor(errno: number) {
    const [code, description] = OVERRIDES.get(errno) ?? getSystemErrorMap().get(errno) ?? [`E${-errno}`, `error ${-errno}`];
    super(`${description} (${code})`);
    this.name = 'NetlinkError';
    this.errno = -errno;
    this.code = code;
  }
}

/** True when `error` is a kernel refusal with one of `codes`. */
export function isErrno(error: unknown, ...codes: string[]): error is NetlinkError {
  return error instanceof NetlinkError && codes.includes(error.code);
}
