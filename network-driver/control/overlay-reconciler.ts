// Brings this host's kernel to the desired overlay state, computed from the cluster view:
// - one overlay (bridge + VXLAN device) per network this host's engine has;
// - on each VXLAN device, for every active endpoint of the network on another *live* host, a permanent FDB
//   entry (its MAC → that host's VTEP) and a permanent neighbour entry (its IP → its MAC), and one flood
//   entry per other live host (head-end replication, so broadcast and multicast reach every host).
// Endpoints of a host whose lease expired are left out, so its entries are purged as soon as the lease goes.
//
// Passes are coalesced and serialized. A pass diffs the desired state against what it believes the kernel
// holds (`applied`); a full pass first reads the kernel back, so entries left by a previous agent life or
// changed by hand are corrected, and overlays of networks that no longer exist here are deleted. The agent
// runs a full pass at start and periodically, and an incremental one on every change of the view.
// An incremental pass after changes of endpoint records alone looks at those endpoints only: a burst of
// thousands of endpoints arriving one watch event at a time must not cost a diff of every endpoint of the
// network each time. Anything it cannot settle alone (a removal, an address moving to another MAC, an
// overlay not yet made) and any other change (networks, hosts, this host's engine networks) diffs everything.
import { errorMessage } from '../../plugins/errors/berth-error.js';
import type { Logger } from '../../plugins/logging/logger.js';
import { CoalescingRunner } from '../../plugins/util/coalescing-runner.js';
import type { Dataplane, OverlaySpec } from '../dataplane/dataplane.js';
import { BRIDGE_PREFIX, VXLAN_PREFIX, overlayNames, vniOfDevice } from '../dataplane/device-names.js';
import type { ClusterView } from './cluster-view.js';
import { BLOCKS_PREFIX, ENDPOINTS_PREFIX, MEMBERS_PREFIX } from './network-repository.js';
import type { NetworkRecord } from './network-records.js';

const FLOOD_MAC = '00:00:00:00:00:00';
/** Netlink requests kept in flight at once while programming many entries. */
const CONCURRENCY = 32;
const RETRY_MS = 2000;

interface Forwarding {
  /** MAC → VTEP. */
  readonly fdb: Map<string, string>;
  /** IP → MAC. */
  readonly neighbours: Map<string, string>;
  readonly flood: Set<string>;
}

interface DesiredOverlay {
  readonly spec: OverlaySpec;
  readonly forwarding: Forwarding;
}

export interface ReconcilePassReport {
  readonly at: string;
  readonly full: boolean;
  readonly overlays: number;
  readonly changes: number;
  readonly error?: string;
}

export class OverlayReconciler {
  private readonly applied = new Map<string, Forwarding>();
  private readonly appliedSpecs = new Map<string, string>();
  private readonly runner: CoalescingRunner;
  private fullRequested = true;
  /** Diff every endpoint of every overlay at the next pass (not only `dirty`). */
  private everything = true;
  /** Endpoint record keys changed since the last pass. */
  private dirty = new Set<string>();
  private retryTimer: NodeJS.Timeout | undefined;
  last: ReconcilePassReport | undefined;

  constructor(
    private readonly view: ClusterView,
    private readonly dataplane: Dataplane,
    private readonly specOf: (network: NetworkRecord) => OverlaySpec,
    private readonly log: Logger,
  ) {
    this.runner = new CoalescingRunner(() => this.pass());
  }

  /** An incremental pass soon, for a change of the view: of the store key given, or of anything. */
  request(key?: string): void {
    if (key === undefined || !key.startsWith(ENDPOINTS_PREFIX)) {
      if (key?.startsWith(BLOCKS_PREFIX) || key?.startsWith(MEMBERS_PREFIX)) return; // blocks and members forward nothing
      this.everything = true;
    } else {
      this.dirty.add(key);
    }
    this.runner.request();
  }

  /** A full pass soon: re-read the kernel first. */
  requestFull(): void {
    this.fullRequested = true;
    this.runner.request();
  }

  idle(): Promise<void> {
    return this.runner.idle();
  }

  stop(): void {
    clearTimeout(this.retryTimer);
    this.runner.stop();
  }

