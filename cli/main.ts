import { parseArgs } from 'node:util';
import { adminSocketPath } from '../plugins/config/plugin-name.js';
import { errorMessage, isBerthError } from '../plugins/errors/berth-error.js';
import { AdminClient } from './admin-client.js';
import { cliDefaults } from './cli-config.js';
import { runBackupCommand } from './commands/backup-command.js';
import { runClusterCommand } from './commands/cluster-command.js';
import { runDoctorCommand } from './commands/doctor-command.js';
import { runMetricsCommand } from './commands/metrics-command.js';
import { runHostCommand, runNetworkCommand } from './commands/network-command.js';
import { runSnapshotCommand } from './commands/snapshot-command.js';
import { runStatusCommand } from './commands/status-command.js';
import { runVolumeCommand } from './commands/volume-command.js';

export interface CliContext {
  readonly client: AdminClient;
  readonly json: boolean;
  readonly positionals: readonly string[];
  readonly force: boolean;
  /** Command options (--to, --from, --key, --compression, --full, --keep-last). */
  readonly options: Readonly<{
    to?: string;
    from?: string;
    key?: string;
    compression?: string;
    full?: boolean;
    'keep-last'?: string;
    'allow-escaping-symlinks'?: boolean;
    subnet?: string;
    gateway?: string;
    'ip-range'?: string;
    internal?: boolean;
    opt?: readonly string[];
    'pki-dir'?: string;
  }>;
}

const USAGE = `usage: berth COMMAND [--name NAME] [--run-dir DIR] [--json]

commands:
  agent                  run the agent (see berth agent --help)
  status                 show the agent's state
  volume ls              list volumes
  volume inspect NAME    show one volume with fresh usage figures, its owner and its replicas' lag
  volume promote NAME    take a volume over on this host after its owner host is gone (failover=manual)
  volume replicate NAME --to HOST   keep one more copy of the volume on HOST
  cluster init --pki-dir DIR HOST...  make the cluster CA and one certificate per host (for --pki-dir)
  cluster issue --pki-dir DIR HOST    add a certificate for another host
  snapshot create VOL [NAME]        take a snapshot (name defaults to snap-<UTC time>)
  snapshot ls VOL                   list a volume's snapshots
  snapshot rm VOL@SNAP              delete a snapshot
  snapshot restore VOL@SNAP [--force]
                         replace the volume's content with the snapshot's; the replaced content is
                         kept as a pre-restore snapshot; --force stops and restarts containers using it
  backup create VOL --to DIR [--key FILE] [--compression zstd|gzip|none] [--full] [--keep-last N]
                         back up from a fresh snapshot: full the first time, then incremental
  backup ls DIR [VOL]    list backups (damaged ones are named)
  backup verify DIR/VOL/ID [--key FILE]
                         read back the backup and its chain, checking every checksum
  backup restore DIR/VOL/ID --to NEWVOL [--key FILE] [--allow-escaping-symlinks]
                         restore into a new volume (never over an existing one), verified
  backup keygen FILE     write a new random encryption key (AES-256-GCM)
  host ls                list the cluster's hosts and whether they are alive
  network ls             list Berth networks (cluster-wide)
  network inspect NAME   show a network with its addresses per host
  network create NAME [--subnet CIDR] [--gateway IP] [--ip-range CIDR] [--internal] [-o KEY=VALUE]...
                         create a network through this host's engine; it appears on every host
  network rm NAME        remove a network from the cluster (hosts keep it while their containers use it)
  metrics                replication figures (lag per replica) in Prometheus text format
  doctor                 check the host, the engine and the agent

options:
  --name NAME            which agent (plugin name; default berth, env BERTH_NAME)
  --run-dir DIR          directory of the admin socket (default /run/berth, env BERTH_RUN_DIR)
  --json                 machine-readable output
  --force                allow a restore of a mounted volume`;

const COMMANDS: Record<string, (context: CliContext) => Promise<number>> = {
  status: runStatusCommand,
  volume: runVolumeCommand,
  doctor: runDoctorCommand,
  snapshot: runSnapshotCommand,
  backup: runBackupCommand,
  host: runHostCommand,
  network: runNetworkCommand,
  cluster: runClusterCommand,
  metrics: runMetricsCommand,
};

export async function runCli(argv: readonly string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: { name: { type: 'string' }, 'run-dir': { type: 'string' }, json: { type: 'boolean', default: false }, force: { type: 'boolean', default: false }, to: { type: 'string' }, from: { type: 'string' }, key: { type: 'string' }, compression: { type: 'string' }, full: { type: 'boolean', default: false }, 'keep-last': { type: 'string' }, 'allow-escaping-symlinks': { type: 'boolean', default: false }, subnet: { type: 'string' }, gateway: { type: 'string' }, 'ip-range': { type: 'string' }, internal: { type: 'boolean', default: false }, opt: { type: 'string', short: 'o', multiple: true }, 'pki-dir': { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    process.stderr.write(`berth: ${errorMessage(error)}\n${USAGE}\n`);
    return 2;
  }
  const [command, ...positionals] = parsed.positionals;
  if (parsed.values.help || command === undefined || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined && !parsed.values.help ? 2 : 0;
  }
  const run = COMMANDS[command];
  if (!run) {
    process.stderr.write(`berth: unknown command ${JSON.stringify(command)}\n${USAGE}\n`);
    return 2;
  }
  const defaults = cliDefaults();
  const socket = adminSocketPath(parsed.values['run-dir'] ?? defaults.runDir, parsed.values.name ?? defaults.name);
  const json = parsed.values.json === true;
  try {
    const { to, from, key, compression, full } = parsed.values;
    const keepLast = parsed.values['keep-last'];
    const options = {
      ...(to ? { to } : {}),
      ...(from ? { from } : {}),
      ...(key ? { key } : {}),
      ...(compression ? { compression } : {}),
      full: full === true,
      ...(keepLast ? { 'keep-last': keepLast } : {}),
      'allow-escaping-symlinks': parsed.values['allow-escaping-symlinks'] === true,
      ...(parsed.values.subnet ? { subnet: parsed.values.subnet } : {}),
      ...(parsed.values.gateway ? { gateway: parsed.values.gateway } : {}),
      ...(parsed.values['ip-range'] ? { 'ip-range': parsed.values['ip-range'] } : {}),
      internal: parsed.values.internal === true,
      opt: parsed.values.opt ?? [],
      ...(parsed.values['pki-dir'] ? { 'pki-dir': parsed.values['pki-dir'] } : {}),
    };
    return await run({ client: new AdminClient(socket), json, positionals, force: parsed.values.force === true, options });
  } catch (error) {
    if (json) process.stdout.write(`${JSON.stringify({ error: { code: isBerthError(error) ? error.code : 'ERR_INTERNAL', message: errorMessage(error) } })}\n`);
    process.stderr.write(`berth: ${errorMessage(error)}\n`);
    return 1;
  }
}
