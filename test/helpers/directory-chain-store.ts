import { createHash } from 'node:crypto';
import { cp, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { BerthError } from '../../plugins/errors/berth-error.js';
import type { ReplicationStore } from '../../volume-driver/storage/storage-backend.js';

/**
 * Stand-in for the btrfs replication chain in unit tests only: snapshots are directory copies and a
 * "stream" is the snapshot's files as JSON. It lets the control plane (ownership, handoff, failover,
 * fencing) be tested in one process; the real chain (btrfs send/receive) is tested in the integration
 * tier and across namespaced hosts in the e2e tier.
 */
export class DirectoryChainStore implements ReplicationStore {
  constructor(
    private readonly root: string,
    private readonly livePath: (volume: string) => string,
    private readonly dropLive: (volume: string) => Promise<void>,
  ) {}

  private path(volume: string, id?: string): string {
    return id === undefined ? join(this.root, volume) : join(this.root, volume, id);
  }

  async takeReplicationSnapshot(volume: string, id: string): Promise<void> {
    if ((await this.replicationSnapshots(volume)).includes(id)) throw new BerthError('ERR_SNAPSHOT_EXISTS', `chain snapshot ${volume}@${id} exists`);
    await mkdir(this.path(volume), { recursive: true });
    await cp(this.livePath(volume), this.path(volume, id), { recursive: true });
  }

  async replicationSnapshots(volume: string): Promise<string[]> {
    return (await readdir(this.path(volume)).catch(() => [] as string[])).filter((name) => !name.startsWith('.')).sort();
  }

  async deleteReplicationSnapshot(volume: string, id: string): Promise<void> {
    await rm(this.path(volume, id), { recursive: true, force: true });
  }

  sendReplicationSnapshot(volume: string, id: string): NodeJS.ReadableStream & AsyncIterable<Buffer> {
    const source = this.path(volume, id);
    async function* produce(): AsyncGenerator<Buffer> {
      const files: Record<string, string> = {};
      for (const file of await walk(source)) files[relative(source, file)] = (await readFile(file)).toString('base64');
      yield Buffer.from(JSON.stringify(files));
    }
    return Readable.from(produce());
  }

  async receiveReplicationSnapshot(volume: string, id: string, stream: AsyncIterable<Buffer>, verify?: () => Promise<void>): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    const files = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, string>;
    const staging = this.path(volume, `.staging-${id}`);
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging, { recursive: true });
    for (const [name, content] of Object.entries(files)) {
      await mkdir(dirname(join(staging, name)), { recursive: true });
      await writeFile(join(staging, name), Buffer.from(content, 'base64'));
    }
    try {
      await verify?.();
    } catch (error) {
      await rm(staging, { recursive: true, force: true });
      throw error;
    }
    await rename(staging, this.path(volume, id));
  }

  async materializeReplicationSnapshot(volume: string, id: string): Promise<string> {
    const target = this.livePath(volume);
    if (await stat(target).then(() => true, () => false)) throw new BerthError('ERR_VOLUME_EXISTS', `live data of ${volume} exists`);
    await cp(this.path(volume, id), target, { recursive: true });
    return target;
  }

  async changedBytesSince(volume: string, id: string): Promise<number> {
    const [live, snapshot] = [await digests(this.livePath(volume)), await digests(this.path(volume, id))];
    let changed = 0;
    for (const [name, { hash, size }] of live) if (snapshot.get(name)?.hash !== hash) changed += Math.max(size, 1);
    for (const name of snapshot.keys()) if (!live.has(name)) changed += 1;
    return changed;
  }

  dropLiveData(volume: string): Promise<void> {
    return this.dropLive(volume);
  }

  async removeReplication(volume: string): Promise<void> {
    await rm(this.path(volume), { recursive: true, force: true });
  }

  async replicationVolumes(): Promise<string[]> {
    return readdir(this.root).catch(() => []);
  }
}


async function walk(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await walk(path)));
    else files.push(path);
  }
  return files;
}

async function digests(dir: string): Promise<Map<string, { hash: string; size: number }>> {
  const result = new Map<string, { hash: string; size: number }>();
  for (const file of await walk(dir)) {
    const content = await readFile(file);
    result.set(relative(dir, file), { hash: createHash('sha256').update(content).digest('hex'), size: content.length });
  }
  return result;
}
