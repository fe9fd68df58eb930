// A real control plane on 127.0.0.1 (port 0) over real gRPC, with clients and promise helpers.

import {
  type ChannelOptions,
  credentials,
  InterceptingCall,
  type Interceptor,
  Metadata,
  type ServiceError,
} from '@grpc/grpc-js';
import { DEFAULT_LATENCY_MODEL, type LatencyModel } from '../../src/core/latency.js';
import { ListNodesRequest, RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { SchedulerClient } from '../../src/gen/cpn/v1/scheduler.js';
import { Level, type NodeSpec as ProtoNodeSpec } from '../../src/gen/cpn/v1/types.js';
import { silentLogger } from '../../src/ops/log.js';
import type { ConnectionLimits } from '../../src/server/connections.js';
import { type RunningServer, startServer } from '../../src/server/server.js';
import type { HeartbeatLimits } from '../../src/server/services.js';
import { MemoryStore } from '../../src/store/memory/memory-store.js';

/** The operator key every test server installs (CPN_BOOTSTRAP_OPERATOR_KEY in CLI tests). */
export const TEST_OPERATOR_KEY = 'test-operator-key-0123456789abcdef0123456789';

/** Client options that send `authorization: Bearer <key>` on every call. */
export function bearer(key: string): ChannelOptions & { interceptors: Interceptor[] } {
  const interceptor: Interceptor = (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${key}`);
        next(metadata, listener);
      },
    });
  return { interceptors: [interceptor] };
}

export interface TestServer {
  readonly server: RunningServer;
  readonly store: MemoryStore;
  readonly registry: RegistryClient;
  readonly scheduler: SchedulerClient;
  readonly address: string;
  /** Moves the server's clocks (wall and monotonic) forward. */
  advance(ms: number): void;
  /** Steps the wall clock alone, as an NTP correction or an operator would. */
  stepWallClock(ms: number): void;
  close(): Promise<void>;
}

export async function startTestServer(
  options: {
    reservationTtlMs?: number;
    latency?: Partial<LatencyModel>;
    explainQueue?: number;
    maxNodes?: number;
    connections?: Partial<ConnectionLimits>;
    heartbeat?: Partial<HeartbeatLimits>;
    maxSessionsPerTenant?: number;
  } = {},
): Promise<TestServer> {
  let now = Date.UTC(2026, 10, 22, 12);
  let monotonic = 0;
  const clock = () => now;
  const store = new MemoryStore({ clock, latency: DEFAULT_LATENCY_MODEL });
  const server = await startServer({
    store,
    logger: silentLogger,
    port: 0,
    clock,
    monotonicClock: () => monotonic,
    reservationTtlMs: options.reservationTtlMs ?? 30_000,
    latency: options.latency,
    explainQueue: options.explainQueue,
    maxNodes: options.maxNodes,
    connections: options.connections,
    heartbeat: options.heartbeat,
    maxSessionsPerTenant: options.maxSessionsPerTenant,
    bootstrapOperatorKey: TEST_OPERATOR_KEY,
  });
  const address = `127.0.0.1:${server.port}`;
  const registry = new RegistryClient(address, credentials.createInsecure(), bearer(TEST_OPERATOR_KEY));
  const scheduler = new SchedulerClient(address, credentials.createInsecure(), bearer(TEST_OPERATOR_KEY));
  return {
    server,
    store,
    registry,
    scheduler,
    address,
    advance: (ms) => {
      now += ms;
      monotonic += ms;
    },
    stepWallClock: (ms) => {
      now += ms;
    },
    async close() {
      registry.close();
      scheduler.close();
      await server.shutdown(1000);
    },
  };
}

type Callback<Res> = (error: ServiceError | null, response: Res) => void;
type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: { deadline?: Date },
  callback: Callback<Res>,
) => unknown;

export type Outcome<Res> = { ok: true; value: Res } | { ok: false; error: ServiceError };

/** Calls a unary RPC and resolves with its result or its error (never rejects). */
export function rpc<Req, Res>(
  client: object,
  method: Unary<Req, Res>,
  request: Req,
  options: { deadline?: Date } = { deadline: new Date(Date.now() + 10_000) },
): Promise<Outcome<Res>> {
  return new Promise((resolve) => {
    method.call(client, request, new Metadata(), options, (error, value) =>
      resolve(error === null ? { ok: true, value } : { ok: false, error }),
    );
  });
}

/** Like rpc, but throws on error. */
export async function ok<Req, Res>(client: object, method: Unary<Req, Res>, request: Req): Promise<Res> {
  const outcome = await rpc(client, method, request);
  if (!outcome.ok) throw new Error(`RPC failed: ${outcome.error.code} ${outcome.error.details}`);
  return outcome.value;
}

/** A wire-level NodeSpec serving model `m` in CN-GD, for tests that talk to a server. */
export function protoSpec(
  id: string,
  { level = Level.LEVEL_PROVINCE, inputPerMtok = 1 }: { level?: Level; inputPerMtok?: number } = {},
): ProtoNodeSpec {
  return {
    id,
    level,
    region: 'CN-GD',
    parentId: '',
    endpoint: `http://${id}:8000`,
    location: { lat: 23.1, lon: 113.3 },
    gpus: [{ type: 'L20', count: 8, memoryGib: 48 }],
    models: [
      {
        model: 'm',
        maxConcurrency: 8,
        maxQueue: 8,
        prefillTokensPerS: 10_000,
        decodeTokensPerS: 50,
        price: { inputPerMtok, outputPerMtok: inputPerMtok * 4, cachedInputPerMtok: inputPerMtok / 10 },
      },
    ],
    labels: {},
  };
}

/** ListNodes with no filter: the first page of every node. */
export const ALL_NODES: ListNodesRequest = ListNodesRequest.fromPartial({});
