import { BerthError } from '../../plugins/errors/berth-error.js';
import type { CliContext } from '../main.js';
import { formatTable, printJson } from '../output.js';

interface SnapshotReply {
  volume: string;
  name: string;
  createdAt: string;
  origin: string;
}

interface RestoreReply {
  volume: string;
  snapshot: string;
  safetySnapshot: string;
  restartedContainers: string[];
}

export async function runSnapshotCommand(context: CliContext): Promise<number> {
  const [sub, ...args] = context.positionals;
  const { client, json } = context;
  const volumePath = (volume: string) => `/v1/volumes/${encodeURIComponent(volume)}/snapshots`;
  switch (sub) {
    case 'create': {
      const [volume, name] = args;
      if (!volume) throw usage('snapshot create VOL [NAME]');
      const { snapshot } = await client.post<{ snapshot: SnapshotReply }>(volumePath(volume), name === undefined ? {} : { name });
      if (json) printJson(snapshot);
      else process.stdout.write(`${snapshot.volume}@${snapshot.name}\n`);
      return 0;
    }
    case 'ls':
    case 'list': {
      const [volume] = args;
      if (!volume) throw usage('snapshot ls VOL');
      const { snapshots } = await client.get<{ snapshots: SnapshotReply[] }>(volumePath(volume));
      if (json) printJson(snapshots);
      else process.stdout.write(`${formatTable(['snapshot', 'origin', 'created'], snapshots.map((snapshot) => [snapshot.name, snapshot.origin, snapshot.createdAt]))}\n`);
      return 0;
    }
    case 'rm':
    case 'remove': {
      const { volume, snapshot } = parseReference(args, 'snapshot rm VOL@SNAP');
      await client.delete(`${volumePath(volume)}/${encodeURIComponent(snapshot)}`);
      if (json) printJson({ removed: `${volume}@${snapshot}` });
      else process.stdout.write(`removed ${volume}@${snapshot}\n`);
      return 0;
    }
    case 'restore': {
      const { volume, snapshot } = parseReference(args, 'snapshot restore VOL@SNAP [--force]');
      const { restore } = await client.post<{ restore: RestoreReply }>(`${volumePath(volume)}/${encodeURIComponent(snapshot)}/restore`, { force: context.force });
      if (json) printJson(restore);
      else {
        process.stdout.write(`restored ${volume} from ${snapshot}; the replaced content is kept as ${volume}@${restore.safetySnapshot}\n`);
        if (restore.restartedContainers.length > 0) process.stdout.write(`restarted ${restore.restartedContainers.length} container(s)\n`);
      }
      return 0;
    }
    default:
      throw usage('snapshot create|ls|rm|restore ...');
  }
}

/** Accepts `VOL@SNAP` or `VOL SNAP`. */
function parseReference(args: readonly string[], form: string): { volume: string; snapshot: string } {
  const [first, second] = args;
  if (first?.includes('@')) {
    const at = first.indexOf('@');
    const volume = first.slice(0, at);
    const snapshot = first.slice(at + 1);
    if (volume && snapshot) return { volume, snapshot };
  } else if (first && second) {
    return { volume: first, snapshot: second };
  }
  throw usage(form);
}

function usage(form: string): BerthError {
  return new BerthError('ERR_INVALID_REQUEST', `usage: berth ${form}`);
}
