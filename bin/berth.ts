#!/usr/bin/env node
// Entry point: `berth agent` runs the agent; every other command is a thin client of its admin socket.
const [command, ...rest] = process.argv.slice(2);
if (command === 'agent') {
  const { runAgent } = await import('../agent/main.js');
  const code = await runAgent(rest);
  // Let pino drain, then exit even if a keep-alive handle lingers.
  setTimeout(() => process.exit(code), 50).unref();
  process.exitCode = code;
} else {
  const { runCli } = await import('../cli/main.js');
  process.exitCode = await runCli(process.argv.slice(2));
}
