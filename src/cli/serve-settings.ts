// The one source of every `cpn serve` setting: its flag, its CPN_* variable, its YAML key, its
// range or choices, its default and its help. The commander options, the `--config` file schema,
// the Helm chart test and the README all derive from this table, so a setting is one entry.
//
// Naming: the key `etcdTimeoutMs` is the flag `--etcd-timeout-ms`, the variable
// `CPN_ETCD_TIMEOUT_MS` and the YAML key `etcd_timeout_ms`. Precedence: flag, variable, file,
// default.

import { type Command, Option } from 'commander';
import { z } from 'zod';
import { DEFAULT_MAX_REGION_LABELS } from '../ops/metrics.js';
import { YamlSource } from '../ops/yaml-config.js';
import { DEFAULT_CONNECTION_LIMITS } from '../server/connections.js';
import { DEFAULT_MAX_NODES } from '../server/services.js';
import { DEFAULT_MAX_LATENCY_SAMPLES } from '../store/registry-index.js';
import { integer } from './args.js';

type Kind =
  | { readonly type: 'int'; readonly min: number; readonly max: number }
  | { readonly type: 'choice'; readonly choices: readonly string[] }
  | { readonly type: 'text' }
  /** A comma-separated list on the command line; a string or a list of strings in YAML. */
  | { readonly type: 'list' }
  | { readonly type: 'switch' };

interface Setting {
  readonly kind: Kind;
  /** Placeholder in `--help`, e.g. `<ms>`; switches have none. */
  readonly arg?: string;
  readonly help: string;
  readonly default?: number | string | boolean;
  /** Flag-only (not a YAML key), e.g. the path of the YAML file itself. */
  readonly notInFile?: boolean;
}

const int = (min: number, max: number) => ({ type: 'int', min, max }) as const;
const choice = <const C extends readonly string[]>(...choices: C) => ({ type: 'choice', choices }) as const;
const text = { type: 'text' } as const;

