// What the processes of the scale benchmark spend their time on, read from /proc: CPU seconds used, and
// samples of each agent's main thread (running, waiting for the kernel's rtnl lock, other kernel waits,
// idle). On one machine every simulated host shares one kernel, and with it the rtnl lock that link,
// FDB and neighbour changes of every network namespace take in turn.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { statFields } from '../../test/helpers/processes.js';

/** CPU seconds of `pid` so far, user plus system or system alone (0 once it is gone); /proc counts in USER_HZ, 100 on Linux. */
export function cpuSeconds(pid: number, kind: 'all' | 'system' = 'all'): number {
  const fields = statFields(pid);
  if (fields === undefined) return 0;
  return ((kind === 'all' ? Number(fields[11]) : 0) + Number(fields[12])) / 100;
}

/** CPU seconds every process on the machine has used since boot (busy time of all CPUs, from /proc/stat). */
export function machineCpuSeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = line.trim().split(/\s+/).slice(1).map(Number);
  return (user + nice + system + irq + softirq + steal) / 100;
}

export function cpuCount(): number {
  return cpus().length;
}

export interface ThreadStates {
  readonly samples: number;
  /** Shares of the samples, 0 to 1. */
  readonly running: number;
  readonly rtnlWait: number;
  readonly otherKernelWait: number;
  readonly idle: number;
}

/** Kernel functions a task sleeps in while it waits for the rtnl lock, or holds it through an RCU grace period. */
const RTNL_WAIT = /rtnetlink_rcv_msg|rtnl_|synchronize_rcu|netlink_dump/;

/** Samples the state and wait channel of the given processes' main threads every `intervalMs`. */
export class ThreadStateSampler {
  private readonly counts = { samples: 0, running: 0, rtnlWait: 0, otherKernelWait: 0, idle: 0 };
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly pids: readonly number[],
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.sample(), this.intervalMs);
  }

  stop(): ThreadStates {
    clearInterval(this.timer);
    const { samples, running, rtnlWait, otherKernelWait, idle } = this.counts;
    const share = (count: number): number => (samples === 0 ? 0 : Math.round((count / samples) * 1000) / 1000);
    return { samples, running: share(running), rtnlWait: share(rtnlWait), otherKernelWait: share(otherKernelWait), idle: share(idle) };
  }

  private sample(): void {
    for (const pid of this.pids) {
      const state = statFields(pid)?.[0];
      if (state === undefined) continue;
      let wchan = '';
      try {
        wchan = readFileSync(`/proc/${pid}/wchan`, 'utf8');
      } catch {
        // gone meanwhile
      }
      this.counts.samples++;
      if (state === 'D' && RTNL_WAIT.test(wchan)) this.counts.rtnlWait++;
      else if (state === 'R') this.counts.running++;
      else if (state === 'D') this.counts.otherKernelWait++;
      else this.counts.idle++;
    }
  }
}
