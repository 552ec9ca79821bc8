// The seam between the network control plane (drivers, IPAM, reconciler) and the kernel.
// Every call is idempotent: `ensure*` converges on the described state, `delete*` of something
// already gone succeeds. Failures are BerthErrors with code ERR_DATAPLANE naming the object.
// A Dataplane programs the network namespace of the process that created it.

/** One VXLAN overlay on this host: a Linux bridge with the VXLAN device as a port. */
export interface OverlaySpec {
  /** Bridge name, e.g. `bbr` + VNI; at most 15 bytes. */
  readonly bridgeName: string;
  /** VXLAN device name, e.g. `bvx` + VNI; at most 15 bytes. */
  readonly vxlanName: string;
  /** VXLAN network identifier, 1 to 16777215. */
  readonly vni: number;
  /** UDP destination port (the caller defaults it to 4789). */
  readonly port: number;
  /** IPv4 source address of the encapsulated packets (`local`); absent leaves it unset. */
  readonly localVtep?: string;
  /** Underlay device the VXLAN device is bound to (`dev`); absent leaves it unbound. */
  readonly underlayDevice?: string;
  /** MTU of the bridge and the VXLAN device (see overlayMtu). */
  readonly mtu: number;
}

/** A container's veth pair on this host. */
export interface LocalEndpointSpec {
  /** Host end, enslaved to the bridge; at most 15 bytes. */
  readonly hostIfName: string;
  /** Container end, which the engine moves into the container and renames; at most 15 bytes. */
  readonly containerIfName: string;
  readonly bridgeName: string;
  /** MAC of the container end, `xx:xx:xx:xx:xx:xx`. */
  readonly mac: string;
  readonly mtu: number;
}

/** A container on another host: its overlay address and MAC, and the VTEP of its host. */
export interface RemoteEndpoint {
  readonly ip: string;
  readonly mac: string;
  readonly vtep: string;
}

export interface UnderlayInfo {
  readonly device: string;
  readonly mtu: number;
  /** The device's IPv4 address: the one asked for, or its first primary address; absent if it has none. */
  readonly address?: string;
}

/** Permanent entries on a VXLAN device, as the kernel holds them. */
export interface ForwardingTable {
  /** FDB entries (MAC -> VTEP), one per destination; flood targets have MAC 00:00:00:00:00:00. */
  readonly fdb: readonly { readonly mac: string; readonly vtep: string }[];
  /** Neighbour (ARP) entries the device answers from (IP -> MAC). */
  readonly neighbours: readonly { readonly ip: string; readonly mac: string }[];
}

/** What tuneHost changed and what it could not; the caller logs both. */
export interface HostTuningReport {
  /** e.g. `net.ipv4.neigh.default.gc_thresh1 128 -> 8192`. */
  readonly raised: readonly string[];
  readonly problems: readonly string[];
}

export interface Dataplane {
  /** Underlay device holding `address` (or the default-route device when absent): name, MTU, address. */
  underlay(address?: string): Promise<UnderlayInfo>;
  /**
   * Bridge and VXLAN device (learning off, proxy on so the device answers ARP from its neighbour
   * table, UDP port, local, TTL default), the VXLAN device enslaved to the bridge, both up, MTU set.
   * A VXLAN device whose VNI, port, local, dev, learning or proxy differ is deleted and recreated
   * (its forwarding entries go with it).
   */
  ensureOverlay(spec: OverlaySpec): Promise<void>;
  /** Deletes the bridge and the VXLAN device, and so every FDB and neighbour entry on them. */
  deleteOverlay(names: { readonly bridgeName: string; readonly vxlanName: string }): Promise<void>;
  /** Names of the links whose name starts with `prefix` (for stale cleanup). */
  listLinks(prefix: string): Promise<string[]>;
  /**
   * veth pair: the host end enslaved to the bridge and up; the container end gets `mac` and `mtu`
   * and stays down (the engine moves it into the container and renames it).
   */
  ensureLocalEndpoint(spec: LocalEndpointSpec): Promise<void>;
  /** Deletes the veth pair by its host end, or by the container end when the host end is gone. */
  deleteLocalEndpoint(hostIfName: string, containerIfName?: string): Promise<void>;
  /**
   * Permanent neighbour ip -> mac and permanent FDB entry mac -> vtep on the VXLAN device (replace).
   * The device answers ARP only from these entries and never floods ARP, so every remote endpoint
   * a local container should reach needs this call.
   */
  ensureRemoteEndpoint(vxlanName: string, endpoint: RemoteEndpoint): Promise<void>;
  /** Removes both entries; without `ip` (or with an empty one) only the FDB entry for `mac`. */
  deleteRemoteEndpoint(vxlanName: string, endpoint: { readonly ip?: string; readonly mac: string }): Promise<void>;
  /** Head-end replication: an all-zeros FDB entry to `vtep` (one per remote VTEP), so broadcasts reach it. */
  ensureFloodTarget(vxlanName: string, vtep: string): Promise<void>;
  deleteFloodTarget(vxlanName: string, vtep: string): Promise<void>;
  /** Current permanent entries on the VXLAN device, for reconciling. */
  listForwarding(vxlanName: string): Promise<ForwardingTable>;
  /** Raises net.ipv4.neigh.default.gc_thresh1/2/3 to at least 8192/49152/65536; best effort, never lowers. */
  tuneHost(): Promise<HostTuningReport>;
  close(): Promise<void>;
}