export const SERVE_SETTINGS = {
  config: {
    kind: text,
    arg: '<file>',
    help: 'YAML with the same settings in snake_case (flags and CPN_* variables win)',
    notInFile: true,
  },
  port: { kind: int(0, 65535), arg: '<port>', help: 'gRPC port (0 picks a free one)', default: 50051 },
  host: {
    kind: text,
    arg: '<host>',
    help: 'address to bind; 0.0.0.0 to accept remote clients',
    default: '127.0.0.1',
  },
  store: {
    kind: choice('memory', 'etcd'),
    arg: '<kind>',
    help: 'registry store: memory (embedded, not shared) or etcd (shared by replicas)',
    default: 'memory',
  },
  etcdEndpoints: {
    kind: { type: 'list' },
    arg: '<urls>',
    help: 'comma-separated etcd client URLs, e.g. http://127.0.0.1:2379',
  },
  etcdPrefix: { kind: text, arg: '<prefix>', help: 'key prefix in etcd', default: '/cpn/v1/' },
  etcdCa: { kind: text, arg: '<file>', help: 'CA certificate for etcd over TLS' },
  etcdCert: { kind: text, arg: '<file>', help: 'client certificate for etcd (with --etcd-key)' },
  etcdKey: { kind: text, arg: '<file>', help: 'client key for etcd (with --etcd-cert)' },
  etcdTimeoutMs: {
    kind: int(100, 60_000),
    arg: '<ms>',
    help: 'deadline of every etcd call; writes fail with UNAVAILABLE after it',
    default: 2000,
  },
  statusFlushMs: {
    kind: int(0, 600_000),
    arg: '<ms>',
    help: 'a node status reaches etcd at most this often (and only on change)',
    default: 2000,
  },
  topology: {
    kind: text,
    arg: '<file>',
    help: 'register the nodes of this topology YAML at start (as permanent nodes)',
  },
  demo: {
    kind: { type: 'switch' },
    help: 'shorthand for --topology simulations/topologies/demo-national.yaml, with demo keys and the gateway on port 8080 (unless --gateway-port says otherwise)',
  },
  gatewayPort: {
    kind: int(0, 65535),
    arg: '<port>',
    help: 'also serve the OpenAI-compatible gateway (/v1/chat/completions, /v1/completions, /v1/models) on this port, same host as --host (0 picks a free one); off unless set (or --demo)',
  },
  gatewayRegion: {
    kind: text,
    arg: '<code>',
    help: "the gateway routes requests without an x-cpn-region header as coming from this region (a gateway at an edge site: that site's region)",
  },
  gatewayBudgetMs: {
    kind: int(1, 3_600_000),
    arg: '<ms>',
    help: 'latency budget of gateway requests without an x-cpn-latency-budget-ms header',
    default: 2000,
  },
  reservationTtlS: {
    kind: int(1, 3600),
    arg: '<s>',
    help: 'how long a placement holds its slot without Release',
    default: 30,
  },
  maxExplainNodes: {
    kind: int(1, 1_000_000),
    arg: '<n>',
    help: 'an explained Route evaluates at most this many nodes; the answer says how many it left out',
    default: 5000,
  },
  maxNodes: {
    kind: int(1, 10_000_000),
    arg: '<n>',
    help: 'RegisterNode refuses new nodes once the registry holds this many (re-registrations still go through)',
    default: DEFAULT_MAX_NODES,
  },
  logLevel: {
    kind: choice('debug', 'info', 'warn', 'error', 'silent'),
    arg: '<level>',
    help: 'log level',
    default: 'info',
  },
  logFormat: {
    kind: choice('json', 'pretty'),
    arg: '<format>',
    help: 'json lines (default) or pretty, for a person at a terminal',
    default: 'json',
  },
  metricsPort: {
    kind: int(0, 65535),
    arg: '<port>',
    help: 'HTTP port for /metrics, /healthz and /readyz (0: any free port)',
    default: 9464,
  },
  auth: {
    kind: choice('api-key', 'none'),
    arg: '<mode>',
    help: 'api-key: every call needs "authorization: Bearer <key>" or a client certificate; none: everyone is an operator (loopback only, for experiments)',
    default: 'api-key',
  },
  bootstrapOperatorKeyFile: {
    kind: text,
    arg: '<file>',
    help: 'install the secret in this file as the operator key "bootstrap" (or set CPN_BOOTSTRAP_OPERATOR_KEY to the secret itself); at least 32 printable characters',
  },
  tlsCert: {
    kind: text,
    arg: '<file>',
    help: 'serve gRPC over TLS with this certificate (PEM, with --tls-key)',
  },
  tlsKey: { kind: text, arg: '<file>', help: 'private key of --tls-cert (PEM)' },
  tlsClientCa: {
    kind: text,
    arg: '<file>',
    help: 'require client certificates signed by this CA (mTLS); the subject CN names the role: operator, planner, agent:<node>, client:<tenant>',
  },
  metricsMaxRegions: {
    kind: int(1, 10_000),
    arg: '<n>',
    help: 'regions named in /metrics labels at most (those with the most nodes); the rest are summed as region="other"',
    default: DEFAULT_MAX_REGION_LABELS,
  },
  maxLatencySamples: {
    kind: int(10_000, 100_000_000),
    arg: '<n>',
    help: 'measured latency samples kept over all access points and nodes; past it the least recently updated are dropped',
    default: DEFAULT_MAX_LATENCY_SAMPLES,
  },
  handshakeTimeoutMs: {
    kind: int(100, 600_000),
    arg: '<ms>',
    help: 'a connection that has not completed the HTTP/2 preface this long after it opened is closed',
    default: DEFAULT_CONNECTION_LIMITS.handshakeTimeoutMs,
  },
  idleTimeoutMs: {
    kind: int(1000, 86_400_000),
    arg: '<ms>',
    help: 'a connection with no call in flight this long is closed (clients reconnect when they next call)',
    default: DEFAULT_CONNECTION_LIMITS.idleTimeoutMs,
  },
  maxConnections: {
    kind: int(1, 1_000_000),
    arg: '<n>',
    help: 'open gRPC connections at most; more are closed on accept (run more replicas for more agents)',
    default: DEFAULT_CONNECTION_LIMITS.maxConnections,
  },
  maxStreamsPerConnection: {
    kind: int(1, 100_000),
    arg: '<n>',
    help: 'concurrent calls per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)',
    default: DEFAULT_CONNECTION_LIMITS.maxStreamsPerConnection,
  },
  drainDelayMs: {
    kind: int(0, 600_000),
    arg: '<ms>',
    help: 'on SIGTERM/SIGINT, /readyz answers 503 this long before the gRPC port stops accepting (time for load balancers to notice)',
    default: 0,
  },
  graceMs: {
    kind: int(0, 600_000),
    arg: '<ms>',
    help: 'on SIGTERM/SIGINT, how long in-flight calls may finish',
    default: 10_000,
  },
} as const satisfies Record<string, Setting>;

