// When each endpoint record reached a watcher of the store: `etcdctl watch` on the endpoint prefix, run
// where etcd is reachable (the switch namespace). Between an endpoint's CreateEndpoint returning and its
// entries appearing on the other hosts, this splits etcd's delivery from the agents' own work.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/** Key prefix of the endpoint records in etcd (the store's `berth/` plus network-repository.ts's ENDPOINTS_PREFIX). */
export const ENDPOINT_KEYS = 'berth/net/endpoints/';

export class StoreWatch {
  /** Endpoint IP → clock time its record was first seen active. */
  readonly activeAt = new Map<string, number>();
  readonly problems: string[] = [];
  private child: ChildProcess | undefined;

  constructor(
    private readonly commandPrefix: readonly string[],
    private readonly endpoint: string,
    private readonly clock: () => number,
  ) {}

  /** Starts `etcdctl watch --prefix`; events arrive as three lines: PUT or DELETE, the key, the value. */
  async start(): Promise<void> {
    const command = [...this.commandPrefix, 'etcdctl', '--endpoints', this.endpoint, 'watch', '--prefix', ENDPOINT_KEYS];
    const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ETCDCTL_API: '3' } });
    this.child = child;
    let expect: 'type' | 'key' | 'value' = 'type';
    let put = false;
    let ip = '';
    createInterface({ input: child.stdout }).on('line', (line) => {
      const at = this.clock();
      if (expect === 'type') {
        put = line === 'PUT';
        expect = 'key';
      } else if (expect === 'key') {
        ip = line.slice(line.lastIndexOf('/') + 1);
        // A deletion has no value line.
        expect = put ? 'value' : 'type';
      } else {
        if (!this.activeAt.has(ip) && line.includes('"state":"active"')) this.activeAt.set(ip, at);
        expect = 'type';
      }
    });
    createInterface({ input: child.stderr }).on('line', (line) => this.problems.push(line));
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', () => resolve());
      child.once('error', reject);
    });
  }

  stop(): void {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
  }
}
