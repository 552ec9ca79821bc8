import type { AgentConfig } from '../plugins/config/agent-config.js';
import type { EngineNetworks } from '../plugins/engine/engine.js';
import { BerthError, errorMessage } from '../plugins/errors/berth-error.js';
import type { Logger } from '../plugins/logging/logger.js';
import type { AdminRoute } from '../plugins/server/admin-app.js';
import type { PluginApi } from '../plugins/server/plugin-app.js';
import type { StateStore } from '../plugins/state/state-store.js';
import type { KeyedMutex } from '../plugins/util/keyed-mutex.js';
import { BERTH_VERSION } from '../plugins/version.js';
import { ClusterView } from '../network-driver/control/cluster-view.js';
import { EngineNetworkSync } from '../network-driver/control/engine-network-sync.js';
import { HostRegistry } from '../network-driver/control/host-registry.js';
import { NetworkRepository } from '../network-driver/control/network-repository.js';
import { OverlayReconciler } from '../network-driver/control/overlay-reconciler.js';
import type { Dataplane } from '../network-driver/dataplane/dataplane.js';
import { ensureBridgeForwarding } from '../network-driver/dataplane/bridge-filter.js';
import { NetlinkDataplane } from '../network-driver/dataplane/netlink-dataplane.js';
import { createIpamPluginApi } from '../network-driver/ipam-plugin-api.js';
import { IpamService } from '../network-driver/ipam-service.js';
import { parseSubnet } from '../network-driver/ipam/ipv4.js';
import { createNetworkAdminRoutes } from '../network-driver/network-admin-routes.js';
import { createNetworkPluginApi } from '../network-driver/network-plugin-api.js';
import { NetworkService } from '../network-driver/network-service.js';

/** Full reconciliation (store relist, kernel read-back, engine endpoints) runs this often as a safety net. */
const FULL_PASS_INTERVAL_MS = 30_000;

/**
 * The network half of the agent: cluster view, host registration, IPAM, network driver, kernel
 * reconciler and engine sync, wired together and started and stopped as one.
 */
export class NetworkStack {
  readonly pluginApis: readonly PluginApi[];
  readonly adminRoutes: readonly AdminRoute[];
  private readonly view: ClusterView;
  private readonly registry: HostRegistry;
  private readonly overlay: OverlayReconciler;
  private readonly sync: EngineNetworkSync;
  private readonly dataplane: Dataplane;
  private timer: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private filtering: HostFiltering | undefined;

  private constructor(parts: { view: ClusterView; registry: HostRegistry; overlay: OverlayReconciler; sync: EngineNetworkSync; dataplane: Dataplane; pluginApis: PluginApi[]; adminRoutes: AdminRoute[]; log: Logger }) {
    this.log = parts.log;
    this.view = parts.view;
    this.registry = parts.registry;
    this.overlay = parts.overlay;
    this.sync = parts.sync;
    this.dataplane = parts.dataplane;
    this.pluginApis = parts.pluginApis;
    this.adminRoutes = parts.adminRoutes;
  }

