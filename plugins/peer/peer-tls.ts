import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError } from '../errors/berth-error.js';

/** What both ends of the peer port present and check. */
export interface PeerTlsMaterial {
  readonly hostName: string;
  readonly ca: Buffer;
  readonly certificate: Buffer;
  readonly key: Buffer;
}

/**
 * Reads `ca.crt`, `<host>.crt` and `<host>.key` from `dir` and checks, before anything listens, that the
 * certificate is this host's, signed by the cluster CA, currently valid, and matches the key.
 */
export async function loadPeerTls(dir: string, hostName: string): Promise<PeerTlsMaterial> {
  const fix = `(make them with "berth cluster init" or "berth cluster issue ${hostName}" and copy ca.crt, ${hostName}.crt and ${hostName}.key here)`;
  const read = async (name: string): Promise<Buffer> => {
    try {
      return await readFile(join(dir, name));
    } catch (error) {
      throw new BerthError('ERR_INVALID_CONFIG', `cannot read ${join(dir, name)}: ${(error as NodeJS.ErrnoException).code ?? String(error)} ${fix}`, { cause: error });
    }
  };
  const [ca, certificate, key] = [await read('ca.crt'), await read(`${hostName}.crt`), await read(`${hostName}.key`)];
  const path = join(dir, `${hostName}.crt`);
  let caCert: X509Certificate;
  let cert: X509Certificate;
  try {
    caCert = new X509Certificate(ca);
    cert = new X509Certificate(certificate);
  } catch (error) {
    throw new BerthError('ERR_INVALID_CONFIG', `${path} or ca.crt is not a PEM certificate ${fix}`, { cause: error });
  }
  if (!cert.verify(caCert.publicKey)) throw new BerthError('ERR_INVALID_CONFIG', `${path} is not signed by the cluster CA in ${join(dir, 'ca.crt')} ${fix}`);
  const commonName = certificateHost(cert.subject);
  if (commonName !== hostName) throw new BerthError('ERR_INVALID_CONFIG', `${path} is for host ${JSON.stringify(commonName ?? '')}, not ${hostName} ${fix}`);
  const now = Date.now();
  if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) throw new BerthError('ERR_INVALID_CONFIG', `${path} is valid only from ${cert.validFrom} to ${cert.validTo} ${fix}`);
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new BerthError('ERR_INVALID_CONFIG', `${join(dir, `${hostName}.key`)} is not a private key ${fix}`, { cause: error });
  }
  if (!cert.checkPrivateKey(privateKey)) throw new BerthError('ERR_INVALID_CONFIG', `${join(dir, `${hostName}.key`)} does not belong to ${path} ${fix}`);
  return { hostName, ca, certificate, key };
}

/** The CN of a certificate subject as Node prints it (`CN=hA` lines). */
export function certificateHost(subject: string): string | undefined {
  return /^CN=(.+)$/m.exec(subject)?.[1];
}
