// Starts the gRPC control plane: Registry, Scheduler, the standard health service and server
// reflection, with explicit message-size limits, a housekeeping timer and graceful shutdown.

import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Server, ServerCredentials, status } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import { Authenticator, type AuthMode } from '../auth/authenticator.js';
import type { PriceMultiplier } from '../core/cost.js';
import type { LatencyModel } from '../core/latency.js';
import type { NodeSpec } from '../core/model.js';
import { AccountsService } from '../gen/cpn/v1/accounts.js';
import { RegistryService } from '../gen/cpn/v1/registry.js';
import { SchedulerService } from '../gen/cpn/v1/scheduler.js';
import { startOpsHttp, watchEventLoop } from '../ops/http.js';
import { type ClusterJobs, startClusterJobs } from '../ops/jobs/jobs.js';
import type { Logger } from '../ops/log.js';
import { ControlPlaneMetrics } from '../ops/metrics.js';
import { ControlPlane } from '../plane/control-plane.js';
import type { Clock, Store } from '../store/store.js';
import { CallGate } from './access.js';
import { accountsService } from './accounts-service.js';
import {
  type ConnectionLimits,
  connectionChannelOptions,
  DEFAULT_CONNECTION_LIMITS,
  guardConnections,
} from './connections.js';
import { type RpcContext, tolerantDecoding } from './rpc.js';
import { type HeartbeatLimits, registryService, schedulerService } from './services.js';

export const SERVICE_NAMES = ['cpn.v1.Registry', 'cpn.v1.Scheduler', 'cpn.v1.Accounts'] as const;
/** Large enough for a node spec with hundreds of models, small enough to refuse abuse. */
export const MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024;
/** ListNodes of a national registry (10⁵ nodes) must fit. */
export const MAX_SEND_MESSAGE_BYTES = 256 * 1024 * 1024;

export interface ServerOptions {
  readonly store: Store;
  readonly logger: Logger;
  /** Host to bind; 127.0.0.1 by default so that nothing is exposed by accident. */
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly clock?: Clock;
  /** Never steps back; reservation expiry runs on it (performance.now() unless given). */
  readonly monotonicClock?: Clock;
  readonly reservationTtlMs?: number;
  readonly explainLimit?: number;
  /** Explain evaluates at most this many nodes (the answer says how many it left out). */
  readonly maxExplainNodes?: number;
  /** RegisterNode refuses new nodes once the registry holds this many (default 200,000). */
  readonly maxNodes?: number;
  /** Limits on Heartbeat streams (DEFAULT_HEARTBEAT_LIMITS). */
  readonly heartbeat?: Partial<HeartbeatLimits>;
  /** Mobility sessions held at once (DEFAULT_MAX_SESSIONS), and by one tenant. */
  readonly maxSessions?: number;
  readonly maxSessionsPerTenant?: number;
  /** Handshake and idle timeouts, connection and stream ceilings, keepalive (connections.ts). */
  readonly connections?: Partial<ConnectionLimits>;
  /** Nodes registered as permanent (operator-managed, never expiring) before serving starts. */
  readonly permanentNodes?: readonly NodeSpec[];
  /** Explained routes run one at a time; at most this many wait (default 16), the rest are refused. */
  readonly explainQueue?: number;
  readonly latency?: Partial<LatencyModel>;
  readonly priceMultiplier?: PriceMultiplier;
  /** How long a DOWN node stays listed before the sweeper removes it. */
  readonly downGraceMs?: number;
  readonly sweepIntervalMs?: number;
  /** Leader-only cron jobs (sweep, price changes); on unless false. */
  readonly clusterJobs?: boolean;
  /** Serve /metrics, /healthz, /readyz on this port (0: any free port); off when undefined. */
  readonly metricsPort?: number;
  readonly metricsHost?: string;
  /** Regions labelled by name in /metrics at most; the rest are "other" (default 64). */
  readonly metricsMaxRegions?: number;
  /** /readyz stays ready while the store is unreachable for at most this long. */
  readonly maxStalenessS?: number;
  /**
   * 'api-key' (default): every RPC but health and reflection needs a credential. 'none': every
   * caller is an operator — refused unless `host` is a loopback address.
   */
  readonly auth?: AuthMode;
  /** Serve TLS; with `clientCa`, require client certificates signed by it (mTLS identities). */
  readonly tls?: { readonly cert: Buffer; readonly key: Buffer; readonly clientCa?: Buffer };
  /** Installed as the operator key `bootstrap` before serving (CPN_BOOTSTRAP_OPERATOR_KEY). */
  readonly bootstrapOperatorKey?: string;
}

