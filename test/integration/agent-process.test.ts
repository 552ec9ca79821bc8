import { expect } from 'chai';
import { access, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { callPlugin, goJson } from '../helpers/plugin-client.js';
import { makeTempDir } from '../helpers/temp-dir.js';
import { runBerthCli, startLocalAgent, type LocalAgent } from '../helpers/local-agent.js';

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

describe('agent process: sockets, signals, CLI', function () {
  this.timeout(60_000);
  let temp: Awaited<ReturnType<typeof makeTempDir>>;
  let agent: LocalAgent | undefined;

  beforeEach(async () => (temp = await makeTempDir('berth-ap-')));
  afterEach(async () => {
    await agent?.kill();
    agent = undefined;
    await temp.dispose();
  });

  it('serves both sockets with root-only admin access, and the CLI reads through the admin socket', async () => {
    agent = await startLocalAgent({ dir: temp.path });
    expect((await stat(agent.adminSocket)).mode & 0o777).to.equal(0o600);
    expect((await stat(agent.runDir)).mode & 0o777).to.equal(0o700);
    const cliArgs = ['--run-dir', agent.runDir];
    const status = await runBerthCli(['status', '--json', ...cliArgs]);
    expect(status.code, status.stderr).to.equal(0);
    const parsed = JSON.parse(status.stdout) as Record<string, unknown>;
    expect(parsed).to.include({ name: 'berth', root: agent.root, backend: 'dir', pluginSocket: agent.pluginSocket });
    expect((parsed.engine as { reachable: boolean }).reachable).to.equal(false);

    await callPlugin(agent.pluginSocket, 'VolumeDriver.Create', goJson({ Name: 'web', Opts: { mode: '0700' } }));
    const list = await runBerthCli(['volume', 'ls', ...cliArgs]);
    expect(list.stdout).to.match(/^NAME\s+BACKEND\s+MOUNTS\s+USED\s+CREATED\nweb\s+dir\s+0\s+/);
    const inspect = JSON.parse((await runBerthCli(['volume', 'inspect', 'web', '--json', ...cliArgs])).stdout) as Array<Record<string, unknown>>;
    expect(inspect[0]).to.include({ name: 'web', backend: 'dir', mountCount: 0 });
    expect(inspect[0]?.usedBytes).to.be.a('number');
    const missing = await runBerthCli(['volume', 'inspect', 'nope', ...cliArgs]);
    expect(missing.code).to.equal(1);
    expect(missing.stderr).to.equal('berth: volume nope does not exist\n');

    const promote = await runBerthCli(['volume', 'promote', 'web', ...cliArgs]);
    expect(promote.code).to.equal(1);
    expect(promote.stderr).to.contain('volumes move and replicate between hosts only on a shared etcd store');
    const doctor = await runBerthCli(['doctor', '--json', ...cliArgs]);
    const checks = JSON.parse(doctor.stdout) as Array<{ name: string; status: string }>;
    expect(checks.find((check) => check.name === 'engine')?.status).to.equal('fail');
    expect(checks.find((check) => check.name === 'plugin socket')?.status).to.equal('ok');
    expect(doctor.code, 'doctor exits non-zero when a check fails').to.equal(1);
  });

  it('the CLI names the socket and the fix when no agent runs', async () => {
    const result = await runBerthCli(['status', '--run-dir', join(temp.path, 'nowhere')]);
    expect(result.code).to.equal(1);
    expect(result.stderr).to.contain(`cannot reach the agent at ${join(temp.path, 'nowhere', 'berth.sock')}`);
    expect(result.stderr).to.contain('is `berth agent` running?');
  });

  it('refuses to start while a live agent owns the plugin socket', async () => {
    agent = await startLocalAgent({ dir: temp.path });
    const paths = ['--root', agent.root, '--run-dir', agent.runDir, '--plugin-dir', join(temp.path, 'plugins')];
    const rival = await runBerthCli(['agent', ...paths]);
    expect(rival.code).to.equal(1);
    expect(rival.stdout).to.contain(`another agent is serving ${agent.pluginSocket}`);
    expect(await exists(agent.pluginSocket), 'first agent keeps its socket').to.equal(true);
    expect((await callPlugin(agent.pluginSocket, 'Plugin.Activate')).body).to.deep.equal({ Implements: ['VolumeDriver', 'NetworkDriver', 'IpamDriver'] });
  });

  it('stops gracefully on SIGTERM, unlinking both sockets', async () => {
    agent = await startLocalAgent({ dir: temp.path });
    const { code } = await agent.stop();
    expect(code).to.equal(0);
    expect(await exists(agent.pluginSocket)).to.equal(false);
    expect(await exists(agent.adminSocket)).to.equal(false);
    expect(await agent.logs()).to.contain('"msg":"agent stopped"');
  });

  it('replaces the stale sockets a kill -9 leaves behind', async () => {
    agent = await startLocalAgent({ dir: temp.path });
    await agent.kill();
    expect(await exists(agent.pluginSocket), 'stale socket left by kill -9').to.equal(true);
    agent = await startLocalAgent({ dir: temp.path });
    expect((await callPlugin(agent.pluginSocket, 'Plugin.Activate')).status).to.equal(200);
  });

  it('after kill -9 at arbitrary points of create/remove traffic, every volume is whole or absent', async () => {
    const acknowledged = new Set<string>();
    const removeSent = new Set<string>();
    const removedAck = new Set<string>();
    for (let round = 0; round < 5; round++) {
      agent = await startLocalAgent({ dir: temp.path });
      const socket = agent.pluginSocket;
      let stop = false;
      const traffic = (async () => {
        for (let i = 0; i < 400 && !stop; i++) {
          const name = `r${round}-v${i}`;
          const created = await callPlugin(socket, 'VolumeDriver.Create', goJson({ Name: name, Opts: { mode: '0750' } })).catch(() => undefined);
          if (created?.status === 200) acknowledged.add(name);
          if (i % 3 === 0) {
            removeSent.add(name);
            const removed = await callPlugin(socket, 'VolumeDriver.Remove', goJson({ Name: name })).catch(() => undefined);
            if (removed?.status === 200) removedAck.add(name);
          }
        }
      })();
      await new Promise((resolve) => setTimeout(resolve, 100 + Math.floor(Math.random() * 400)));
      await agent.kill();
      stop = true;
      await traffic;
    }
    agent = await startLocalAgent({ dir: temp.path });
    const listed = ((await callPlugin(agent.pluginSocket, 'VolumeDriver.List', '{}\n')).body.Volumes as Array<{ Name: string }>).map((volume) => volume.Name).sort();
    const dirs = (await readdir(join(agent.root, 'volumes'))).sort();
    expect(dirs, 'data directories match the volumes the engine can see').to.deep.equal(listed);
    expect(await readdir(join(agent.root, 'staging'))).to.deep.equal([]);
    expect(await readdir(join(agent.root, 'trash'))).to.deep.equal([]);
    for (const name of acknowledged) {
      // A remove cut off by the kill may have happened or not; both are whole states.
      if (!removeSent.has(name)) expect(listed, `acknowledged create of ${name}`).to.include(name);
    }
    for (const name of removedAck) expect(listed, `acknowledged remove of ${name}`).to.not.include(name);
    for (const name of listed) expect((await stat(join(agent.root, 'volumes', name))).mode & 0o777, name).to.equal(0o750);
    expect(acknowledged.size, 'traffic really ran').to.be.greaterThan(5);
  });
});
