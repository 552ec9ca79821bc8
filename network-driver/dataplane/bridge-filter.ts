import { execTool, runTool } from '../../plugins/util/run-tool.js';
import { BRIDGE_PREFIX } from './device-names.js';

/**
 * Where the engine loads br_netfilter (it does, for its own bridges), frames crossing any bridge go
 * through iptables' FORWARD chain, whose policy the engine sets to DROP: without a rule, containers on a
 * Berth bridge could not reach each other nor the VXLAN port. Docker's own overlay avoids this by hiding
 * its bridges in a namespace; Berth's bridges live in the host namespace, so one rule accepts traffic
 * between ports of Berth bridges, and only that (egress still goes through docker_gwbridge and its rules).
 * iptables has no netlink API short of nftables' own; it runs from an argument array, never a shell string.
 */
const RULE = ['FORWARD', '-i', `${BRIDGE_PREFIX}+`, '-o', `${BRIDGE_PREFIX}+`, '-j', 'ACCEPT', '-m', 'comment', '--comment', 'berth overlay bridges'];

/** Adds the rule unless present; idempotent, safe to run on every full reconciliation. */
export async function ensureBridgeForwarding(): Promise<boolean> {
  const present = await execTool(['iptables', '-w', '5', '-C', ...RULE], 'checking the overlay bridge forwarding rule', 'ERR_DATAPLANE');
  if (present.code === 0) return false;
  await runTool(['iptables', '-w', '5', '-I', ...RULE.slice(0, 1), '1', ...RULE.slice(1)], 'adding the overlay bridge forwarding rule', 'ERR_DATAPLANE');
  return true;
}
