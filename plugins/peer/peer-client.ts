import { createHash } from 'node:crypto';
import { Agent, request as httpsRequest } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import type { PeerCertificate } from 'node:tls';
import { BerthError, errorMessage, type BerthErrorCode } from '../errors/berth-error.js';
import type { PeerTlsMaterial } from './peer-tls.js';
import { DIGEST_TRAILER } from './peer-types.js';

export interface PeerTarget {
  /** The host name the peer's certificate must carry. */
  readonly host: string;
  readonly address: string;
  readonly port: number;
}

export interface PeerClientOptions {
  /** No answer (headers) within this: the peer is unavailable. */
  readonly requestTimeoutMs: number;
  /** A stream silent this long is cut. */
  readonly idleTimeoutMs: number;
}

/** A stream whose end-to-end checksum is checked once it has been read to the end. */
export interface VerifiedBody {
  readonly body: Readable;
  /** Resolves when the whole body arrived and its SHA-256 equals the sender's trailer. */
  readonly verified: Promise<void>;
}

/**
 * Calls other agents' peer ports with this host's certificate, and trusts an answer only from a server
 * whose certificate is signed by the cluster CA and names the expected host (hosts are reached by address).
 */
export class PeerClient {
  /** One pool per expected host: a connection checked for one host is never reused for another. */
  private readonly agents = new Map<string, Agent>();

  constructor(
    private readonly tls: PeerTlsMaterial,
    private readonly options: PeerClientOptions = { requestTimeoutMs: 10_000, idleTimeoutMs: 60_000 },
  ) {}

  private agentFor(host: string): Agent {
    let agent = this.agents.get(host);
    if (!agent) {
      agent = new Agent({ keepAlive: true, maxSockets: 16 });
      this.agents.set(host, agent);
    }
    return agent;
  }

  async json<T>(target: PeerTarget, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const response = await this.send(target, method, path, payload);
    const text = (await readAll(response, target)).toString('utf8');
    if (response.statusCode !== 200) throw remoteError(target, response.statusCode, text);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new BerthError('ERR_PEER_UNAVAILABLE', `peer host ${target.host} answered ${path} with something other than JSON`);
    }
  }

  async stream(target: PeerTarget, path: string): Promise<VerifiedBody> {
    const response = await this.send(target, 'GET', path, undefined);
    if (response.statusCode !== 200) throw remoteError(target, response.statusCode, (await readAll(response, target)).toString('utf8'));
    const hash = createHash('sha256');
    const body = new PassThrough();
    const verified = new Promise<void>((resolve, reject) => {
      const fail = (error: BerthError): void => {
        body.destroy(error);
        reject(error);
      };
      response.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        if (!body.write(chunk)) {
          response.pause();
          body.once('drain', () => response.resume());
        }
      });
      response.on('end', () => {
        const expected = response.trailers[DIGEST_TRAILER];
        const actual = hash.digest('hex');
        if (!response.complete) fail(new BerthError('ERR_PEER_UNAVAILABLE', `transfer from peer host ${target.host} was cut`));
        else if (expected !== actual) fail(new BerthError('ERR_TRANSFER_CORRUPT', `transfer from peer host ${target.host} arrived with checksum ${actual}, the sender sent ${expected ?? 'none'}`));
        else {
          body.end();
          resolve();
        }
      });
      response.on('error', (error) => fail(new BerthError('ERR_PEER_UNAVAILABLE', `transfer from peer host ${target.host} was cut: ${errorMessage(error)}`, { cause: error })));
      response.on('close', () => {
        if (!response.complete) fail(new BerthError('ERR_PEER_UNAVAILABLE', `transfer from peer host ${target.host} was cut`));
      });
      response.socket.setTimeout(this.options.idleTimeoutMs, () => response.destroy(new Error(`no data for ${this.options.idleTimeoutMs} ms`)));
      // The consumer gave up: stop the transfer.
      body.on('close', () => {
        if (!response.complete) response.destroy();
      });
    });
    verified.catch(() => undefined); // the caller awaits it; an early cut must not surface as unhandled
    return { body, verified };
  }

  close(): void {
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
  }

  private send(target: PeerTarget, method: string, path: string, payload: Buffer | undefined): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const request = httpsRequest(
        {
          host: target.address,
          port: target.port,
          method,
          path,
          agent: this.agentFor(target.host),
          key: this.tls.key,
          cert: this.tls.certificate,
          ca: this.tls.ca,
          minVersion: 'TLSv1.3',
          // Hosts are reached by address; what must match is the host name in the certificate.
          checkServerIdentity: (_name: string, certificate: PeerCertificate) =>
            certificate.subject?.CN === target.host ? undefined : new Error(`certificate names host ${String(certificate.subject?.CN)}, not ${target.host}`),
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
          timeout: this.options.requestTimeoutMs,
        },
        (response) => {
          request.setTimeout(0);
          resolve(response);
        },
      );
      request.on('timeout', () => request.destroy(new Error(`no answer within ${this.options.requestTimeoutMs} ms`)));
      request.on('error', (error: NodeJS.ErrnoException) => reject(connectionError(target, error)));
      request.end(payload);
    });
  }
}

const TLS_FAILURES = /certificate|CERT_|SSL|TLS|alert|names host/i;

function connectionError(target: PeerTarget, error: NodeJS.ErrnoException): BerthError {
  const code: BerthErrorCode = TLS_FAILURES.test(`${error.code ?? ''} ${error.message}`) ? 'ERR_PEER_AUTH' : 'ERR_PEER_UNAVAILABLE';
  const what = code === 'ERR_PEER_AUTH' ? 'refused the authentication of' : 'cannot reach';
  return new BerthError(code, `${what} peer host ${target.host} at ${target.address}:${target.port}: ${error.message}`, { cause: error });
}

function remoteError(target: PeerTarget, status: number | undefined, text: string): BerthError {
  try {
    const parsed = JSON.parse(text) as { error?: { code?: string; message?: string } };
    if (parsed.error?.code && parsed.error.message) return new BerthError(parsed.error.code as BerthErrorCode, parsed.error.message, { details: { peer: target.host } });
  } catch {
    // not one of ours
  }
  return new BerthError('ERR_PEER_UNAVAILABLE', `peer host ${target.host} answered ${status ?? 'nothing'}: ${text.slice(0, 200)}`);
}

async function readAll(response: IncomingMessage, target: PeerTarget): Promise<Buffer> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of response as AsyncIterable<Buffer>) chunks.push(chunk);
  } catch (error) {
    throw new BerthError('ERR_PEER_UNAVAILABLE', `answer from peer host ${target.host} was cut: ${errorMessage(error)}`, { cause: error });
  }
  return Buffer.concat(chunks);
}
