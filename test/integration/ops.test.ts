// Operability: metrics (checked by promtool), probes, health during shutdown, SIGTERM under load.
import { execFile } from 'node:child_process';
import { type Client, credentials, loadPackageDefinition, type ServiceError, status } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_LATENCY_MODEL } from '../../src/core/latency.js';
import { RouteRequest, SchedulerClient } from '../../src/gen/cpn/v1/scheduler.js';
import { silentLogger } from '../../src/ops/log.js';
import { loadTopology } from '../../src/ops/topology.js';
import { startServer } from '../../src/server/server.js';
import { MemoryStore } from '../../src/store/memory/memory-store.js';
import { registerPermanent } from '../../src/store/store.js';
import { findBinary } from '../helpers/binaries.js';
import { CLI_OPERATOR_KEY, startServe } from '../helpers/cli.js';
import { spec } from '../helpers/fixtures.js';
import { bearer, ok, TEST_OPERATOR_KEY } from '../helpers/grpc.js';

const route = RouteRequest.fromPartial({
  model: 'qwen3-8b',
  client: { region: 'CN-GD' },
  latencyBudgetMs: 30,
  inputTokens: 256,
  maxOutputTokens: 64,
});

async function demoServer() {
  const topology = await loadTopology('simulations/topologies/demo-national.yaml');
  const store = new MemoryStore({
    clock: Date.now,
    latency: DEFAULT_LATENCY_MODEL,
    regionCentroids: topology.regionCentroids,
  });
  await registerPermanent(store, topology.nodes);
  const server = await startServer({
    store,
    logger: silentLogger,
    port: 0,
    metricsPort: 0,
    bootstrapOperatorKey: TEST_OPERATOR_KEY,
  });
  const scheduler = new SchedulerClient(
    `127.0.0.1:${server.port}`,
    credentials.createInsecure(),
    bearer(TEST_OPERATOR_KEY),
  );
  return { server, scheduler, base: `http://127.0.0.1:${server.metricsPort}` };
}

function promtool(text: string): Promise<{ code: number; output: string }> {
  const binary = findBinary(
    'the metrics test needs promtool',
    ['/usr/bin/promtool', process.env.CPN_PROMTOOL_BIN],
    'apt-get install -y prometheus',
  );
  return new Promise((resolve) => {
    const child = execFile(binary, ['check', 'metrics'], (error, stdout, stderr) =>
      resolve({
        code: error ? (typeof error.code === 'number' ? error.code : 1) : 0,
        output: `${stdout}${stderr}`,
      }),
    );
    child.stdin?.end(text);
  });
}

