import type { Logger } from '../plugins/logging/logger.js';
import type { VolumeView } from './volume-service.js';

/**
 * What the VolumeDriver wire and the admin routes ask of volumes: VolumeService on a single host,
 * ClusteredVolumes (which moves ownership between hosts first) on a shared store.
 */
export interface VolumeDriverOps {
  create(name: string, options: Readonly<Record<string, string>>, log?: Logger): Promise<VolumeView>;
  remove(name: string, log?: Logger): Promise<void>;
  mount(name: string, mountId: string, log?: Logger): Promise<string>;
  unmount(name: string, mountId: string, log?: Logger): Promise<void>;
  path(name: string): Promise<string>;
  get(name: string): Promise<VolumeView>;
  inspect(name: string): Promise<VolumeView>;
  list(): Promise<VolumeView[]>;
  listMountpoints(): Promise<ReadonlyArray<{ name: string; mountpoint: string }>>;
}