export type SettingKey = keyof typeof SERVE_SETTINGS;

type ValueOf<S> = S extends { kind: { type: 'int' } }
  ? number
  : S extends { kind: { type: 'switch' } }
    ? boolean
    : S extends { kind: { type: 'choice'; choices: readonly (infer C)[] } }
      ? C
      : string;

/** The settings as `serve` reads them, defaults applied. */
export type ServeSettings = {
  readonly [K in SettingKey]: (typeof SERVE_SETTINGS)[K] extends { default: unknown }
    ? ValueOf<(typeof SERVE_SETTINGS)[K]>
    : ValueOf<(typeof SERVE_SETTINGS)[K]> | undefined;
};

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const snake = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
export const flagOf = (key: SettingKey) => `--${kebab(key)}`;
export const envOf = (key: SettingKey) => `CPN_${snake(key).toUpperCase()}`;
export const fileKeyOf = (key: SettingKey) => snake(key);

const entries = Object.entries(SERVE_SETTINGS) as [SettingKey, Setting][];

function fileSchema(kind: Kind): z.ZodType {
  switch (kind.type) {
    case 'int':
      return z.number().int().min(kind.min).max(kind.max);
    case 'choice':
      return z.enum(kind.choices as [string, ...string[]]);
    case 'text':
      return z.string().min(1);
    case 'list':
      return z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);
    case 'switch':
      return z.boolean();
  }
}

/** The `--config` file: keys are the settings in snake_case, each with the flag's range. */
export const serveConfigSchema = z.strictObject(
  Object.fromEntries(
    entries
      .filter(([, setting]) => !setting.notInFile)
      .map(([key, setting]) => [fileKeyOf(key), fileSchema(setting.kind).optional()]),
  ),
);

/** The commander options of `cpn serve`, one per setting. */
export function serveOptions(): Option[] {
  return entries.map(([key, setting]) => {
    const flag = setting.arg === undefined ? flagOf(key) : `${flagOf(key)} ${setting.arg}`;
    const option = new Option(flag, setting.help).env(envOf(key));
    if (setting.default !== undefined) option.default(setting.default);
    const kind = setting.kind;
    if (kind.type === 'int') option.argParser(integer(kind.min, kind.max));
    if (kind.type === 'choice') option.choices(kind.choices);
    return option;
  });
}

/**
 * Fills every setting still at its default (not given as a flag or variable) from the `--config`
 * file, then returns all of them.
 */
export async function resolveServeSettings(command: Command): Promise<ServeSettings> {
  const file = command.getOptionValue('config') as string | undefined;
  if (file !== undefined) {
    const config = (await YamlSource.load(file)).validate(serveConfigSchema) as Record<string, unknown>;
    for (const [key] of entries) {
      const value = config[fileKeyOf(key)];
      if (value === undefined) continue;
      const source = command.getOptionValueSource(key);
      if (source === 'cli' || source === 'env') continue;
      command.setOptionValueWithSource(key, Array.isArray(value) ? value.join(',') : value, 'config');
    }
  }
  return command.opts() as ServeSettings;
}

/** Where each setting came from (flag, env, config, default), for the start-up log. */
export function settingSources(command: Command): Record<string, { value: unknown; from: string }> {
  return Object.fromEntries(
    entries.map(([key]) => [
      key,
      { value: command.getOptionValue(key), from: command.getOptionValueSource(key) ?? 'unset' },
    ]),
  );
}