  desired(): Map<string, DesiredOverlay> {
    const me = this.view.hostName;
    const hosts = this.view.liveHosts();
    const vteps = new Map<string, string>();
    for (const [name, host] of hosts) if (name !== me && host.address) vteps.set(name, host.address);
    const overlays = new Map<string, DesiredOverlay>();
    const localNetworks = new Set([...this.view.localNetworks().values()].map((local) => local.network));
    for (const network of this.view.networks()) {
      if (!localNetworks.has(network.id) || network.vni === undefined || network.state === 'reserved') continue;
      const spec = this.specOf(network);
      const forwarding: Forwarding = { fdb: new Map(), neighbours: new Map(), flood: new Set(vteps.values()) };
      for (const endpoint of this.view.endpoints(network.id)) {
        const vtep = vteps.get(endpoint.host);
        if (endpoint.state !== 'active' || !endpoint.mac || vtep === undefined) continue;
        forwarding.fdb.set(endpoint.mac, vtep);
        forwarding.neighbours.set(endpoint.ip, endpoint.mac);
      }
      overlays.set(spec.vxlanName, { spec, forwarding });
    }
    return overlays;
  }

  private async pass(): Promise<void> {
    const full = this.fullRequested;
    this.fullRequested = false;
    let whole = full || this.everything;
    this.everything = false;
    const dirty = this.dirty;
    this.dirty = new Set();
    clearTimeout(this.retryTimer);
    let changes = 0;
    let overlays = this.appliedSpecs.size;
    try {
      if (!whole) {
        const step = await this.applyEndpoints(dirty);
        changes += step.changes;
        whole = step.unsettled;
      }
      if (whole) {
        const desired = this.desired();
        overlays = desired.size;
        if (full) await this.readKernel();
        for (const [vxlanName, overlay] of desired) changes += await this.applyOverlay(vxlanName, overlay);
        for (const vxlanName of [...this.appliedSpecs.keys()]) {
          // Checked against the view as it is now: a network created while this pass ran is not stale.
          if (desired.has(vxlanName) || this.desired().has(vxlanName)) continue;
          const vni = vniOfDevice(vxlanName);
          if (vni === undefined) continue;
          await this.dataplane.deleteOverlay(overlayNames(vni));
          this.appliedSpecs.delete(vxlanName);
          this.applied.delete(vxlanName);
          changes++;
          this.log.info({ vni }, 'overlay removed');
        }
      }
      this.last = { at: new Date().toISOString(), full, overlays, changes };
      if (changes > 0) this.log.debug({ full, whole, changes, overlays }, 'overlay state reconciled');
    } catch (error) {
      // What was not applied stays different from the desired state: the retry (a full pass) picks it up.
      this.last = { at: new Date().toISOString(), full, overlays, changes, error: errorMessage(error) };
      this.log.warn({ err: errorMessage(error) }, 'overlay reconciliation failed; retrying');
      this.fullRequested = true; // kept even if another pass runs before the retry timer
      this.everything = true;
      this.retryTimer = setTimeout(() => this.requestFull(), RETRY_MS);
      this.retryTimer.unref();
    }
  }

  /**
   * Programs the endpoints whose records changed (`keys`) where they are missing or stale. Only additions and
   * updates are settled here; `unsettled` asks for a diff of everything (an entry to remove, an address whose
   * MAC changed, an overlay not yet made here).
   */
  private async applyEndpoints(keys: ReadonlySet<string>): Promise<{ changes: number; unsettled: boolean }> {
    const me = this.view.hostName;
    const hosts = this.view.liveHosts();
    const localNetworks = new Set([...this.view.localNetworks().values()].map((local) => local.network));
    const additions: (() => Promise<void>)[] = [];
    let unsettled = false;
    for (const key of keys) {
      const rest = key.slice(ENDPOINTS_PREFIX.length);
      const slash = rest.indexOf('/');
      const network = this.view.network(rest.slice(0, slash));
      const ip = rest.slice(slash + 1);
      if (!network || !localNetworks.has(network.id) || network.vni === undefined || network.state === 'reserved') continue;
      const { vxlanName } = overlayNames(network.vni);
      const applied = this.applied.get(vxlanName);
      if (!applied || !this.appliedSpecs.has(vxlanName)) {
        unsettled = true;
        continue;
      }
      const endpoint = this.view.endpointEntry(key)?.record;
      const vtep = endpoint && endpoint.host !== me ? hosts.get(endpoint.host)?.address : undefined;
      const appliedMac = applied.neighbours.get(ip);
      if (!endpoint || endpoint.state !== 'active' || !endpoint.mac || !vtep) {
        if (appliedMac !== undefined) unsettled = true;
        continue;
      }
      const mac = endpoint.mac;
      if (appliedMac === mac && applied.fdb.get(mac) === vtep) continue;
      if (appliedMac !== undefined && appliedMac !== mac) {
        unsettled = true;
        continue;
      }
      additions.push(async () => {
        await this.dataplane.ensureRemoteEndpoint(vxlanName, { ip, mac, vtep });
        applied.fdb.set(mac, vtep);
        applied.neighbours.set(ip, mac);
      });
    }
    await runLimited(additions, CONCURRENCY);
    return { changes: additions.length, unsettled };
  }

