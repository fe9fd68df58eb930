// The composition root of `cpn serve`: opens the store, starts the gRPC server, announces where it
// listens, and stops gracefully on SIGTERM / SIGINT. Commander-free: it takes resolved settings.

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { BOOTSTRAP_KEY_ID, claimedKeyId, MIN_BOOTSTRAP_KEY_CHARS } from '../auth/api-keys.js';
import { Authenticator } from '../auth/authenticator.js';
import { DEFAULT_LATENCY_MODEL } from '../core/latency.js';
import type { LatLon } from '../core/model.js';
import { inProcessBackend } from '../gateway/backend.js';
import { type RunningGateway, startGateway } from '../gateway/gateway.js';
import { GatewayMetrics } from '../gateway/gateway-metrics.js';
import { createLogger, type LogFormat, type Logger, type LogLevel } from '../ops/log.js';
import { loadTopology } from '../ops/topology.js';
import type { ControlPlane } from '../plane/control-plane.js';
import { isLoopback, startServer } from '../server/server.js';
import { EtcdStore } from '../store/etcd/etcd-store.js';
import { MemoryStore } from '../store/memory/memory-store.js';
import type { Store } from '../store/store.js';
import { CliError } from './rpc.js';
import type { ServeSettings } from './serve-settings.js';

export const DEMO_GATEWAY_PORT = 8080;
const DEMO_GATEWAY_REGION = 'CN-GD';
const DEMO_TOPOLOGY = fileURLToPath(
  new URL('../../simulations/topologies/demo-national.yaml', import.meta.url),
);

/** Reads a file a flag names; a failure names the flag. */
async function read(flag: string, file: string): Promise<Buffer>;
async function read(flag: string, file: string | undefined): Promise<Buffer | undefined>;
async function read(flag: string, file: string | undefined): Promise<Buffer | undefined> {
  if (file === undefined) return undefined;
  try {
    return await readFile(file);
  } catch (error) {
    throw new CliError(`${flag} ${file}: ${(error as Error).message}`, 2);
  }
}

/** The TLS material of --tls-cert / --tls-key / --tls-client-ca, or undefined for plaintext. */
async function serverTls(settings: ServeSettings) {
  if ((settings.tlsCert === undefined) !== (settings.tlsKey === undefined))
    throw new CliError('--tls-cert and --tls-key go together', 2);
  if (settings.tlsCert === undefined || settings.tlsKey === undefined) {
    if (settings.tlsClientCa !== undefined)
      throw new CliError('--tls-client-ca needs --tls-cert and --tls-key (client certificates need TLS)', 2);
    return undefined;
  }
  return {
    cert: await read('--tls-cert', settings.tlsCert),
    key: await read('--tls-key', settings.tlsKey),
    clientCa: await read('--tls-client-ca', settings.tlsClientCa),
  };
}

/** The bootstrap operator secret: CPN_BOOTSTRAP_OPERATOR_KEY, or the file --bootstrap-operator-key-file names. */
async function bootstrapKey(settings: ServeSettings): Promise<string | undefined> {
  const fromEnv = process.env.CPN_BOOTSTRAP_OPERATOR_KEY || undefined;
  if (fromEnv !== undefined && settings.bootstrapOperatorKeyFile !== undefined)
    throw new CliError('give CPN_BOOTSTRAP_OPERATOR_KEY or --bootstrap-operator-key-file, not both', 2);
  const secret =
    fromEnv ??
    (settings.bootstrapOperatorKeyFile === undefined
      ? undefined
      : (await read('--bootstrap-operator-key-file', settings.bootstrapOperatorKeyFile))
          .toString('utf8')
          .trim());
  if (secret === undefined) return undefined;
  if (claimedKeyId(secret) !== BOOTSTRAP_KEY_ID) {
    throw new CliError(
      `the bootstrap operator key must be at least ${MIN_BOOTSTRAP_KEY_CHARS} printable characters without spaces, not of the cpn_<id>_<secret> form (try: openssl rand -base64 32)`,
      2,
    );
  }
  return secret;
}

