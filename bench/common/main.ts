// How every benchmark's entry point runs: the process lives until `main` settles, then exits with its code.

/**
 * Runs `main` and exits with the code it resolves with (1 when it rejects, after printing the error).
 *
 * Until `main` settles a ref'd timer keeps the process alive: the cluster helpers await unref'd
 * children with unref'd timers (an engine stopping in `dispose()`), and with nothing else pending
 * Node would end the process silently, with code 0, in the middle of that cleanup. The explicit exit
 * afterwards ends it despite the bounded timers those helpers leave behind.
 */
export function runBenchmark(main: () => Promise<number>): void {
  const keepAlive = setInterval(() => undefined, 60_000);
  main().then(
    (code) => {
      clearInterval(keepAlive);
      process.exit(code);
    },
    (err: unknown) => {
      clearInterval(keepAlive);
      console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
      process.exit(1);
    },
  );
}

/**
 * On SIGINT or SIGTERM: logs it, runs `cleanup` (whatever it is when the signal comes) and exits with 130.
 * Every benchmark that makes namespaces, engines or mounts calls this before making them.
 */
export function cleanUpOnSignals(cleanup: () => Promise<void> | undefined): void {
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: cleaning up`);
    void (cleanup() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
}

/** A progress line on stdout, behind the time of day. */
export function log(message: string): void {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${message}`);
}
