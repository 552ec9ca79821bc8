// The kernel's share, measured alone: the same links and entries the agents make, written by iproute2
// batches (one request and ACK per line, no control plane at all) into fresh namespaces, every namespace
// at once. All the simulated hosts share one kernel, so this is a floor no control plane on this machine
// can go below; on real hosts each kernel does only its own share.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetnsSet } from '../../test/helpers/netns-set.js';
import { checkCommand } from '../../test/helpers/run-command.js';
import { round } from '../common/stats.js';
import { hostNames } from './scale-cluster.js';

export interface KernelFloor {
  readonly hosts: number;
  readonly vethsPerHost: number;
  /** FDB plus neighbour entries per host (and one flood entry per other host). */
  readonly entriesPerHost: number;
  /** Every host's veth pairs, created on its bridge, all hosts at once. */
  readonly vethsSeconds: number;
  /** Every host's FDB and neighbour entries, all hosts at once. */
  readonly entriesSeconds: number;
}

/** Runs the calibration in namespaces of its own, removed at the end (also on failure). */
export async function measureKernelFloor(hosts: number, endpointsPerHost: number, workDir: string): Promise<KernelFloor> {
  const netns = new NetnsSet('bfloor');
  try {
    const names = hostNames(hosts);
    for (const name of names) {
      await netns.add(name);
      await netns.ip(name, 'link', 'add', 'bbr1', 'type', 'bridge');
      await netns.ip(name, 'link', 'set', 'bbr1', 'up');
      await netns.ip(name, 'link', 'add', 'bvx1', 'type', 'vxlan', 'id', '1', 'dstport', '4789', 'nolearning', 'proxy');
      await netns.ip(name, 'link', 'set', 'bvx1', 'master', 'bbr1', 'up');
    }
    const batches = names.map((name, h) => writeBatches(workDir, name, h, hosts, endpointsPerHost));
    const allAtOnce = async (command: (i: number) => string[]): Promise<number> => {
      const started = process.hrtime.bigint();
      await Promise.all(names.map((_, i) => checkCommand(command(i), { timeoutMs: 300_000 })));
      return round(Number(process.hrtime.bigint() - started) / 1e9, 2);
    };
    const vethsSeconds = await allAtOnce((i) => ['ip', '-n', netns.name(names[i]!), '-batch', batches[i]!.veths]);
    const neighbours = await allAtOnce((i) => ['ip', '-n', netns.name(names[i]!), '-batch', batches[i]!.neighbours]);
    const fdb = await allAtOnce((i) => ['bridge', '-n', netns.name(names[i]!), '-batch', batches[i]!.fdb]);
    return { hosts, vethsPerHost: endpointsPerHost, entriesPerHost: 2 * (hosts - 1) * endpointsPerHost, vethsSeconds, entriesSeconds: round(neighbours + fdb, 2) };
  } finally {
    await netns.dispose();
  }
}

/** Batch files for host `h`: its veths, and the entries of every other host's endpoints (addresses made up, unique). */
function writeBatches(dir: string, name: string, h: number, hosts: number, endpoints: number): { veths: string; neighbours: string; fdb: string } {
  const veths: string[] = [];
  const neighbours: string[] = [];
  const fdb: string[] = [];
  // As the agent makes them: one queue each way (network-driver/dataplane/link-info.ts).
  for (let e = 0; e < endpoints; e++) {
    const id = String(e).padStart(5, '0');
    veths.push(`link add bve${id} numtxqueues 1 numrxqueues 1 mtu 1450 master bbr1 up type veth peer name bvc${id} numtxqueues 1 numrxqueues 1 mtu 1450`);
  }
  for (let other = 0; other < hosts; other++) {
    if (other === h) continue;
    const vtep = `198.19.81.${other + 1}`;
    for (let e = 0; e < endpoints; e++) {
      const n = other * endpoints + e + 2;
      const bytes = [(n >> 16) & 255, (n >> 8) & 255, n & 255];
      const mac = `02:be:0a:${bytes.map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
      neighbours.push(`neigh replace 10.${bytes.join('.')} lladdr ${mac} dev bvx1 nud permanent`);
      fdb.push(`fdb replace ${mac} dev bvx1 dst ${vtep} self permanent`);
    }
    fdb.push(`fdb append 00:00:00:00:00:00 dev bvx1 dst ${vtep} self permanent`);
  }
  const files = { veths: join(dir, `${name}-veths`), neighbours: join(dir, `${name}-neighbours`), fdb: join(dir, `${name}-fdb`) };
  writeFileSync(files.veths, `${veths.join('\n')}\n`);
  writeFileSync(files.neighbours, `${neighbours.join('\n')}\n`);
  writeFileSync(files.fdb, `${fdb.join('\n')}\n`);
  return files;
}
