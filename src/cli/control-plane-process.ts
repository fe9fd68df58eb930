// The composition root of `cpn serve`: opens the store, starts the gRPC server, announces where it
// listens, and stops gracefully on SIGTERM / SIGINT. Commander-free: it takes resolved settings.

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { DEFAULT_LATENCY_MODEL } from '../core/latency.js';
import type { LatLon } from '../core/model.js';
import { createLogger, type LogFormat, type Logger, type LogLevel } from '../ops/log.js';
import { loadTopology } from '../ops/topology.js';
import { startServer } from '../server/server.js';
import { EtcdStore } from '../store/etcd/etcd-store.js';
import { MemoryStore } from '../store/memory/memory-store.js';
import type { Store } from '../store/store.js';
import { CliError } from './rpc.js';
import type { ServeSettings } from './serve-settings.js';

export const DEMO_TOPOLOGY = fileURLToPath(
  new URL('../../simulations/topologies/demo-national.yaml', import.meta.url),
);

/** The store `serve` runs on: the embedded memory store, or etcd (validated flags, TLS files read). */
export async function openStore(
  flags: ServeSettings,
  regionCentroids: ReadonlyMap<string, LatLon> | undefined,
  logger: Logger,
): Promise<Store> {
  if (flags.store === 'memory') {
    return new MemoryStore({ clock: Date.now, latency: DEFAULT_LATENCY_MODEL, regionCentroids });
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
  const read = async (flag: string, file: string | undefined) => {
    if (file === undefined) return undefined;
    try {
      return await readFile(file);
    } catch (error) {
      throw new CliError(`${flag} ${file}: ${(error as Error).message}`, 2);
    }
  };
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
      statusFlushMs: flags.statusFlushMs,
      latency: DEFAULT_LATENCY_MODEL,
      regionCentroids,
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
  const topologyFile = settings.topology ?? (settings.demo ? DEMO_TOPOLOGY : undefined);
  const topology = topologyFile === undefined ? undefined : await loadTopology(topologyFile);
  const store = await openStore(settings, topology?.regionCentroids, logger);
  const server = await startServer({
    store,
    logger,
    host: settings.host,
    port: settings.port,
    reservationTtlMs: settings.reservationTtlS * 1000,
    maxExplainNodes: settings.maxExplainNodes,
    permanentNodes: topology?.nodes ?? [],
    metricsPort: settings.metricsPort,
  });
  // Handle signals before announcing the address: whoever reads it may signal at once.
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      logger.info('shutting down', { signal, graceMs: settings.graceMs });
      server
        .shutdown(settings.graceMs)
        .then(() => store.close())
        .then(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
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
      `cpn control plane listening on ${server.address} (${settings.store} store, ${topology?.nodes.length ?? 0} nodes${topologyFile ? ` from ${topologyFile.replace(/^.*\/simulations/, 'simulations')}` : ''})`,
      'Try, in another terminal:',
      `  npx cpn route --model qwen3-32b --region CN-GD --budget-ms 2000${serverFlag}     # loose budget: cheapest hub`,
      `  npx cpn route --model qwen3-32b --region CN-GD --budget-ms 30${serverFlag}       # tight budget: nearby node`,
      `  npx cpn route --model qwen3-32b --region CN-GD --budget-ms 30 --explain${serverFlag}`,
      `  npx cpn nodes --region CN-GD${serverFlag}`,
      `Metrics and probes: http://${server.address.replace(/:\d+$/, '')}:${server.metricsPort}/metrics, /healthz, /readyz`,
      'Stop with Ctrl-C.',
      '',
    ].join('\n'),
  );
  await stopped;
  logger.info('stopped', {});
}