  static async start(config: AgentConfig, store: StateStore, engine: EngineNetworks, locks: KeyedMutex, log: Logger, peerPort?: number): Promise<NetworkStack> {
    const dataplane = new NetlinkDataplane();
    const underlay = await dataplane.underlay(config.advertiseAddr).catch((error: unknown) => {
      if (config.advertiseAddr !== undefined) {
        throw new BerthError('ERR_INVALID_CONFIG', `advertise-addr ${config.advertiseAddr} is not an address of this host: ${errorMessage(error)}`, { cause: error });
      }
      return undefined; // a single host without a default route still runs local networks
    });
    if (config.advertiseAddr !== undefined) {
      // Only in multi-host mode do neighbour tables grow with the cluster; a single host keeps the kernel's defaults.
      const tuning = await dataplane.tuneHost();
      if (tuning.raised.length > 0 || tuning.problems.length > 0) log.info({ raised: tuning.raised, problems: tuning.problems }, 'host neighbour table limits');
    }
    const defaultPool = parseSubnet(config.networkPool, 'network-pool');

    const view = new ClusterView(new NetworkRepository(store, config.hostName), log.child({ component: 'network-state' }));
    await view.start();
    const registry = new HostRegistry(
      view,
      { ttlSeconds: config.hostTtlSeconds, version: BERTH_VERSION, ...(config.advertiseAddr ? { address: config.advertiseAddr } : {}), ...(peerPort ? { peerPort } : {}) },
      log.child({ component: 'host-registry' }),
    );
    await registry.start();
    const ipam = new IpamService(view, locks, { defaultPool, defaultPrefix: config.networkPoolPrefix });
    const sync = new EngineNetworkSync(view, engine, dataplane, { driverName: config.name, reclaimAfterMs: config.reclaimAfterMs }, log.child({ component: 'network-sync' }));
    const filtering = new HostFiltering(log);
    const networks = new NetworkService(
      view,
      ipam,
      dataplane,
      locks,
      { driverName: config.name, vxlanPort: config.vxlanPort, underlayMtu: underlay?.mtu ?? 1500, ...(config.advertiseAddr ? { localVtep: config.advertiseAddr } : {}) },
      () => sync.request(),
      () => filtering.ensure(),
    );
    const overlay = new OverlayReconciler(view, dataplane, (network) => networks.overlaySpec(network), log.child({ component: 'overlay' }));
    view.onChange((key) => {
      overlay.request(key);
      sync.request();
    });
    log.info({ advertiseAddr: config.advertiseAddr ?? null, underlay: underlay ?? null, vxlanPort: config.vxlanPort }, 'network driver ready');
    const stack = new NetworkStack({
      view,
      registry,
      overlay,
      sync,
      dataplane,
      pluginApis: [createNetworkPluginApi(networks), createIpamPluginApi(ipam)],
      adminRoutes: createNetworkAdminRoutes(view, engine, config.name, (id) => networks.requestRemoval(id)),
      log,
    });
    stack.filtering = filtering;
    // Firewall rules only on a host that has overlays: an agent serving volumes alone leaves iptables untouched.
    if (view.localNetworks().size > 0) await filtering.ensure(true);
    overlay.requestFull();
    sync.requestEndpointCheck();
    stack.schedulePeriodic(log);
    return stack;
  }

  /** Hosts whose registration lease is current, with their underlay address and peer port. */
  liveHosts(): ReadonlyMap<string, { readonly address?: string; readonly peerPort?: number }> {
    return this.view.liveHosts();
  }

  status(): Record<string, unknown> {
    const hosts = this.view.liveHosts();
    return {
      networks: this.view.networks().filter((network) => network.state !== 'reserved').length,
      liveHosts: [...hosts.keys()].sort(),
      lastOverlayPass: this.overlay.last ?? null,
      problems: this.sync.issues(),
    };
  }

  /** Lists and watches the store again, then reconciles everything. */
  async restartWatches(): Promise<void> {
    try {
      await this.view.restartWatches();
      this.overlay.requestFull();
      this.sync.requestEndpointCheck();
    } catch (error) {
      this.log.warn({ err: errorMessage(error) }, 'cannot watch the network state again; the periodic refresh keeps it current');
    }
  }

  /** Leaves the kernel state in place (containers keep talking); the lease expires unless the agent returns. */
  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.overlay.stop();
    this.sync.stop();
    await this.registry.stop({ revoke: false });
    await this.view.stop();
    await this.dataplane.close();
  }

  private schedulePeriodic(log: Logger): void {
    this.timer = setTimeout(async () => {
      try {
        await this.view.resync();
      } catch (error) {
        log.warn({ err: errorMessage(error) }, 'cannot refresh network state from the store');
      }
      if (this.view.localNetworks().size > 0) await this.filtering?.ensure(true);
      this.overlay.requestFull();
      this.sync.requestEndpointCheck();
      this.schedulePeriodic(log);
    }, FULL_PASS_INTERVAL_MS);
    this.timer.unref();
  }
}

/** The iptables rules overlay bridges need (bridge-filter.ts): made before the first overlay, re-checked on full passes. */
class HostFiltering {
  private done = false;

  constructor(private readonly log: Logger) {}

  /** `recheck`: also when made before (an operator or a firewall reload may have flushed them). */
  async ensure(recheck = false): Promise<void> {
    if (this.done && !recheck) return;
    try {
      if ((await ensureBridgeForwarding()) > 0) this.log.info('added the iptables rules for overlay bridges (accept between them, no connection tracking)');
      this.done = true;
    } catch (error) {
      this.log.warn({ err: errorMessage(error) }, 'cannot ensure the overlay bridge forwarding rule; containers on one host may not reach each other while the engine filters bridges');
    }
  }
}
