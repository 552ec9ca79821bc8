// What a host's engine does over Berth's plugin socket when it creates a network and starts containers
// on it (docker-plugin-protocol.md §3-4): pools, networks, addresses, endpoints and joins, with every
// call's latency recorded.
import { randomBytes } from 'node:crypto';
import { callPlugin, goJson } from '../../test/helpers/plugin-client.js';
import type { ScaleHost } from './scale-cluster.js';

const GATEWAY_DATA = 'com.docker.network.gateway';
/** IPAM option with which an engine attaches to a network another host created (network-driver/ipam-service.ts). */
const ATTACH_OPTION = 'berth.network';

/** A random 64-hex-digit ID, as the engine gives networks and endpoints. */
export function engineId(): string {
  return randomBytes(32).toString('hex');
}

export interface CallSample {
  readonly method: string;
  readonly ms: number;
}

export interface CreatedEndpoint {
  readonly host: string;
  readonly ip: string;
  readonly mac: string;
  readonly endpointId: string;
  /** Clock times: RequestAddress started, CreateEndpoint returned (the record is in the store), Join returned (or was skipped). */
  readonly startedAt: number;
  readonly recordedAt: number;
  readonly joinedAt: number;
  readonly requestAddressMs: number;
  readonly createEndpointMs: number;
  readonly joinMs: number;
}

export class EngineStandIn {
  networkId: string | undefined;
  poolId: string | undefined;

  constructor(
    readonly host: ScaleHost,
    private readonly clock: () => number,
    private readonly timeoutMs: number,
  ) {}

  /** POSTs `body` to `/<method>`; resolves with the answer's JSON, rejects unless it is a 200 without Err. */
  async call(method: string, body: unknown): Promise<Record<string, unknown>> {
    const response = await callPlugin(this.host.pluginSocket, method, goJson(body), {}, { timeoutMs: this.timeoutMs });
    if (response.status !== 200 || typeof response.body.Err === 'string') {
      throw new Error(`${method} on ${this.host.name} answered ${response.status}: ${response.text.trim().slice(0, 300)}`);
    }
    return response.body;
  }

  /** The first host: a new pool for `subnet` and the network on it. Resolves with the pool ID (the cluster network). */
  async createNetwork(subnet: string): Promise<string> {
    const pool = await this.call('IpamDriver.RequestPool', { AddressSpace: 'berth', Pool: subnet, SubPool: '', Options: {}, V6: false });
    const poolId = stringField(pool, 'PoolID', 'RequestPool');
    const gateway = (pool.Data as Record<string, unknown> | undefined)?.[GATEWAY_DATA];
    if (typeof gateway !== 'string') throw new Error(`RequestPool on ${this.host.name} gave no gateway: ${JSON.stringify(pool)}`);
    await this.createOn(poolId, subnet, gateway);
    return poolId;
  }

  /** Any other host: the engine attaches to the cluster network `poolId` (what the agent's engine sync asks it to do). */
  async attachNetwork(poolId: string, subnet: string): Promise<void> {
    const pool = await this.call('IpamDriver.RequestPool', { AddressSpace: 'berth', Pool: subnet, SubPool: '', Options: { [ATTACH_OPTION]: poolId }, V6: false });
    const gateway = (pool.Data as Record<string, unknown> | undefined)?.[GATEWAY_DATA];
    if (stringField(pool, 'PoolID', 'RequestPool') !== poolId || typeof gateway !== 'string') {
      throw new Error(`RequestPool attaching ${this.host.name} to ${poolId} answered ${JSON.stringify(pool)}`);
    }
    await this.createOn(poolId, subnet, gateway);
  }

  /** RequestAddress without a preference; resolves with the address (CIDR). */
  async requestAddress(): Promise<string> {
    const answer = await this.call('IpamDriver.RequestAddress', { PoolID: this.requirePool(), Address: '', Options: {} });
    return stringField(answer, 'Address', 'RequestAddress');
  }

  /** What the engine does for a container: an address, the endpoint, the join (unless `join` is false). */
  async startEndpoint(join = true): Promise<CreatedEndpoint> {
    const networkId = this.requireNetwork();
    const startedAt = this.clock();
    const address = await this.requestAddress();
    const addressedAt = this.clock();
    const endpointId = engineId();
    const created = await this.call('NetworkDriver.CreateEndpoint', {
      NetworkID: networkId,
      EndpointID: endpointId,
      Interface: { Address: address, AddressIPv6: '', MacAddress: '' },
      Options: {},
    });
    const recordedAt = this.clock();
    const mac = (created.Interface as Record<string, unknown> | undefined)?.MacAddress;
    if (typeof mac !== 'string' || mac === '') throw new Error(`CreateEndpoint on ${this.host.name} gave no MAC address: ${JSON.stringify(created)}`);
    if (join) await this.call('NetworkDriver.Join', { NetworkID: networkId, EndpointID: endpointId, SandboxKey: '', Options: {} });
    const joinedAt = this.clock();
    return {
      host: this.host.name,
      ip: address.split('/')[0]!,
      mac,
      endpointId,
      startedAt,
      recordedAt,
      joinedAt,
      requestAddressMs: addressedAt - startedAt,
      createEndpointMs: recordedAt - addressedAt,
      joinMs: joinedAt - recordedAt,
    };
  }

  private async createOn(poolId: string, subnet: string, gateway: string): Promise<void> {
    const networkId = engineId();
    await this.call('NetworkDriver.CreateNetwork', {
      NetworkID: networkId,
      Options: { 'com.docker.network.generic': {} },
      IPv4Data: [{ AddressSpace: 'berth', Pool: subnet, Gateway: gateway }],
      IPv6Data: [],
    });
    this.poolId = poolId;
    this.networkId = networkId;
  }

  private requirePool(): string {
    if (this.poolId === undefined) throw new Error(`no network on ${this.host.name} yet`);
    return this.poolId;
  }

  private requireNetwork(): string {
    if (this.networkId === undefined) throw new Error(`no network on ${this.host.name} yet`);
    return this.networkId;
  }
}

function stringField(body: Record<string, unknown>, field: string, method: string): string {
  const value = body[field];
  if (typeof value !== 'string' || value === '') throw new Error(`${method} answered without ${field}: ${JSON.stringify(body)}`);
  return value;
}

/**
 * Runs `task` `count` times with at most `concurrency` in flight and resolves with the results in start
 * order. After the first failure no new task starts; the failure is rethrown once those in flight settle.
 */
export async function runBounded<T>(count: number, concurrency: number, task: (index: number) => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (next < count && failure === undefined) {
      const index = next++;
      try {
        results[index] = await task(index);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  if (failure !== undefined) throw failure.error;
  return results;
}
