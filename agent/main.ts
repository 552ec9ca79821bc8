import { AGENT_USAGE, loadAgentConfig } from '../plugins/config/agent-config.js';
import { errorMessage, isBerthError } from '../plugins/errors/berth-error.js';
import { createLogger } from '../plugins/logging/logger.js';
import { Agent } from './agent.js';

/** `berth agent`: runs until SIGTERM or SIGINT, then stops gracefully. */
export async function runAgent(argv: readonly string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${AGENT_USAGE}\n`);
    return 0;
  }
  let config;
  try {
    config = loadAgentConfig(argv);
  } catch (error) {
    process.stderr.write(`berth agent: ${errorMessage(error)}\n`);
    return 2;
  }
  const log = createLogger(config.logLevel);
  log.info({ config }, 'starting agent');
  const agent = new Agent(config, log);
  const stopped = new Promise<number>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      log.info({ signal }, 'stopping agent');
      agent.stop().then(
        () => resolve(0),
        (error: unknown) => {
          log.error({ err: error }, 'agent did not stop cleanly');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  try {
    await agent.start();
  } catch (error) {
    log.fatal({ err: error, code: isBerthError(error) ? error.code : undefined }, `agent failed to start: ${errorMessage(error)}`);
    await agent.stop().catch(() => undefined);
    log.flush();
    return 1;
  }
  const code = await stopped;
  log.flush();
  return code;
}
