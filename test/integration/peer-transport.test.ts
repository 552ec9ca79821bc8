import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { createLogger } from '../../plugins/logging/logger.js';
import { initClusterPki, issueHostCertificate } from '../../plugins/peer/cluster-pki.js';
import { PeerClient, type PeerTarget } from '../../plugins/peer/peer-client.js';
import { PeerServer } from '../../plugins/peer/peer-server.js';
import { loadPeerTls, type PeerTlsMaterial } from '../../plugins/peer/peer-tls.js';
import type { PeerRoute } from '../../plugins/peer/peer-types.js';
import { expectBerthError } from '../helpers/expect-berth-error.js';
import { requirePrerequisites } from '../helpers/prerequisites.js';
import { repoRoot } from '../helpers/repo-root.js';
import { runCommand } from '../helpers/run-command.js';
import { makeTempDir } from '../helpers/temp-dir.js';

// The peer port with real certificates (made by openssl through berth's own PKI code) and real TLS 1.3
// on loopback: who may talk, what they are told, and that a stream is only ever accepted whole.
describe('peer port (mutual TLS on loopback)', function () {
  this.timeout(60_000);
  let temp: { path: string; dispose(): Promise<void> };
  let pki: string;
  let server: PeerServer;
  let serverTls: PeerTlsMaterial;
  let clientTls: PeerTlsMaterial;
  let target: PeerTarget;
  const log = createLogger('silent');
  const big = randomBytes(64 * 1024 * 1024);
  const served: string[] = [];

  const routes: PeerRoute[] = [
    { method: 'POST', path: '/v1/echo/:word', handler: async ({ peer, params, body }) => (served.push(peer), { peer, word: params.word, body }) },
    { method: 'GET', path: '/v1/big', handler: async () => ({ stream: Readable.from(chunks(big)) }) },
    {
      method: 'GET',
      path: '/v1/broken',
      handler: async () => ({
        stream: (async function* () {
          yield big.subarray(0, 4 * 1024 * 1024);
          throw new Error('source failed half-way');
        })(),
      }),
    },
    { method: 'GET', path: '/v1/refuse', handler: async () => { throw new BerthError('ERR_VOLUME_FENCED', 'volume db is fenced'); } },
    {
      method: 'GET',
      path: '/v1/fails-at-once',
      handler: async () => ({
        stream: (async function* () {
          yield* [];
          throw new BerthError('ERR_SNAPSHOT_NOT_FOUND', 'host a no longer holds db@e1');
        })(),
      }),
    },
    { method: 'GET', path: '/v1/silent', handler: () => new Promise(() => undefined) },
  ];

  before(async () => {
    requirePrerequisites(['openssl']);
    temp = await makeTempDir('berth-peer-');
    pki = join(temp.path, 'pki');
    await initClusterPki(pki, ['a', 'b']);
    serverTls = await loadPeerTls(pki, 'a');
    clientTls = await loadPeerTls(pki, 'b');
    server = new PeerServer(serverTls, routes, { host: '127.0.0.1', port: 0 }, log);
    await server.start();
    target = { host: 'a', address: '127.0.0.1', port: server.port };
  });

  after(async () => {
    await server?.close();
    await temp?.dispose();
  });

  it('makes a CA and host certificates with private keys readable by root only', async () => {
    for (const file of ['ca.key', 'a.key', 'b.key']) expect((await stat(join(pki, file))).mode & 0o777, file).to.equal(0o600);
    await expectBerthError(initClusterPki(pki, ['c']), 'ERR_INVALID_REQUEST', /already exists/);
    await expectBerthError(issueHostCertificate(pki, '../x'), 'ERR_INVALID_NAME');
  });

  it('tells the handler which host asked, from its certificate', async () => {
    const client = new PeerClient(clientTls);
    try {
      expect(await client.json(target, 'POST', '/v1/echo/hello', { n: 1 })).to.deep.equal({ peer: 'b', word: 'hello', body: { n: 1 } });
      const refused = await expectBerthError(client.json(target, 'GET', '/v1/refuse'), 'ERR_VOLUME_FENCED');
      expect(refused.message).to.equal('volume db is fenced');
    } finally {
      client.close();
    }
  });

  it('streams 64 MiB byte-identical and confirms its checksum only at the end', async () => {
    const client = new PeerClient(clientTls);
    try {
      const { body, verified } = await client.stream(target, '/v1/big');
      const hash = createHash('sha256');
      for await (const chunk of body) hash.update(chunk as Buffer);
      await verified;
      expect(hash.digest('hex')).to.equal(createHash('sha256').update(big).digest('hex'));
    } finally {
      client.close();
    }
  });

  it('never lets a stream cut half-way pass as complete', async () => {
    const client = new PeerClient(clientTls);
    try {
      const { body, verified } = await client.stream(target, '/v1/broken');
      let received = 0;
      const reading = (async () => {
        for await (const chunk of body) received += (chunk as Buffer).length;
      })();
      await expectBerthError(verified, 'ERR_PEER_UNAVAILABLE', /was cut/);
      await reading.catch(() => undefined);
      expect(received).to.be.at.most(4 * 1024 * 1024);
    } finally {
      client.close();
    }
  });

  it('answers a stream that fails before its first byte with the error itself', async () => {
    const client = new PeerClient(clientTls);
    try {
      await expectBerthError(client.stream(target, '/v1/fails-at-once'), 'ERR_SNAPSHOT_NOT_FOUND', /no longer holds db@e1/);
    } finally {
      client.close();
    }
  });

  it('gives up on a peer that does not answer, and on one that is not there', async () => {
    const impatient = new PeerClient(clientTls, { requestTimeoutMs: 300, idleTimeoutMs: 300 });
    try {
      await expectBerthError(impatient.json(target, 'GET', '/v1/silent'), 'ERR_PEER_UNAVAILABLE', /no answer within 300 ms/);
      const closed = createNetServer();
      await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
      const port = (closed.address() as AddressInfo).port;
      await new Promise((resolve) => closed.close(resolve));
      await expectBerthError(impatient.json({ host: 'a', address: '127.0.0.1', port }, 'GET', '/v1/silent'), 'ERR_PEER_UNAVAILABLE', /cannot reach peer host a at 127\.0\.0\.1/);
    } finally {
      impatient.close();
    }
  });

  it('fails a stream whose checksum trailer is wrong or missing (a hand-written server with the certificate of a)', async () => {
    const rogue = createHttpsServer({ key: serverTls.key, cert: serverTls.certificate, ca: serverTls.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (request, response) => {
      response.writeHead(200, { 'content-type': 'application/octet-stream', trailer: 'x-berth-sha256' });
      response.write(Buffer.alloc(4096, 7));
      if (request.url === '/wrong') response.addTrailers({ 'x-berth-sha256': createHash('sha256').update('something else').digest('hex') });
      response.end();
    });
    await new Promise<void>((resolve) => rogue.listen(0, '127.0.0.1', resolve));
    const client = new PeerClient(clientTls);
    try {
      const rogueTarget = { host: 'a', address: '127.0.0.1', port: (rogue.address() as AddressInfo).port };
      for (const path of ['/wrong', '/none']) {
        const { body, verified } = await client.stream(rogueTarget, path);
        const read = (async () => {
          for await (const _chunk of body) void _chunk;
        })();
        await expectBerthError(verified, 'ERR_TRANSFER_CORRUPT', /arrived with checksum [0-9a-f]{64}, the sender sent/);
        await read.then(() => expect.fail(`a ${path} stream ended cleanly`), (error: unknown) => expect((error as BerthError).code).to.equal('ERR_TRANSFER_CORRUPT'));
      }
    } finally {
      client.close();
      rogue.closeAllConnections();
      await new Promise((resolve) => rogue.close(resolve));
    }
  });

  it('refuses a client without a certificate, or with one from another CA', async () => {
    const bare = await new Promise<string>((resolve) => {
      const request = httpsRequest({ host: '127.0.0.1', port: server.port, path: '/v1/big', ca: serverTls.ca, checkServerIdentity: () => undefined }, (response) => resolve(`answered ${response.statusCode}`));
      request.on('error', (error) => resolve(`refused: ${error.message}`));
      request.end();
    });
    expect(bare).to.match(/^refused/);

    const other = join(temp.path, 'other');
    await initClusterPki(other, ['b']);
    const stranger = new PeerClient({ ...(await loadPeerTls(other, 'b')), ca: serverTls.ca });
    const servedBefore = served.length;
    try {
      // TLS 1.3 checks the client's certificate after the client thinks the handshake is done: the client
      // sees either the server's alert or the connection closing, never an answer.
      const refused = await stranger.json(target, 'POST', '/v1/echo/x', {}).then(() => undefined, (error: unknown) => error);
      expect(refused).to.be.instanceOf(BerthError);
      expect((refused as BerthError).code).to.be.oneOf(['ERR_PEER_AUTH', 'ERR_PEER_UNAVAILABLE']);
      expect(served.length, 'the handler never ran for the stranger').to.equal(servedBefore);
    } finally {
      stranger.close();
    }
  });

  it('refuses a server whose certificate names another host than the one expected', async () => {
    const client = new PeerClient(clientTls);
    try {
      await expectBerthError(client.json({ ...target, host: 'c' }, 'POST', '/v1/echo/x', {}), 'ERR_PEER_AUTH', /names host a, not c/);
    } finally {
      client.close();
    }
  });

  it('names the problem with certificates before an agent starts', async () => {
    await expectBerthError(loadPeerTls(pki, 'c'), 'ERR_INVALID_CONFIG', /cannot read .*c\.crt.*berth cluster issue c/);
    const other = join(temp.path, 'other');
    const mixed = join(temp.path, 'mixed');
    await initClusterPki(mixed, ['a']);
    await writeFile(join(mixed, 'a.crt'), await readFile(join(other, 'b.crt')));
    await expectBerthError(loadPeerTls(mixed, 'a'), 'ERR_INVALID_CONFIG', /not signed by the cluster CA/);
    await initClusterPki(join(temp.path, 'mixed2'), ['a', 'b']);
    await writeFile(join(temp.path, 'mixed2', 'a.key'), await readFile(join(temp.path, 'mixed2', 'b.key')));
    await expectBerthError(loadPeerTls(join(temp.path, 'mixed2'), 'a'), 'ERR_INVALID_CONFIG', /does not belong to/);
  });

  it('berth cluster init makes the files from the command line and refuses to run twice', async () => {
    const dir = join(temp.path, 'cli');
    const cli = [process.execPath, join(repoRoot, 'dist', 'bin', 'berth.js'), 'cluster', 'init', '--pki-dir', dir, 'h1', 'h2'];
    const made = await runCommand(cli, { timeoutMs: 30_000 });
    expect(made.code, made.stderr).to.equal(0);
    expect(made.stdout).to.contain('host h2:');
    await loadPeerTls(dir, 'h1');
    const again = await runCommand(cli, { timeoutMs: 30_000 });
    expect(again.code).to.equal(1);
    expect(again.stderr).to.contain('already exists');
  });
});

function* chunks(data: Buffer): Generator<Buffer> {
  for (let offset = 0; offset < data.length; offset += 1024 * 1024) yield data.subarray(offset, offset + 1024 * 1024);
}
