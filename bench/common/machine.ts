// What every benchmark records about the machine it ran on, beyond its own tools' versions.
import { cpus, release, totalmem } from 'node:os';
import type { CommandResult, RunOptions } from '../../test/helpers/run-command.js';
import { runCommand } from '../../test/helpers/run-command.js';
import { round } from './stats.js';

export interface MachineBasics {
  readonly cpus: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly node: string;
}

/** Cores, CPU model, memory, kernel release and Node version of this machine. */
export function describeMachineBasics(): MachineBasics {
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: round(totalmem() / 1024 ** 3, 1),
    kernel: release(),
    node: process.version,
  };
}

/** Client and server versions of the engine behind `host` (a cluster Host qualifies). */
export async function dockerVersions(host: { dockerOk(args: readonly string[], options?: RunOptions): Promise<CommandResult> }): Promise<{ client: string; server: string }> {
  const versions = await host.dockerOk(['version', '--format', '{{.Client.Version}} {{.Server.Version}}']);
  const [client = '?', server = '?'] = versions.stdout.trim().split(' ');
  return { client, server };
}

/** The first line `command` prints (a tool's version, say), or 'unknown'. */
export async function firstLineOf(command: readonly string[], timeoutMs = 10_000): Promise<string> {
  const result = await runCommand(command, { timeoutMs }).catch(() => undefined);
  return (result?.stdout ?? '').split('\n')[0]?.trim() || 'unknown';
}