/** The store `serve` runs on: the embedded memory store, or etcd (validated flags, TLS files read). */
export async function openStore(
  flags: ServeSettings,
  regionCentroids: ReadonlyMap<string, LatLon> | undefined,
  logger: Logger,
): Promise<Store> {
  if (flags.store === 'memory') {
    return new MemoryStore({
      clock: Date.now,
      latency: DEFAULT_LATENCY_MODEL,
      regionCentroids,
      maxLatencySamples: flags.maxLatencySamples,
    });
  }
  const endpoints = (flags.etcdEndpoints ?? '')
    .split(',')
    .map((endpoint) => endpoint.trim())
    .filter(Boolean);
  if (endpoints.length === 0) {
    throw new CliError(
      '--store etcd needs --etcd-endpoints (or CPN_ETCD_ENDPOINTS), e.g. http://127.0.0.1:2379',
      2,
    );
  }
  for (const endpoint of endpoints) {
    if (!/^https?:\/\/[^/\s]+$/.test(endpoint)) {
      throw new CliError(
        `--etcd-endpoints: "${endpoint}" must look like http://host:port or https://host:port`,
        2,
      );
    }
  }
  if ((flags.etcdCert === undefined) !== (flags.etcdKey === undefined)) {
    throw new CliError('--etcd-cert and --etcd-key go together', 2);
  }
  const ca = await read('--etcd-ca', flags.etcdCa);
  const tls =
    ca === undefined && flags.etcdCert === undefined
      ? undefined
      : {
          ca,
          cert: await read('--etcd-cert', flags.etcdCert),
          key: await read('--etcd-key', flags.etcdKey),
        };
  try {
    return await EtcdStore.open({
      endpoints,
      prefix: flags.etcdPrefix,
      tls,
      callTimeoutMs: flags.etcdTimeoutMs,
      startupWaitMs: flags.etcdStartupWaitMs,
      statusFlushMs: flags.statusFlushMs,
      latency: DEFAULT_LATENCY_MODEL,
      regionCentroids,
      maxLatencySamples: flags.maxLatencySamples,
      logger,
    });
  } catch (error) {
    throw new CliError(`cannot start on etcd: ${(error as Error).message}`);
  }
}

/**
 * Runs the control plane until SIGTERM / SIGINT. `sources` says where each setting came from, for
 * the start-up log.
 */
