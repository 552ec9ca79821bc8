import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError } from '../errors/berth-error.js';
import { runTool } from '../util/run-tool.js';

/** Host names as `--host-name` accepts them; they become certificate common names. */
const HOST_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;
const CA_DAYS = '3650';
const HOST_DAYS = '825';

export interface IssuedFiles {
  readonly certificate: string;
  readonly key: string;
}

/**
 * The cluster's certificate authority (`ca.key`, `ca.crt`) and one certificate per host
 * (`<host>.crt`, `<host>.key`, for both TLS server and client use), made with the openssl command
 * (argument arrays, no shell). Every file appears whole or not at all: each is made in a staging
 * directory inside `dir` and renamed into place.
 */
export async function initClusterPki(dir: string, hosts: readonly string[]): Promise<{ ca: string; hosts: IssuedFiles[] }> {
  hosts.forEach(checkHostName);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caCert = join(dir, 'ca.crt');
  if (await exists(caCert) || (await exists(join(dir, 'ca.key')))) {
    throw new BerthError('ERR_INVALID_REQUEST', `${caCert} already exists: this directory has a cluster CA; use "berth cluster issue" to add hosts`);
  }
  await withStaging(dir, async (staging) => {
    await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(staging, 'ca.key')], 'cannot create the cluster CA key');
    await openssl(
      ['req', '-x509', '-new', '-key', join(staging, 'ca.key'), '-sha256', '-days', CA_DAYS, '-subj', '/CN=berth-cluster-ca',
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', join(staging, 'ca.crt')],
      'cannot create the cluster CA certificate',
    );
    await chmod(join(staging, 'ca.key'), 0o600);
    await rename(join(staging, 'ca.key'), join(dir, 'ca.key'));
    await rename(join(staging, 'ca.crt'), caCert);
  });
  const issued: IssuedFiles[] = [];
  for (const host of hosts) issued.push(await issueHostCertificate(dir, host));
  return { ca: caCert, hosts: issued };
}

/** A certificate for `host` signed by the CA in `dir`; replaces an older one for the same host. */
export async function issueHostCertificate(dir: string, host: string): Promise<IssuedFiles> {
  checkHostName(host);
  const caKey = join(dir, 'ca.key');
  const caCert = join(dir, 'ca.crt');
  if (!(await exists(caKey)) || !(await exists(caCert))) throw new BerthError('ERR_INVALID_REQUEST', `${dir} holds no cluster CA (ca.key, ca.crt); run "berth cluster init" first`);
  const files = { certificate: join(dir, `${host}.crt`), key: join(dir, `${host}.key`) };
  await withStaging(dir, async (staging) => {
    const key = join(staging, 'host.key');
    const request = join(staging, 'host.csr');
    const certificate = join(staging, 'host.crt');
    await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key], `cannot create the key of host ${host}`);
    await openssl(
      ['req', '-new', '-key', key, '-subj', `/CN=${host}`, '-addext', `subjectAltName=DNS:${host}`, '-addext', 'extendedKeyUsage=serverAuth,clientAuth',
        '-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'keyUsage=critical,digitalSignature', '-out', request],
      `cannot create the certificate request of host ${host}`,
    );
    await openssl(
      ['x509', '-req', '-in', request, '-CA', caCert, '-CAkey', caKey, '-set_serial', `0x${randomBytes(16).toString('hex')}`, '-days', HOST_DAYS, '-sha256', '-copy_extensions', 'copyall', '-out', certificate],
      `cannot sign the certificate of host ${host}`,
    );
    await chmod(key, 0o600);
    await rename(key, files.key);
    await rename(certificate, files.certificate);
  });
  return files;
}

function checkHostName(host: string): void {
  if (!HOST_NAME.test(host)) throw new BerthError('ERR_INVALID_NAME', `host name ${JSON.stringify(host)} must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit`);
}

async function withStaging(dir: string, work: (staging: string) => Promise<void>): Promise<void> {
  const staging = join(dir, `.staging-${randomBytes(6).toString('hex')}`);
  await mkdir(staging, { mode: 0o700 });
  try {
    await work(staging);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function openssl(args: readonly string[], what: string): Promise<void> {
  await runTool(['openssl', ...args], what, 'ERR_INTERNAL');
}

function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}