describe('metrics and probes', () => {
  it('counts routes, times decisions, and passes promtool check metrics', async () => {
    const { server, scheduler, base } = await demoServer();
    try {
      for (let i = 0; i < 5; i += 1) await ok(scheduler, scheduler.route, route);
      const failed = await new Promise<ServiceError | null>((resolve) =>
        scheduler.route({ ...route, latencyBudgetMs: 1 }, (error) => resolve(error)),
      );
      expect(failed?.code).toBe(status.FAILED_PRECONDITION);
      const response = await fetch(`${base}/metrics`);
      expect(response.status).toBe(200);
      const text = await response.text();
      expect(text).toMatch(/^cpn_route_decisions_total\{outcome="placed",level="PROVINCE"\} 5$/m);
      expect(text).toMatch(
        /^cpn_route_decisions_total\{outcome="no_node_within_constraints",level="none"\} 1$/m,
      );
      expect(text).toMatch(/^cpn_route_decision_seconds_count 6$/m);
      expect(text).toMatch(/^cpn_rpc_requests_total\{method="Route",code="OK"\} 5$/m);
      expect(text).toMatch(/^cpn_rpc_requests_total\{method="Route",code="FAILED_PRECONDITION"\} 1$/m);
      expect(text).toMatch(/^cpn_nodes\{level="CENTER",region="CN-GS",state="READY"\} 1$/m);
      expect(text).toMatch(/^cpn_reserved_slots\{level="PROVINCE",region="CN-GD"\} 5$/m);
      expect(text).toMatch(/^cpn_placement_slack_seconds_count\{level="PROVINCE"\} 5$/m);
      expect(text).toMatch(/^cpn_store_reachable 1$/m);
      expect(text).toMatch(/^cpn_gpus\{level="CENTER",region="CN-GS"\} 4096$/m);
      expect(text).toMatch(/^cpn_leader 1$/m);
      expect(text).toMatch(/^cpn_process_resident_memory_bytes \d+/m);
      const checked = await promtool(text);
      expect(checked.output).toBe('');
      expect(checked.code).toBe(0);
    } finally {
      scheduler.close();
      await server.shutdown(1000);
    }
  });

  it('region labels are bounded: past --metrics-max-regions the regions with fewest nodes are summed as "other"', async () => {
    const store = new MemoryStore({ clock: Date.now, latency: DEFAULT_LATENCY_MODEL });
    const specs = Array.from({ length: 300 }, (_, i) => ({
      ...spec({ id: `n${i}`, region: i < 20 ? 'CN-BIG' : `XX-R${i}` }),
    }));
    await registerPermanent(store, specs);
    const server = await startServer({
      store,
      logger: silentLogger,
      port: 0,
      metricsPort: 0,
      metricsMaxRegions: 8,
      bootstrapOperatorKey: TEST_OPERATOR_KEY,
    });
    try {
      const text = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
      const regions = new Set([...text.matchAll(/^cpn_nodes\{[^}]*region="([^"]+)"/gm)].map((m) => m[1]));
      expect(regions.size).toBe(9);
      expect(regions.has('CN-BIG')).toBe(true);
      expect(regions.has('other')).toBe(true);
      expect(text).toMatch(/^cpn_nodes\{level="PROVINCE",region="CN-BIG",state="READY"\} 20$/m);
      // 280 one-node regions: 7 named (first by name), 273 summed.
      expect(text).toMatch(/^cpn_nodes\{level="PROVINCE",region="other",state="READY"\} 273$/m);
      expect((await promtool(text)).code).toBe(0);
    } finally {
      await server.shutdown(1000);
    }
  });

  it('answers /healthz and /readyz; during shutdown readiness and gRPC health turn NOT_SERVING', async () => {
    const { server, scheduler, base } = await demoServer();
    scheduler.close();
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true, reason: 'serving' });
    expect((await fetch(`${base}/nope`)).status).toBe(404);

    const definition = loadPackageDefinition(loadSync(healthProtoPath, { enums: String })) as unknown as {
      grpc: {
        health: {
          v1: {
            Health: new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => Client;
          };
        };
      };
    };
    const health = new definition.grpc.health.v1.Health(
      `127.0.0.1:${server.port}`,
      credentials.createInsecure(),
    ) as Client & {
      watch(request: { service: string }): NodeJS.ReadableStream;
    };
    // A health Watch stream stays open, so the server is still shutting down while we look.
    const watch = health.watch({ service: 'cpn.v1.Scheduler' });
    const statuses: string[] = [];
    const notServing = new Promise<void>((resolve) => {
      watch.on('data', (message: { status: string }) => {
        statuses.push(message.status);
        if (message.status === 'NOT_SERVING') resolve();
      });
    });
    watch.on('error', () => undefined);
    await new Promise<void>((resolve) => watch.once('data', () => resolve()));
    const stopped = server.shutdown(2000);
    await notServing;
    expect(statuses).toEqual(['SERVING', 'NOT_SERVING']);
    const draining = await fetch(`${base}/readyz`);
    expect(draining.status).toBe(503);
    expect(await draining.json()).toEqual({ ready: false, reason: 'shutting down' });
    await stopped;
    health.close();
  });
});

describe('graceful shutdown under load', () => {
  it('answers every accepted Route for real when SIGTERM lands mid-burst, then exits 0 within the grace period', async () => {
    const serve = await startServe(['--demo', '--grace-ms', '5000']);
    const scheduler = new SchedulerClient(
      serve.address,
      credentials.createInsecure(),
      bearer(CLI_OPERATOR_KEY),
    );
    const codes: number[] = [];
    let answered = 0;
    let midBurst: () => void = () => undefined;
    const hundredAnswered = new Promise<void>((resolve) => {
      midBurst = resolve;
    });
    const call = () =>
      new Promise<void>((resolve) => {
        scheduler.route(
          route,
          { deadline: new Date(Date.now() + 5000) } as never,
          (error: ServiceError | null) => {
            codes.push(error === null ? status.OK : error.code);
            answered += 1;
            if (answered === 100) midBurst();
            resolve();
          },
        );
      });
    const calls: Promise<void>[] = [];
    let signalledAt = 0;
    // SIGTERM goes out once 100 calls have been answered, while the rest are still being sent.
    hundredAnswered.then(() => {
      signalledAt = Date.now();
      serve.child.kill('SIGTERM');
    });
    for (let batch = 0; batch < 40; batch += 1) {
      for (let i = 0; i < 10; i += 1) calls.push(call());
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await Promise.all(calls);
    const exitCode = await serve.exited();
    const elapsedMs = Date.now() - signalledAt;
    scheduler.close();
    expect(codes).toHaveLength(400);
    expect(codes.filter((c) => c === status.OK).length).toBeGreaterThan(0);
    // Accepted calls got real answers; the rest were refused as UNAVAILABLE, never INTERNAL/UNKNOWN.
    for (const code of codes)
      expect([status.OK, status.UNAVAILABLE, status.RESOURCE_EXHAUSTED]).toContain(code);
    expect(exitCode).toBe(0);
    expect(elapsedMs).toBeLessThan(5000 + 2000);
  }, 30_000);
});
