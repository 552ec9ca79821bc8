import { randomBytes } from 'node:crypto';
import type { EngineNetwork, EngineNetworks, EngineNetworkSpec } from '../../plugins/engine/engine.js';
import { BerthError } from '../../plugins/errors/berth-error.js';

/**
 * Stand-in for an engine's network API in unit tests only (the e2e tier drives real engines). Tests set
 * the networks and endpoints it reports; creations and removals are recorded.
 */
export class FakeEngineNetworks implements EngineNetworks {
  readonly endpoint = 'fake://engine';
  readonly networks = new Map<string, EngineNetwork>();
  readonly created: EngineNetworkSpec[] = [];
  readonly removed: string[] = [];
  /** Called by createNetwork with the new engine ID, as the real engine calls back into the driver. */
  onCreate: ((spec: EngineNetworkSpec, engineId: string) => Promise<void>) | undefined;

  add(network: Omit<EngineNetwork, 'labels' | 'driver'> & { labels?: Record<string, string> }): void {
    this.networks.set(network.id, { driver: 'berth', labels: {}, ...network });
  }

  async listNetworks(driver: string): Promise<readonly EngineNetwork[]> {
    return [...this.networks.values()].filter((network) => network.driver === driver);
  }

  async inspectNetwork(idOrName: string): Promise<EngineNetwork | undefined> {
    return this.networks.get(idOrName) ?? [...this.networks.values()].find((network) => network.name === idOrName);
  }

  async createNetwork(spec: EngineNetworkSpec): Promise<string> {
    if (await this.inspectNetwork(spec.name)) throw new BerthError('ERR_NETWORK_EXISTS', `the engine already has a network named ${spec.name}`);
    const id = randomBytes(32).toString('hex');
    this.created.push(spec);
    await this.onCreate?.(spec, id);
    this.networks.set(id, { id, name: spec.name, driver: spec.driver, labels: { ...spec.labels }, endpoints: [] });
    return id;
  }

  async removeNetwork(idOrName: string): Promise<void> {
    const network = await this.inspectNetwork(idOrName);
    if (!network) return;
    if (network.endpoints.length > 0) throw new BerthError('ERR_NETWORK_IN_USE', `network ${idOrName} still has containers on this host`);
    this.removed.push(network.id);
    this.networks.delete(network.id);
  }
}
