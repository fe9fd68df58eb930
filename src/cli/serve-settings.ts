// The one source of every `cpn serve` setting (the machinery is in settings.ts): its flag, its CPN_* variable, its YAML key, its
// range or choices, its default and its help. The commander options, the `--config` file schema,
// the Helm chart test and the README all derive from this table, so a setting is one entry.
//
// Naming: the key `etcdTimeoutMs` is the flag `--etcd-timeout-ms`, the variable
// `CPN_ETCD_TIMEOUT_MS` and the YAML key `etcd_timeout_ms`. Precedence: flag, variable, file,
// default.

import type { Command } from 'commander';
import { DEFAULT_MAX_REGION_LABELS } from '../ops/metrics.js';
import { DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_TENANT } from '../plane/sessions.js';
import { DEFAULT_CONNECTION_LIMITS } from '../server/connections.js';
import { DEFAULT_MAX_NODES } from '../server/services.js';
import { DEFAULT_ETCD_STARTUP_WAIT_MS } from '../store/etcd/etcd-store.js';
import { DEFAULT_MAX_LATENCY_SAMPLES } from '../store/registry-index.js';
import { choice, int, list, type Setting, SettingsTable, type SettingValues, text } from './settings.js';

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
    kind: list,
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
  etcdStartupWaitMs: {
    kind: int(0, 600_000),
    arg: '<ms>',
    help: 'at start-up, how long to wait for etcd to answer (trying again, pauses growing to 4 s) before giving up; 0: one try',
    default: DEFAULT_ETCD_STARTUP_WAIT_MS,
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
  maxSessions: {
    kind: int(0, 10_000_000),
    arg: '<n>',
    help: 'mobility sessions held at once, cluster-wide as this replica sees them; OpenSession beyond it is refused',
    default: DEFAULT_MAX_SESSIONS,
  },
  maxSessionsPerTenant: {
    kind: int(1, 10_000_000),
    arg: '<n>',
    help: 'mobility sessions one tenant may hold at once',
    default: DEFAULT_MAX_SESSIONS_PER_TENANT,
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

/** The settings as `serve` reads them, defaults applied. */
export type ServeSettings = SettingValues<typeof SERVE_SETTINGS>;

const serve = new SettingsTable(SERVE_SETTINGS, 'CPN_');

export const flagOf = (key: SettingKey) => serve.flagOf(key);
export const envOf = (key: SettingKey) => serve.envOf(key);
export const fileKeyOf = (key: SettingKey) => serve.fileKeyOf(key);
/** The `--config` file: keys are the settings in snake_case, each with the flag's range. */
export const serveConfigSchema = serve.schema;
/** The commander options of `cpn serve`, one per setting. */
export const serveOptions = () => serve.options();
export const resolveServeSettings = (command: Command): Promise<ServeSettings> => serve.resolve(command);
export const settingSources = (command: Command) => serve.sources(command);
