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
    expect(Object.isFrozen(config)).to.equal(true);
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
    ];
    for (const [argv, pattern] of cases) expect(() => loadAgentConfig(argv, {}), argv.join(' ')).to.throw(pattern);
  });
});
