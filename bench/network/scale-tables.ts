// Watching the forwarding (FDB) and neighbour tables of Berth's VXLAN device in every host's namespace.
//
// Dumping 4,750 FDB and neighbour entries costs tens of milliseconds of CPU per table and host, too much
// to poll twenty hosts often on two cores. So each host has two monitors (`ip -4 monitor neigh` and
// `bridge monitor fdb`, started before the agents) whose lines are applied to a copy of the tables as they
// arrive: the time a host's copy last changed before it matched the expected tables is when that host's
// tables became complete. A monitor that reports lost events (its socket overflowed) marks its host lossy,
// and the benchmark then polls that host with dumps instead; a final dump checks every host either way.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { runCommand } from '../../test/helpers/run-command.js';

export const FLOOD_MAC = '00:00:00:00:00:00';

export interface Tables {
  /** Endpoint MAC → VTEP (the all-zeros flood entries are kept apart). */
  readonly fdb: Map<string, string>;
  /** Endpoint IP → MAC. */
  readonly neighbours: Map<string, string>;
  /** VTEPs of the all-zeros entries (head-end replication). */
  readonly flood: Set<string>;
}

export function emptyTables(): Tables {
  return { fdb: new Map(), neighbours: new Map(), flood: new Set() };
}

export interface TableDiff {
  readonly missing: number;
  readonly wrong: number;
  readonly extra: number;
  /** A few entries that differ, for the report. */
  readonly examples: readonly string[];
}

/** How `observed` differs from `expected`, table by table. */
export function diffTables(observed: Tables, expected: Tables): TableDiff {
  let missing = 0;
  let wrong = 0;
  let extra = 0;
  const examples: string[] = [];
  const note = (text: string): void => {
    if (examples.length < 5) examples.push(text);
  };
  const compare = (kind: string, have: ReadonlyMap<string, string>, want: ReadonlyMap<string, string>): void => {
    for (const [key, value] of want) {
      const found = have.get(key);
      if (found === undefined) {
        missing++;
        note(`${kind} ${key} missing`);
      } else if (found !== value) {
        wrong++;
        note(`${kind} ${key} is ${found}, not ${value}`);
      }
    }
    for (const key of have.keys()) {
      if (want.has(key)) continue;
      extra++;
      note(`${kind} ${key} should not be there`);
    }
  };
  compare('fdb', observed.fdb, expected.fdb);
  compare('neighbour', observed.neighbours, expected.neighbours);
  const asMap = (set: ReadonlySet<string>): Map<string, string> => new Map([...set].map((vtep) => [vtep, vtep]));
  compare('flood', asMap(observed.flood), asMap(expected.flood));
  return { missing, wrong, extra, examples };
}

function matches(observed: Tables, expected: Tables): boolean {
  if (observed.fdb.size !== expected.fdb.size || observed.neighbours.size !== expected.neighbours.size || observed.flood.size !== expected.flood.size) return false;
  for (const [mac, vtep] of expected.fdb) if (observed.fdb.get(mac) !== vtep) return false;
  for (const [ip, mac] of expected.neighbours) if (observed.neighbours.get(ip) !== mac) return false;
  for (const vtep of expected.flood) if (!observed.flood.has(vtep)) return false;
  return true;
}

const FDB_LINE = /^(Deleted )?([0-9a-f:]{17}) dev (bvx\d+) dst (\S+)/;
const NEIGH_LINE = /^(Deleted )?(\d+\.\d+\.\d+\.\d+) dev (bvx\d+)(?: lladdr ([0-9a-f:]{17}))?(.*)$/;

export class TableWatch {
  readonly tables = emptyTables();
  /** When each endpoint MAC first got its FDB entry, and each IP its neighbour entry (clock ms). */
  readonly fdbSeenAt = new Map<string, number>();
  readonly neighbourSeenAt = new Map<string, number>();
  /** Names of the VXLAN devices seen (one network: one device). */
  readonly devices = new Set<string>();
  /** Monitor errors (lost events, exits); a lossy host is checked with dumps. */
  readonly problems: string[] = [];
  lossy = false;
  /** Entries removed while the benchmark ran (a host's lease lapsing purges its entries everywhere). */
  removals = 0;
  /** Clock time of the last change of the copy. */
  lastChangeAt = 0;
  /** When the tables first matched the expectation, and how that was seen. */
  completeAt: number | undefined;
  completeBy: 'monitor' | 'dump' | undefined;
  private expected: Tables | undefined;
  private readonly children: ChildProcess[] = [];
  private stopping = false;

  constructor(
    readonly host: string,
    readonly netns: string,
    private readonly clock: () => number,
  ) {}

  /** Starts both monitors; resolves once both have started (they print nothing until something changes). */
  async start(): Promise<void> {
    await Promise.all([
      this.monitor(['ip', '-n', this.netns, '-4', 'monitor', 'neigh'], (line, at) => this.neighbourLine(line, at)),
      this.monitor(['bridge', '-n', this.netns, 'monitor', 'fdb'], (line, at) => this.fdbLine(line, at)),
    ]);
  }

  /** From now on, a copy equal to `expected` is complete. */
  expect(expected: Tables): void {
    this.expected = expected;
    this.evaluate('monitor');
  }

