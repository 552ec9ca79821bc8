import { expect } from 'chai';
import { loadAgentConfig } from '../../plugins/config/agent-config.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/temp-dir.js';

describe('agent config', () => {
  it('has working defaults and is frozen', () => {
    const config = loadAgentConfig([], {});
    expect(config).to.include({ name: 'berth', root: '/var/lib/berth', runDir: '/run/berth', pluginDir: '/run/docker/plugins', backend: 'auto', dockerHost: 'unix:///var/run/docker.sock' });
    expect(config.store).to.deep.equal({ kind: 'file' });
    expect(config.poolSize).to.equal(20 * 1024 ** 3);
    expect(config.btrfsPool).to.equal(undefined);
    expect('btrfsPool' in config).to.equal(false);
    expect(Object.isFrozen(config)).to.equal(true);
  });

  it('takes a btrfs pool file and its size from flags, BERTH_* variables or the config file', async () => {
    expect(loadAgentConfig(['--btrfs-pool', '/srv/berth/pool.img', '--pool-size', '10G'], {})).to.include({ btrfsPool: '/srv/berth/pool.img', poolSize: 10 * 1024 ** 3, backend: 'auto' });
    expect(loadAgentConfig(['--backend', 'btrfs'], { BERTH_BTRFS_POOL: '/p.img', BERTH_POOL_SIZE: '512m' })).to.include({ btrfsPool: '/p.img', poolSize: 512 * 1024 ** 2, backend: 'btrfs' });
    expect(loadAgentConfig(['--btrfs-pool', '/p.img', '--pool-size', '1.5T'], {}).poolSize).to.equal(1.5 * 1024 ** 4);
    expect(loadAgentConfig(['--btrfs-pool', '/p.img', '--pool-size', String(300 * 1024 ** 2)], {}).poolSize).to.equal(300 * 1024 ** 2);
    expect(loadAgentConfig(['--btrfs-pool', '/p.img'], {}).poolSize).to.equal(20 * 1024 ** 3);
    const temp = await makeTempDir();
    try {
      const file = join(temp.path, 'berth.json');
      await writeFile(file, JSON.stringify({ btrfsPool: '/from/file.img', poolSize: '2G' }));
      expect(loadAgentConfig(['--config', file], {})).to.include({ btrfsPool: '/from/file.img', poolSize: 2 * 1024 ** 3 });
    } finally {
      await temp.dispose();
    }
  });

  it('takes flags over BERTH_* variables over the config file', async () => {
    const temp = await makeTempDir();
    try {
      const file = join(temp.path, 'berth.json');
      await writeFile(file, JSON.stringify({ name: 'fromfile', root: '/srv/file', backend: 'dir' }));
      const config = loadAgentConfig(['--name', 'fromflag', '--config', file], { BERTH_NAME: 'fromenv', BERTH_ROOT: '/srv/env', DOCKER_HOST: 'unix:///x.sock' });
      expect(config).to.include({ name: 'fromflag', root: '/srv/env', backend: 'dir', dockerHost: 'unix:///x.sock' });
    } finally {
      await temp.dispose();
    }
  });

  it('parses etcd endpoints', () => {
    expect(loadAgentConfig(['--store', 'etcd://h1:2379,h2:2379'], {}).store).to.deep.equal({ kind: 'etcd', endpoints: ['h1:2379', 'h2:2379'] });
  });

  it('refuses bad values with a message naming the setting', () => {
    const cases: Array<[string[], RegExp]> = [
      [['--backend', 'zfs'], /backend "zfs" is not one of auto, dir, btrfs/],
      [['--name', '../evil'], /plugin name "..\/evil" must match/],
      [['--root', 'relative/dir'], /root "relative\/dir" must be an absolute path/],
      [['--store', 'redis://x'], /store "redis:\/\/x" must be "file" or "etcd:\/\/HOST:PORT,..."/],
      [['--log-level', 'loud'], /log level "loud" is not one of/],
      [['--bogus'], /Unknown option '--bogus'/],
      [['--btrfs-pool', 'pool.img'], /btrfs-pool "pool.img" must be an absolute path/],
      [['--btrfs-pool', '/p.img', '--pool-size', '100M'], /pool-size "100M" is below the 256M a btrfs pool needs/],
      [['--btrfs-pool', '/p.img', '--pool-size', 'lots'], /pool-size "lots" must be a size such as 20G/],
      [['--btrfs-pool', '/p.img', '--pool-size', '10X'], /pool-size "10X" must be a size/],
      [['--pool-size', '10G'], /pool-size applies only with btrfs-pool/],
      [['--btrfs-pool', '/p.img', '--backend', 'dir'], /btrfs-pool needs backend btrfs or auto, not dir/],
      [['--btrfs-pool', '/var/lib/berth/pool'], /must lie outside \/var\/lib\/berth\/pool, where the pool is mounted/],
      [['--root', '/srv', '--btrfs-pool', '/srv/pool/x.img'], /must lie outside \/srv\/pool/],
      [['--replace-replicas-after', 'soon'], /replace-replicas-after "soon" must be a duration of at least 1s/],
      [['--replace-replicas-after', '500ms'], /replace-replicas-after "500ms" must be a duration of at least 1s/],
    ];
    expect(loadAgentConfig(['--replace-replicas-after', '10m'], {}).replaceReplicasAfterMs).to.equal(600_000);
    for (const [argv, pattern] of cases) expect(() => loadAgentConfig(argv, {}), argv.join(' ')).to.throw(pattern);
  });
});
