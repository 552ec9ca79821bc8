import { ACTIVE_CONTAINER_STATES, type Engine, type EngineContainer } from '../plugins/engine/engine.js';

/** Volume name → active containers that mount it through this driver. */
export async function findVolumeUsers(engine: Engine, driverName: string): Promise<Map<string, EngineContainer[]>> {
  const users = new Map<string, EngineContainer[]>();
  for (const container of await engine.listContainers()) {
    if (!ACTIVE_CONTAINER_STATES.has(container.state)) continue;
    for (const mount of container.mounts) {
      if (!isDriverName(mount.driver, driverName)) continue;
      users.set(mount.name, [...(users.get(mount.name) ?? []), container]);
    }
  }
  return users;
}

/** Managed plugins are known to the engine as `name:latest`. */
export function isDriverName(driver: string, name: string): boolean {
  return driver === name || driver === `${name}:latest`;
}
