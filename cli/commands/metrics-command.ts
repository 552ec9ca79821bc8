import type { CliContext } from '../main.js';
import { printJson } from '../output.js';

interface Sample {
  name: string;
  help: string;
  labels: Record<string, string>;
  value: number;
}

/** `berth metrics`: the agent's figures in Prometheus' text format (e.g. for node_exporter's textfile collector). */
export async function runMetricsCommand({ client, json }: CliContext): Promise<number> {
  const { samples } = await client.get<{ samples: Sample[] }>('/v1/metrics');
  if (json) {
    printJson(samples);
    return 0;
  }
  const described = new Set<string>();
  const lines: string[] = [];
  for (const sample of samples) {
    if (!described.has(sample.name)) {
      described.add(sample.name);
      lines.push(`# HELP ${sample.name} ${sample.help}`, `# TYPE ${sample.name} gauge`);
    }
    const labels = Object.entries(sample.labels).map(([key, value]) => `${key}="${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`).join(',');
    lines.push(`${sample.name}{${labels}} ${sample.value}`);
  }
  process.stdout.write(lines.length > 0 ? `${lines.join('\n')}\n` : '');
  return 0;
}
