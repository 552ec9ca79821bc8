import type { CliContext } from '../main.js';
import { formatTable, printJson } from '../output.js';

interface DoctorReply {
  checks: Array<{ name: string; status: 'ok' | 'warn' | 'fail'; detail: string }>;
}

/** Exits non-zero when any check failed, so scripts can gate on it. */
export async function runDoctorCommand({ client, json }: CliContext): Promise<number> {
  const { checks } = await client.get<DoctorReply>('/v1/doctor');
  if (json) printJson(checks);
  else process.stdout.write(`${formatTable(['check', 'status', 'detail'], checks.map((check) => [check.name, check.status, check.detail]))}\n`);
  return checks.some((check) => check.status === 'fail') ? 1 : 0;
}
