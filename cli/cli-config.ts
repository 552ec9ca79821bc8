import { DEFAULT_CONFIG } from '../plugins/config/agent-config.js';

/** Defaults for picking the agent, overridable by BERTH_NAME / BERTH_RUN_DIR like the agent's own. */
export function cliDefaults(env: NodeJS.ProcessEnv = process.env): { name: string; runDir: string } {
  return { name: env.BERTH_NAME ?? DEFAULT_CONFIG.name, runDir: env.BERTH_RUN_DIR ?? DEFAULT_CONFIG.runDir };
}