/** Addresses `--auth none` may bind: nothing beyond this machine can reach them. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export interface RunningServer {
  readonly port: number;
  readonly address: string;
  readonly plane: ControlPlane;
  /** Leader-only jobs, unless disabled. */
  readonly jobs: ClusterJobs | undefined;
  readonly metrics: ControlPlaneMetrics;
  /** Port of /metrics, /healthz and /readyz, if served. */
  readonly metricsPort: number | undefined;
  /**
   * Graceful stop: health goes NOT_SERVING and /readyz 503 at once; after `drainDelayMs` (default
   * 0) new calls are refused and in-flight calls finish; after `graceMs` more the rest are
   * cancelled.
   */
  shutdown(graceMs?: number, drainDelayMs?: number): Promise<void>;
}

function credentialsFor(tls: ServerOptions['tls']): ServerCredentials {
  if (tls === undefined) return ServerCredentials.createInsecure();
  return ServerCredentials.createSsl(
    tls.clientCa ?? null,
    [{ private_key: tls.key, cert_chain: tls.cert }],
    tls.clientCa !== undefined,
  );
}

const protoDir = fileURLToPath(new URL('../../proto', import.meta.url));

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const clock = options.clock ?? Date.now;
  const host = options.host ?? '127.0.0.1';
  const authMode = options.auth ?? 'api-key';
  if (authMode === 'none' && !isLoopback(host)) {
    throw new Error(
      `--auth none would let anyone who reaches ${host} act as an operator; it is allowed only on a loopback address (127.0.0.1, ::1)`,
    );
  }
  const plane = new ControlPlane({
    store: options.store,
    clock,
    monotonicClock: options.monotonicClock,
    reservationTtlMs: options.reservationTtlMs ?? 30_000,
    replicaId: randomBytes(4).toString('hex'),
    latency: options.latency,
    priceMultiplier: options.priceMultiplier,
    maxExplainNodes: options.maxExplainNodes,
    maxSessions: options.maxSessions,
    maxSessionsPerTenant: options.maxSessionsPerTenant,
    sessionObserver: { handover: (reason) => metrics.recordHandover(reason) },
  });
  if (options.bootstrapOperatorKey !== undefined)
    await plane.accounts.installBootstrapKey(options.bootstrapOperatorKey);
  // Operator-managed nodes (a topology file's) go in through the plane before the port opens.
  for (const spec of options.permanentNodes ?? [])
    await plane.registerNode(spec, { ttlS: 0, permanent: true });
  const connectionLimits: ConnectionLimits = { ...DEFAULT_CONNECTION_LIMITS, ...options.connections };
  const server = new Server({
    'grpc.max_receive_message_length': MAX_RECEIVE_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_SEND_MESSAGE_BYTES,
    ...connectionChannelOptions(connectionLimits),
  });
  const leadership = options.clusterJobs === false ? undefined : options.store.leadership('jobs', 10);
  const metrics = new ControlPlaneMetrics({
    store: options.store,
    clock,
    reservedOn: (nodeId) => plane.reservedOn(nodeId),
    isLeader: () => leadership?.isLeader() ?? false,
    maxRegionLabels: options.metricsMaxRegions,
    sessions: () => plane.sessions.count(),
  });
  let startClosing: () => void = () => undefined;
  const closing = new Promise<void>((resolve) => {
    startClosing = resolve;
  });
  const context: RpcContext = {
    closing,
    sink: options.logger,
    observer: {
      rpcDone: (method: string, code: number) => metrics.recordRpc(method, status[code] ?? String(code)),
      storeError: () => metrics.recordStoreError(),
      messageReceived: (method: string) => metrics.recordStreamMessage(method),
    },
    gate: new CallGate(new Authenticator({ mode: authMode, accounts: options.store.accounts, clock }), {
      authFailed: (reason) => metrics.recordAuthFailure(reason),
    }),
  };
  server.addService(
    tolerantDecoding(RegistryService),
    registryService(plane, options.logger, context, options.maxNodes, options.heartbeat),
  );
  server.addService(
    tolerantDecoding(SchedulerService),
    schedulerService(
      plane,
      { explainLimit: options.explainLimit ?? 500, explainQueue: options.explainQueue ?? 16 },
      context,
      (d, budget, s) => metrics.recordDecision(d, budget, s),
      {
        admitted: (outcome, points) => metrics.recordQuotaAdmission(outcome, points),
        settled: (points) => metrics.recordSettledPoints(points),
      },
    ),
  );
  server.addService(tolerantDecoding(AccountsService), accountsService(plane, options.logger, context));

  const health = new HealthImplementation({
    '': 'NOT_SERVING',
    ...Object.fromEntries(SERVICE_NAMES.map((name) => [name, 'NOT_SERVING'])),
  });
  health.addToServer(server);
  const definitions = loadSync(
    ['cpn/v1/registry.proto', 'cpn/v1/scheduler.proto', 'cpn/v1/accounts.proto', healthProtoPath],
    {
      includeDirs: [protoDir],
    },
  );
  new ReflectionService(definitions).addToServer(server);

  // The index's trees for the registry as loaded, before the port takes a route that would wait.
  const warmStarted = performance.now();
  const models = plane.warmIndex();
  options.logger.info('routing index built', {
    models,
    ms: Math.round(performance.now() - warmStarted),
  });

  const target = host.includes(':') ? `[${host}]:${options.port}` : `${host}:${options.port}`;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(target, credentialsFor(options.tls), (error, boundPort) =>
      error ? reject(new Error(`cannot listen on ${target}: ${error.message}`)) : resolve(boundPort),
    ),
  );
  guardConnections(server, connectionLimits, options.logger);
  const setServing = (serving: boolean) => {
    for (const name of ['', ...SERVICE_NAMES]) health.setStatus(name, serving ? 'SERVING' : 'NOT_SERVING');
  };
  setServing(true);

  // Reservations are this replica's own; cluster-wide housekeeping runs on the elected leader.
  const sweeper = setInterval(() => plane.expireReservations(), options.sweepIntervalMs ?? 5_000);
  sweeper.unref();
  const jobs =
    leadership === undefined
      ? undefined
      : startClusterJobs({
          store: options.store,
          leadership,
          logger: options.logger,
          clock,
          downGraceMs: options.downGraceMs,
          sweepSessions: () => plane.sessions.sweep(),
        });
  let serving = true;
  const maxStalenessS = options.maxStalenessS ?? 30;
  const loop = options.metricsPort === undefined ? undefined : watchEventLoop();
  const http =
    options.metricsPort === undefined
      ? undefined
      : await startOpsHttp({
          loopDelayMs: () => loop?.delayMs() ?? 0,
          host: options.metricsHost ?? host,
          port: options.metricsPort,
          registry: metrics.registry,
          readiness: () => {
            if (!serving) return { ready: false, reason: 'shutting down' };
            const health = options.store.health();
            if (health.reachable || health.stalenessMs <= maxStalenessS * 1000) {
              return {
                ready: true,
                reason: health.reachable
                  ? 'serving'
                  : `store unreachable, cache ${(health.stalenessMs / 1000).toFixed(1)} s old`,
              };
            }
            return {
              ready: false,
              reason: `store unreachable and cache ${(health.stalenessMs / 1000).toFixed(1)} s old (limit ${maxStalenessS} s)`,
            };
          },
        });

  let stopping: Promise<void> | undefined;
  return {
    port,
    address: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`,
    plane,
    jobs,
    metrics,
    metricsPort: http?.port,
    shutdown(graceMs = 10_000, drainDelayMs = 0) {
      stopping ??= new Promise<void>((resolve) => {
        // Not ready at once (/readyz 503, health NOT_SERVING), still serving for `drainDelayMs`
        // so that load balancers stop sending before the port closes; then drain.
        serving = false;
        clearInterval(sweeper);
        jobs?.stop().catch(() => undefined);
        setServing(false);
        setTimeout(() => {
          const force = setTimeout(() => server.forceShutdown(), graceMs);
          // Long-lived streams (heartbeats, session watches) end now, so their clients move to
          // another replica instead of holding this one for the whole grace.
          startClosing();
          server.tryShutdown(() => {
            clearTimeout(force);
            loop?.stop();
            (http?.close() ?? Promise.resolve()).then(resolve);
          });
        }, drainDelayMs);
      });
      return stopping;
    },
  };
}
