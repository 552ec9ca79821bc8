/** VolumeDriver wire shapes (docker-plugin-protocol.md §2.1); field names are exact. */
export interface WireVolume {
  Name: string;
  Mountpoint?: string;
  /** RFC 3339; the engine decodes it as time.Time, so never send another format. */
  CreatedAt?: string;
  Status?: Record<string, unknown>;
}

export interface VolumeGetResponse {
  Volume: WireVolume;
}

export interface VolumeListResponse {
  Volumes: Array<Pick<WireVolume, 'Name' | 'Mountpoint'>>;
}

export interface VolumeMountResponse {
  Mountpoint: string;
}

export interface VolumeCapabilitiesResponse {
  Capabilities: { Scope: 'local' | 'global' };
}