  /** Replaces the copy with a dump taken at `at` (for lossy hosts). */
  reload(dumped: Tables, at: number): void {
    for (const [mac] of dumped.fdb) if (!this.fdbSeenAt.has(mac)) this.fdbSeenAt.set(mac, at);
    for (const [ip] of dumped.neighbours) if (!this.neighbourSeenAt.has(ip)) this.neighbourSeenAt.set(ip, at);
    replace(this.tables.fdb, dumped.fdb);
    replace(this.tables.neighbours, dumped.neighbours);
    this.tables.flood.clear();
    for (const vtep of dumped.flood) this.tables.flood.add(vtep);
    this.lastChangeAt = at;
    this.evaluate('dump');
  }

  /** Pids of the monitor processes still running. */
  pids(): number[] {
    return this.children.filter((child) => child.exitCode === null && child.signalCode === null && child.pid !== undefined).map((child) => child.pid!);
  }

  stop(): void {
    this.stopping = true;
    for (const child of this.children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  }

  private monitor(command: readonly string[], onLine: (line: string, at: number) => void): Promise<void> {
    const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.push(child);
    createInterface({ input: child.stdout }).on('line', (line) => onLine(line, this.clock()));
    createInterface({ input: child.stderr }).on('line', (line) => {
      this.lossy = true;
      this.problems.push(`${command.slice(3).join(' ')}: ${line}`);
    });
    child.once('exit', (code, signal) => {
      if (this.stopping) return;
      this.lossy = true;
      this.problems.push(`${command.slice(3).join(' ')} exited (${code ?? signal})`);
    });
    return new Promise((resolve, reject) => {
      child.once('spawn', () => resolve());
      child.once('error', reject);
    });
  }

  private fdbLine(line: string, at: number): void {
    const match = FDB_LINE.exec(line);
    if (!match) return;
    const [, deleted, mac, device, vtep] = match as unknown as [string, string | undefined, string, string, string];
    this.devices.add(device);
    if (mac === FLOOD_MAC) {
      if (deleted) this.removals += Number(this.tables.flood.delete(vtep));
      else this.tables.flood.add(vtep);
    } else if (deleted) {
      if (this.tables.fdb.get(mac) === vtep) {
        this.tables.fdb.delete(mac);
        this.removals++;
      }
    } else {
      this.tables.fdb.set(mac, vtep);
      if (!this.fdbSeenAt.has(mac)) this.fdbSeenAt.set(mac, at);
    }
    this.changed(at);
  }

  private neighbourLine(line: string, at: number): void {
    const match = NEIGH_LINE.exec(line);
    if (!match) return;
    const [, deleted, ip, device, mac, rest] = match as unknown as [string, string | undefined, string, string, string | undefined, string];
    this.devices.add(device);
    if (deleted || mac === undefined || !rest.includes('PERMANENT')) {
      if (this.tables.neighbours.delete(ip)) this.removals++;
    } else {
      this.tables.neighbours.set(ip, mac);
      if (!this.neighbourSeenAt.has(ip)) this.neighbourSeenAt.set(ip, at);
    }
    this.changed(at);
  }

  private changed(at: number): void {
    this.lastChangeAt = at;
    this.evaluate('monitor');
  }

  private evaluate(by: 'monitor' | 'dump'): void {
    if (this.completeAt !== undefined || this.expected === undefined) return;
    if (!matches(this.tables, this.expected)) return;
    // The copy has not changed since lastChangeAt, so that is when it became complete.
    this.completeAt = this.lastChangeAt;
    this.completeBy = by;
  }
}

function replace<K, V>(target: Map<K, V>, source: ReadonlyMap<K, V>): void {
  target.clear();
  for (const [key, value] of source) target.set(key, value);
}

/** Reads the VXLAN device's FDB and neighbour tables in `netns` (JSON dumps through iproute2). */
export async function dumpTables(netns: string, device: string): Promise<Tables> {
  const [fdb, neighbours] = await Promise.all([
    runCommand(['bridge', '-n', netns, '-j', 'fdb', 'show', 'dev', device], { timeoutMs: 30_000 }),
    runCommand(['ip', '-n', netns, '-4', '-j', 'neigh', 'show', 'dev', device], { timeoutMs: 30_000 }),
  ]);
  for (const result of [fdb, neighbours]) {
    if (result.code !== 0) throw new Error(`${result.command.join(' ')} failed (${result.code ?? result.signal}): ${result.stderr.trim()}`);
  }
  const tables = emptyTables();
  for (const entry of JSON.parse(fdb.stdout || '[]') as { mac?: string; dst?: string; state?: string }[]) {
    // Entries without dst are the bridge's own (the device's MAC on its master).
    if (entry.mac === undefined || entry.dst === undefined) continue;
    if (entry.mac === FLOOD_MAC) tables.flood.add(entry.dst);
    else if (entry.state === 'permanent') tables.fdb.set(entry.mac, entry.dst);
  }
  for (const entry of JSON.parse(neighbours.stdout || '[]') as { dst?: string; lladdr?: string; state?: string[] }[]) {
    if (entry.dst !== undefined && entry.lladdr !== undefined && entry.state?.includes('PERMANENT')) tables.neighbours.set(entry.dst, entry.lladdr);
  }
  return tables;
}
