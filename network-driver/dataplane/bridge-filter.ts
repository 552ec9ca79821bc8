import { execTool, runTool } from '../../plugins/util/run-tool.js';
import { BRIDGE_PREFIX } from './device-names.js';

/**
 * Where the engine loads br_netfilter (it does, for its own bridges), frames crossing any bridge go
 * through iptables, and the FORWARD policy the engine sets is DROP: without a rule, containers on a Berth
 * bridge could not reach each other nor the VXLAN port. Docker's own overlay avoids this by hiding its
 * bridges in a namespace; Berth's bridges live in the host namespace, so:
 * - one filter rule accepts traffic between ports of Berth bridges, and only that (egress still goes
 *   through docker_gwbridge and its rules);
 * - frames between ports of Berth bridges are not connection-tracked (raw table): nothing filters or NATs
 *   them, and tracking every overlay packet costs CPU on both hosts.
 * iptables has no netlink API short of nftables' own; it runs from an argument array, never a shell string.
 */
const BRIDGES = `${BRIDGE_PREFIX}+`;
const COMMENT = ['-m', 'comment', '--comment', 'berth overlay bridges'];
const RULES: readonly (readonly string[])[] = [
  ['-t', 'filter', 'FORWARD', '-i', BRIDGES, '-o', BRIDGES, '-j', 'ACCEPT', ...COMMENT],
  ['-t', 'raw', 'PREROUTING', '-i', BRIDGES, '-j', 'NOTRACK', ...COMMENT],
];

/** Adds the rules that are missing; idempotent, safe to run on every full reconciliation. Returns how many it added. */
export async function ensureBridgeForwarding(): Promise<number> {
  let added = 0;
  for (const [tableFlag, table, chain, ...rule] of RULES) {
    const spec = [tableFlag!, table!];
    const present = await execTool(['iptables', '-w', '5', ...spec, '-C', chain!, ...rule], `checking the ${table} rule for overlay bridges`, 'ERR_DATAPLANE');
    if (present.code === 0) continue;
    await runTool(['iptables', '-w', '5', ...spec, '-I', chain!, '1', ...rule], `adding the ${table} rule for overlay bridges`, 'ERR_DATAPLANE');
    added++;
  }
  return added;
}
