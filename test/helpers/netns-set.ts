// Throwaway network namespaces for kernel-level tests: unique names per run, commands run inside
// them as argument arrays, and one dispose that ends every process left in them and deletes them.
import { randomBytes } from 'node:crypto';
import { deleteNetns, releaseNetnsDir } from './cluster-teardown.js';
import { killAll, namespaceInode, pidsInNamespaces } from './processes.js';
import { checkCommand, runCommand, type CommandResult, type RunOptions } from './run-command.js';

export class NetnsSet implements AsyncDisposable {
  /** `<prefix><hex4>`, the start of every namespace name of this set. */
  readonly id: string;
  private readonly names: string[] = [];

  constructor(prefix: string) {
    this.id = `${prefix}${randomBytes(2).toString('hex')}`;
  }

  /** Creates namespace `<id>-<short>` with loopback up and returns its full name. */
  async add(short: string): Promise<string> {
    const name = this.name(short);
    this.names.push(name); // recorded first, so a half-made namespace is still deleted
    await checkCommand(['ip', 'netns', 'add', name]);
    await checkCommand(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  name(short: string): string {
    return `${this.id}-${short}`;
  }

  path(short: string): string {
    return `/run/netns/${this.name(short)}`;
  }

  /** `ip -n <ns> ARGS...`; rejects unless it exits 0. */
  ip(short: string, ...args: string[]): Promise<CommandResult> {
    return checkCommand(['ip', '-n', this.name(short), ...args], { timeoutMs: 30_000 });
  }

  /** Runs `command` inside the namespace (nsenter keeps the caller's /sys, unlike `ip netns exec`). */
  run(short: string, command: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    return runCommand(this.enter(short, command), { timeoutMs: 30_000, ...options });
  }

  /** The argument vector that runs `command` inside the namespace. */
  enter(short: string, command: readonly string[]): string[] {
    return ['nsenter', `--net=${this.path(short)}`, '--', ...command];
  }

  /** Ends every process still in one of the namespaces, deletes them; throws naming what is left. */
  async dispose(): Promise<void> {
    const inodes = new Set(this.names.map((name) => namespaceInode(`/run/netns/${name}`)).filter((inode) => inode !== undefined));
    const survivors = await killAll(() => pidsInNamespaces('net', inodes), { timeoutMs: 10_000 });
    const problems = survivors.length > 0 ? [`processes still running: ${survivors.join(', ')}`] : [];
    for (const name of this.names.splice(0).reverse()) {
      const problem = await deleteNetns(name);
      if (problem !== undefined) problems.push(problem);
    }
    await releaseNetnsDir();
    if (problems.length > 0) throw new Error(`cleaning up namespaces ${this.id}-*: ${problems.join('; ')}`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