  /** Replaces `applied` with what the kernel holds on Berth's devices. */
  /** Forgets what it believed and lists Berth's devices; their entries are read when each overlay is applied. */
  private async readKernel(): Promise<void> {
    this.applied.clear();
    this.appliedSpecs.clear();
    const links = [...(await this.dataplane.listLinks(VXLAN_PREFIX)), ...(await this.dataplane.listLinks(BRIDGE_PREFIX))];
    for (const link of links) {
      const vni = vniOfDevice(link);
      if (vni !== undefined) this.appliedSpecs.set(overlayNames(vni).vxlanName, 'unknown');
    }
  }

  /** The permanent entries the kernel holds on a VXLAN device. */
  private async readForwarding(vxlanName: string): Promise<Forwarding> {
    const kernel = await this.dataplane.listForwarding(vxlanName);
    const forwarding: Forwarding = { fdb: new Map(), neighbours: new Map(), flood: new Set() };
    for (const entry of kernel.fdb) {
      if (!entry.vtep) continue;
      if (entry.mac === FLOOD_MAC) forwarding.flood.add(entry.vtep);
      else forwarding.fdb.set(entry.mac, entry.vtep);
    }
    for (const entry of kernel.neighbours) forwarding.neighbours.set(entry.ip, entry.mac);
    return forwarding;
  }

  private async applyOverlay(vxlanName: string, overlay: DesiredOverlay): Promise<number> {
    let changes = 0;
    const specKey = JSON.stringify(overlay.spec);
    const previous = this.appliedSpecs.get(vxlanName);
    if (previous !== specKey) {
      // ensureOverlay is idempotent; a device of the same name with other settings is replaced, losing its
      // entries: for a device that existed, start from what the kernel holds after the call.
      await this.dataplane.ensureOverlay(overlay.spec);
      this.appliedSpecs.set(vxlanName, specKey);
      if (previous !== undefined) this.applied.set(vxlanName, await this.readForwarding(vxlanName));
      changes++;
    }
    let applied = this.applied.get(vxlanName);
    if (!applied) this.applied.set(vxlanName, (applied = { fdb: new Map(), neighbours: new Map(), flood: new Set() }));
    const want = overlay.forwarding;
    // Deletions first: an entry replaced by another (a MAC moving to a new address) is then re-added below.
    const removals: (() => Promise<void>)[] = [];
    for (const [ip, mac] of applied.neighbours) {
      if (want.neighbours.get(ip) === mac) continue;
      removals.push(async () => {
        await this.dataplane.deleteRemoteEndpoint(vxlanName, { ip, mac });
        applied.neighbours.delete(ip);
        applied.fdb.delete(mac);
      });
    }
    const neighbourMacs = new Set(applied.neighbours.values());
    for (const [mac] of applied.fdb) {
      if (want.fdb.has(mac) || neighbourMacs.has(mac)) continue;
      removals.push(async () => {
        await this.dataplane.deleteRemoteEndpoint(vxlanName, { ip: '', mac });
        applied.fdb.delete(mac);
      });
    }
    for (const vtep of applied.flood) {
      if (want.flood.has(vtep)) continue;
      removals.push(async () => {
        await this.dataplane.deleteFloodTarget(vxlanName, vtep);
        applied.flood.delete(vtep);
      });
    }
    await runLimited(removals, CONCURRENCY);
    const additions: (() => Promise<void>)[] = [];
    for (const [ip, mac] of want.neighbours) {
      const vtep = want.fdb.get(mac)!;
      if (applied.fdb.get(mac) === vtep && applied.neighbours.get(ip) === mac) continue;
      additions.push(async () => {
        await this.dataplane.ensureRemoteEndpoint(vxlanName, { ip, mac, vtep });
        applied.fdb.set(mac, vtep);
        applied.neighbours.set(ip, mac);
      });
    }
    for (const vtep of want.flood) {
      if (applied.flood.has(vtep)) continue;
      additions.push(async () => {
        await this.dataplane.ensureFloodTarget(vxlanName, vtep);
        applied.flood.add(vtep);
      });
    }
    await runLimited(additions, CONCURRENCY);
    return changes + removals.length + additions.length;
  }
}

async function runLimited(work: readonly (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  const failures: unknown[] = [];
  const worker = async (): Promise<void> => {
    while (next < work.length) {
      const task = work[next++]!;
      await task().catch((error: unknown) => failures.push(error));
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, work.length) }, worker));
  if (failures.length > 0) throw failures[0];
}
