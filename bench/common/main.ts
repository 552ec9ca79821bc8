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

/** A progress line on stdout, behind the time of day. */
export function log(message: string): void {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${message}`);
}
