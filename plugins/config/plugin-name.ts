/** Plugin names become socket file names; keep them to the engine's reference-name characters. */
export const PLUGIN_NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/;

export function pluginSocketPath(pluginDir: string, name: string): string {
  return `${pluginDir}/${name}.sock`;
}

export function adminSocketPath(runDir: string, name: string): string {
  return `${runDir}/${name}.sock`;
}