export async function runControlPlane(
  settings: ServeSettings,
  sources: Record<string, unknown>,
): Promise<void> {
  const logger = createLogger(settings.logLevel as LogLevel, 2, settings.logFormat as LogFormat);
  // A promise nobody awaited that failed is a bug: say so loudly, but keep serving everyone else.
  process.on('unhandledRejection', (reason) =>
    logger.error('unhandled rejection (a bug; the server goes on)', {
      err: String((reason as Error)?.stack ?? reason),
    }),
  );
  const topologyFile = settings.topology ?? (settings.demo ? DEMO_TOPOLOGY : undefined);
  const topology = topologyFile === undefined ? undefined : await loadTopology(topologyFile);
  const tls = await serverTls(settings);
  const bootstrapOperatorKey = await bootstrapKey(settings);
  if (settings.auth === 'none' && !isLoopback(settings.host)) {
    throw new CliError(
      `--auth none is allowed only on a loopback address (the server would make anyone who reaches ${settings.host} an operator); bind --host 127.0.0.1 or use API keys`,
      2,
    );
  }
  const store = await openStore(settings, topology?.regionCentroids, logger);
  const server = await startServer({
    store,
    logger,
    auth: settings.auth,
    tls,
    bootstrapOperatorKey,
    host: settings.host,
    port: settings.port,
    reservationTtlMs: settings.reservationTtlS * 1000,
    maxExplainNodes: settings.maxExplainNodes,
    maxNodes: settings.maxNodes,
    maxSessions: settings.maxSessions,
    maxSessionsPerTenant: settings.maxSessionsPerTenant,
    connections: {
      handshakeTimeoutMs: settings.handshakeTimeoutMs,
      idleTimeoutMs: settings.idleTimeoutMs,
      maxConnections: settings.maxConnections,
      maxStreamsPerConnection: settings.maxStreamsPerConnection,
    },
    permanentNodes: topology?.nodes ?? [],
    metricsPort: settings.metricsPort,
    metricsMaxRegions: settings.metricsMaxRegions,
  });
  const gatewayPort = settings.gatewayPort ?? (settings.demo ? DEMO_GATEWAY_PORT : undefined);
  let gateway: RunningGateway | undefined;
  if (gatewayPort !== undefined) {
    try {
      gateway = await startGateway({
        backend: inProcessBackend(
          server.plane,
          new Authenticator({ mode: settings.auth, accounts: store.accounts, clock: Date.now }),
          logger,
        ),
        logger,
        host: settings.host,
        port: gatewayPort,
        defaultRegion: settings.gatewayRegion ?? (settings.demo ? DEMO_GATEWAY_REGION : undefined),
        defaultBudgetMs: settings.gatewayBudgetMs,
        metrics: new GatewayMetrics(server.metrics.registry),
      });
    } catch (error) {
      await server.shutdown(0);
      await store.close();
      throw new CliError(
        `cannot start the gateway on port ${gatewayPort}: ${(error as Error).message} (--gateway-port)`,
      );
    }
  }
  // Handle signals before announcing the address: whoever reads it may signal at once.
  // The first signal drains; a second is noted (an orchestrator often sends two); a third exits.
  const stopped = new Promise<void>((resolve) => {
    let signals = 0;
    const stop = (signal: string) => {
      signals += 1;
      if (signals === 1) {
        logger.info('shutting down', {
          signal,
          drainDelayMs: settings.drainDelayMs,
          graceMs: settings.graceMs,
        });
        Promise.all([
          gateway?.close(settings.drainDelayMs + settings.graceMs),
          server.shutdown(settings.graceMs, settings.drainDelayMs),
        ])
          .then(() => store.close())
          .then(resolve);
      } else if (signals === 2) {
        logger.warn('already shutting down; send the signal once more to exit at once', { signal });
      } else {
        logger.warn('exiting at once, in-flight calls are cut off', { signal });
        process.exit(130);
      }
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
  if (settings.auth === 'none')
    logger.warn(
      'authentication is off (--auth none): every caller is an operator; use only for experiments',
      {},
    );
  const demoKeys =
    settings.demo && settings.auth === 'api-key' ? await createDemoKeys(server.plane) : undefined;
  logger.info('control plane serving', {
    address: server.address,
    metricsPort: server.metricsPort,
    config: sources,
    store: settings.store,
    topology: topologyFile,
    nodes: topology?.nodes.length ?? 0,
    reservationTtlS: settings.reservationTtlS,
  });
  const serverFlag = server.port === 50051 ? '' : ` --server localhost:${server.port}`;
  process.stdout.write(
    [
      `cpn control plane listening on ${server.address}${tls ? ' (TLS)' : ''} (${settings.store} store, ${topology?.nodes.length ?? 0} nodes${topologyFile ? ` from ${topologyFile.replace(/^.*\/simulations/, 'simulations')}` : ''})`,
      ...authLines(settings, demoKeys, bootstrapOperatorKey !== undefined),
      'Try, in another terminal:',
      `  npx cpn route --model qwen3-8b --region CN-GD --budget-ms 2000${serverFlag}     # loose budget: cheapest hub`,
      `  npx cpn route --model qwen3-8b --region CN-GD --budget-ms 30${serverFlag}       # tight budget: nearby node`,
      `  npx cpn route --model qwen3-8b --region CN-GD --budget-ms 30 --explain${serverFlag}`,
      `  npx cpn nodes --region CN-GD${serverFlag}`,
      `Metrics and probes: http://${server.address.replace(/:\d+$/, '')}:${server.metricsPort}/metrics, /healthz, /readyz`,
      ...gatewayLines(gateway, settings, demoKeys),
      'Stop with Ctrl-C.',
      '',
    ].join('\n'),
  );
  await stopped;
  logger.info('stopped', {});
}

interface DemoKeys {
  readonly operator: string;
  readonly client: string;
}

/** `--demo`: an operator key, and a tenant `demo` with a client key, for the README's tour. */
async function createDemoKeys(plane: ControlPlane): Promise<DemoKeys> {
  await plane.accounts.createTenant('demo', 'Demo tenant');
  // A package, so that the tour meters: generous, refused once spent.
  await plane.accounts.setPackage('demo', {
    name: 'demo',
    quotaPoints: 10_000_000,
    period: { kind: 'calendar-month', timeZone: 'Asia/Shanghai' },
    weights: { '*': { inputPer1k: 1, outputPer1k: 4, cachedInputPer1k: 0 } },
    allowedLevels: [],
    overQuota: 'REJECT',
    throttleRequestsPerS: 0,
    throttleBudgetMs: 0,
  });
  const operator = await plane.accounts.createApiKey({ role: 'operator', name: 'demo operator' });
  const client = await plane.accounts.createApiKey({ role: 'client', name: 'demo client', tenant: 'demo' });
  if (operator.kind !== 'created' || client.kind !== 'created')
    throw new Error('could not create the demo keys');
  return { operator: operator.secret, client: client.secret };
}

function gatewayLines(
  gateway: RunningGateway | undefined,
  settings: ServeSettings,
  demo: DemoKeys | undefined,
): string[] {
  if (gateway === undefined) return [];
  const region = settings.gatewayRegion ?? (settings.demo ? DEMO_GATEWAY_REGION : undefined);
  return [
    `OpenAI-compatible gateway listening on http://${gateway.address}/v1${region ? ` (routes as ${region} unless a request sends x-cpn-region)` : ''}`,
    ...(demo === undefined
      ? []
      : [
          '  with the OpenAI SDK, as tenant "demo":',
          `  export OPENAI_BASE_URL=http://${gateway.address}/v1 OPENAI_API_KEY=${demo.client}`,
        ]),
  ];
}

function authLines(settings: ServeSettings, demo: DemoKeys | undefined, bootstrap: boolean): string[] {
  if (settings.auth === 'none')
    return ['WARNING: authentication is off (--auth none): every caller is an operator.'];
  if (demo !== undefined) {
    return [
      'Demo credentials (shown once; the secrets are stored only as hashes):',
      `  export CPN_API_KEY=${demo.operator}     # operator: every command`,
      `  client key of tenant "demo": ${demo.client}     # Route, Release, its own usage`,
      '  tenant "demo" has package "demo": 10,000,000 points a month (npx cpn packages show demo)',
    ];
  }
  if (bootstrap) return ['Authentication: API keys; the bootstrap operator key is installed.'];
  return [
    'Authentication: API keys. No operator key is installed yet: set CPN_BOOTSTRAP_OPERATOR_KEY (or --bootstrap-operator-key-file) and restart, or use --demo.',
  ];
}
