// What every benchmark records about the machine it ran on, beyond its own tools' versions.
import { cpus, release, totalmem } from 'node:os';
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
