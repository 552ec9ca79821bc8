import type { Dataplane, ForwardingTable, HostTuningReport, LocalEndpointSpec, OverlaySpec, RemoteEndpoint, UnderlayInfo } from '../../network-driver/dataplane/dataplane.js';

/**
 * Stand-in for the kernel in unit tests only: it keeps the state a real dataplane would program, so
 * control-plane logic can be checked without root. The integration and e2e tiers use NetlinkDataplane.
 */
export class RecordingDataplane implements Dataplane {
  readonly overlays = new Map<string, OverlaySpec>();
  readonly endpoints = new Map<string, LocalEndpointSpec>();
  /** vxlan → mac → vtep (flood entries under 00:00:00:00:00:00 are kept in `flood`). */
  readonly fdb = new Map<string, Map<string, string>>();
  readonly neighbours = new Map<string, Map<string, string>>();
  readonly flood = new Map<string, Set<string>>();
  calls = 0;

  async underlay(address?: string): Promise<UnderlayInfo> {
    return { device: 'eth0', mtu: 1500, ...(address ? { address } : {}) };
  }

  async ensureOverlay(spec: OverlaySpec): Promise<void> {
    this.calls++;
    this.overlays.set(spec.vxlanName, spec);
  }

  async deleteOverlay(names: { bridgeName: string; vxlanName: string }): Promise<void> {
    this.calls++;
    this.overlays.delete(names.vxlanName);
    this.fdb.delete(names.vxlanName);
    this.neighbours.delete(names.vxlanName);
    this.flood.delete(names.vxlanName);
  }

  async listLinks(prefix: string): Promise<string[]> {
    const names = [...this.overlays.values()].flatMap((spec) => [spec.bridgeName, spec.vxlanName]);
    names.push(...this.endpoints.keys());
    return names.filter((name) => name.startsWith(prefix));
  }

  async ensureLocalEndpoint(spec: LocalEndpointSpec): Promise<void> {
    this.calls++;
    this.endpoints.set(spec.hostIfName, spec);
  }

  async deleteLocalEndpoint(hostIfName: string): Promise<void> {
    this.calls++;
    this.endpoints.delete(hostIfName);
  }

  async ensureRemoteEndpoint(vxlanName: string, endpoint: RemoteEndpoint): Promise<void> {
    this.calls++;
    this.table(this.fdb, vxlanName).set(endpoint.mac, endpoint.vtep);
    this.table(this.neighbours, vxlanName).set(endpoint.ip, endpoint.mac);
  }

  async deleteRemoteEndpoint(vxlanName: string, endpoint: { ip: string; mac: string }): Promise<void> {
    this.calls++;
    this.fdb.get(vxlanName)?.delete(endpoint.mac);
    if (endpoint.ip) this.neighbours.get(vxlanName)?.delete(endpoint.ip);
  }

  async ensureFloodTarget(vxlanName: string, vtep: string): Promise<void> {
    this.calls++;
    let set = this.flood.get(vxlanName);
    if (!set) this.flood.set(vxlanName, (set = new Set()));
    set.add(vtep);
  }

  async deleteFloodTarget(vxlanName: string, vtep: string): Promise<void> {
    this.calls++;
    this.flood.get(vxlanName)?.delete(vtep);
  }

  async listForwarding(vxlanName: string): Promise<ForwardingTable> {
    return {
      fdb: [
        ...[...(this.fdb.get(vxlanName) ?? [])].map(([mac, vtep]) => ({ mac, vtep })),
        ...[...(this.flood.get(vxlanName) ?? [])].map((vtep) => ({ mac: '00:00:00:00:00:00', vtep })),
      ],
      neighbours: [...(this.neighbours.get(vxlanName) ?? [])].map(([ip, mac]) => ({ ip, mac })),
    };
  }

  async tuneHost(): Promise<HostTuningReport> {
    return { raised: [], problems: [] };
  }

  async close(): Promise<void> {}

  private table(tables: Map<string, Map<string, string>>, vxlanName: string): Map<string, string> {
    let table = tables.get(vxlanName);
    if (!table) tables.set(vxlanName, (table = new Map()));
    return table;
  }
}
