// `cpn serve --config FILE`: the same settings as the flags, in YAML. Precedence: flags, then
// CPN_* environment variables, then the file, then defaults. The file is validated at start and
// every mistake is reported as file:line.

import type { Command } from 'commander';
import { z } from 'zod';
import { YamlSource } from '../ops/yaml-config.js';

const port = z.number().int().min(0).max(65535);

/** Keys are the flags' names in snake_case. */
export const serveConfigSchema = z.strictObject({
  port: port.optional(),
  host: z.string().min(1).optional(),
  store: z.enum(['memory', 'etcd']).optional(),
  etcd_endpoints: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
  etcd_prefix: z.string().min(1).optional(),
  etcd_ca: z.string().min(1).optional(),
  etcd_cert: z.string().min(1).optional(),
  etcd_key: z.string().min(1).optional(),
  etcd_timeout_ms: z.number().int().min(100).max(60_000).optional(),
  status_flush_ms: z.number().int().min(0).max(600_000).optional(),
  topology: z.string().min(1).optional(),
  demo: z.boolean().optional(),
  reservation_ttl_s: z.number().int().min(1).max(3600).optional(),
  max_explain_nodes: z.number().int().min(1).max(1_000_000).optional(),
  log_level: z.enum(['debug', 'info', 'warn', 'error', 'silent']).optional(),
  log_format: z.enum(['json', 'pretty']).optional(),
  metrics_port: port.optional(),
  grace_ms: z.number().int().min(0).max(600_000).optional(),
});

const camel = (key: string) => key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

/** Fills every option still at its default (not given as a flag or env var) from the file. */
export async function applyServeConfig(command: Command, file: string): Promise<void> {
  const config = (await YamlSource.load(file)).validate(serveConfigSchema);
  for (const [key, value] of Object.entries(config)) {
    if (value === undefined) continue;
    const name = camel(key);
    const source = command.getOptionValueSource(name);
    if (source === 'cli' || source === 'env') continue;
    command.setOptionValueWithSource(name, Array.isArray(value) ? value.join(',') : value, 'config');
  }
}
