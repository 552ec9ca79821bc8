import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { createLogger } from '../../plugins/logging/logger.js';
import { createPluginApp, type PluginApi } from '../../plugins/server/plugin-app.js';
import { SocketHttpServer } from '../../plugins/server/socket-http-server.js';
import { callPlugin, goJson } from '../helpers/plugin-client.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const silent = createLogger('silent');

describe('plugin app (Docker plugin HTTP protocol)', () => {
  let dir: Awaited<ReturnType<typeof makeTempDir>>;
  let server: SocketHttpServer;
  let socket: string;
  let releaseSlow: (() => void) | undefined;
  const seen: Array<Record<string, unknown>> = [];

  const echoApi: PluginApi = {
    implements: 'VolumeDriver',
    methods: {
      Echo: (body) => {
        seen.push(body);
        return { Got: body };
      },
      Fail: () => {
        throw new BerthError('ERR_VOLUME_NOT_FOUND', 'volume nope does not exist');
      },
      Crash: () => {
        throw new TypeError('boom');
      },
      Slow: () => new Promise((resolve) => (releaseSlow = () => resolve({ Done: true }))),
    },
  };
  const ipamApi: PluginApi = {
    implements: 'IpamDriver',
    methods: {
      RequestPool: () => {
        throw new BerthError('ERR_INVALID_REQUEST', 'pool 10.0.0.0/33 is not a valid CIDR');
      },
    },
  };

  beforeEach(async () => {
    dir = await makeTempDir();
    socket = join(dir.path, 'test.sock');
    server = new SocketHttpServer({ path: socket, socketMode: 0o660, directoryMode: 0o755 }, createPluginApp([echoApi, ipamApi], silent, 1024));
    await server.start();
    seen.length = 0;
  });
  afterEach(async () => {
    releaseSlow?.();
    await server.close(1000);
    await dir.dispose();
  });

  it('answers Plugin.Activate with an empty body, listing each implemented API once', async () => {
    const response = await callPlugin(socket, 'Plugin.Activate');
    expect(response.status).to.equal(200);
    expect(response.body).to.deep.equal({ Implements: ['VolumeDriver', 'IpamDriver'] });
    expect(response.contentType).to.match(/^application\/vnd\.docker\.plugins\.v1\.2\+json/);
  });

  it('parses a JSON body sent without Content-Type, trailing newline included', async () => {
    const response = await callPlugin(socket, 'VolumeDriver.Echo', goJson({ Name: 'v1', Opts: null }));
    expect(response.status).to.equal(200);
    expect(seen).to.deep.equal([{ Name: 'v1', Opts: null }]);
  });

  it('parses the body even when a misleading Content-Type is sent', async () => {
    const response = await callPlugin(socket, 'VolumeDriver.Echo', goJson({ Name: 'v2' }), { 'content-type': 'text/plain' });
    expect(response.status).to.equal(200);
    expect(seen).to.deep.equal([{ Name: 'v2' }]);
  });

  it('treats an empty body and a JSON null as {}', async () => {
    await callPlugin(socket, 'VolumeDriver.Echo');
    await callPlugin(socket, 'VolumeDriver.Echo', 'null\n');
    expect(seen).to.deep.equal([{}, {}]);
  });

  it('answers 404 with Err for an unknown method', async () => {
    const response = await callPlugin(socket, 'VolumeDriver.Teleport', '{}');
    expect(response.status).to.equal(404);
    expect(response.body.Err).to.equal('unknown method VolumeDriver.Teleport');
  });

  it('answers 400 with Err for malformed JSON and for a non-object body', async () => {
    const malformed = await callPlugin(socket, 'VolumeDriver.Echo', '{"Name": ');
    expect(malformed.status).to.equal(400);
    expect(String(malformed.body.Err)).to.match(/^malformed JSON body/);
    const array = await callPlugin(socket, 'VolumeDriver.Echo', '[1,2]');
    expect(array.status).to.equal(400);
    expect(seen).to.have.length(0);
  });

  it('refuses a body over the size limit with 413 and Err', async () => {
    const response = await callPlugin(socket, 'VolumeDriver.Echo', JSON.stringify({ Name: 'x'.repeat(2000) }));
    expect(response.status).to.equal(413);
    expect(String(response.body.Err)).to.contain('1024-byte limit');
    expect(seen).to.have.length(0);
  });

  it('maps errors to HTTP 500 with Err, without repeating the method name', async () => {
    const response = await callPlugin(socket, 'VolumeDriver.Fail', '{}');
    expect(response.status).to.equal(500);
    expect(response.body).to.deep.equal({ Err: 'volume nope does not exist' });
    const crash = await callPlugin(socket, 'VolumeDriver.Crash', '{}');
    expect(crash.status).to.equal(500);
    expect(crash.body.Err).to.equal('internal error: boom');
  });

  it('sets Error as well as Err for IPAM failures (the engine reads Error on IPAM calls)', async () => {
    const response = await callPlugin(socket, 'IpamDriver.RequestPool', '{}');
    expect(response.status).to.equal(500);
    expect(response.body).to.deep.equal({ Err: 'pool 10.0.0.0/33 is not a valid CIDR', Error: 'pool 10.0.0.0/33 is not a valid CIDR' });
  });

  it('refuses to start on a socket a live process owns, and replaces a stale one', async () => {
    const rival = new SocketHttpServer({ path: socket, socketMode: 0o660, directoryMode: 0o755 }, createPluginApp([], silent, 1024));
    let refusal: unknown;
    await rival.start().catch((error: unknown) => (refusal = error));
    expect(refusal).to.be.instanceOf(BerthError);
    expect((refusal as BerthError).code).to.equal('ERR_SOCKET_IN_USE');

    // A process killed with SIGKILL leaves its socket file behind with nobody listening.
    const stalePath = join(dir.path, 'stale.sock');
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stalePath)}, () => console.log('up'))`]);
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    await access(stalePath);
    const fresh = new SocketHttpServer({ path: stalePath, socketMode: 0o660, directoryMode: 0o755 }, createPluginApp([], silent, 1024));
    await fresh.start();
    expect((await callPlugin(stalePath, 'Plugin.Activate')).status).to.equal(200);
    await fresh.close();
  });

  it('lets an in-flight request finish on close, then unlinks the socket', async () => {
    const pending = callPlugin(socket, 'VolumeDriver.Slow', '{}');
    while (server.requestsInFlight === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    const closing = server.close(5000);
    await new Promise((resolve) => setTimeout(resolve, 50));
    releaseSlow?.();
    const response = await pending;
    await closing;
    expect(response.status).to.equal(200);
    expect(response.body).to.deep.equal({ Done: true });
    let gone = false;
    await access(socket).catch(() => (gone = true));
    expect(gone, 'socket file unlinked').to.equal(true);
  });
});
