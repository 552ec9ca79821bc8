import { resolve } from 'node:path';
import { BerthError } from '../../plugins/errors/berth-error.js';
import { initClusterPki, issueHostCertificate } from '../../plugins/peer/cluster-pki.js';
import type { CliContext } from '../main.js';
import { printJson } from '../output.js';

/** `berth cluster init|issue`: the certificates agents authenticate each other with. Runs locally, no agent needed. */
export async function runClusterCommand(context: CliContext): Promise<number> {
  const [sub, ...hosts] = context.positionals;
  const dirOption = context.options['pki-dir'];
  if (!dirOption) throw new BerthError('ERR_INVALID_REQUEST', 'cluster commands need --pki-dir DIR');
  const dir = resolve(dirOption);
  if (sub === 'init') {
    if (hosts.length === 0) throw new BerthError('ERR_INVALID_REQUEST', 'usage: berth cluster init --pki-dir DIR HOST...');
    const made = await initClusterPki(dir, hosts);
    if (context.json) printJson(made);
    else process.stdout.write(`cluster CA: ${made.ca} (keep ${dir}/ca.key with the operator)\n${made.hosts.map((files, index) => certificateLine(hosts[index]!, files.certificate, files.key)).join('')}`);
    return 0;
  }
  if (sub === 'issue') {
    if (hosts.length !== 1) throw new BerthError('ERR_INVALID_REQUEST', 'usage: berth cluster issue --pki-dir DIR HOST');
    const files = await issueHostCertificate(dir, hosts[0]!);
    if (context.json) printJson(files);
    else process.stdout.write(certificateLine(hosts[0]!, files.certificate, files.key));
    return 0;
  }
  throw new BerthError('ERR_INVALID_REQUEST', `unknown cluster command ${JSON.stringify(sub ?? '')}; use: cluster init --pki-dir DIR HOST... | cluster issue --pki-dir DIR HOST`);
}

function certificateLine(host: string, certificate: string, key: string): string {
  return `host ${host}: ${certificate}, ${key} (copy them with ca.crt to ${host}'s --pki-dir)\n`;
}
