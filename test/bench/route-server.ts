// A control-plane process for the gRPC benchmarks, in one of three modes with the same process
// layout (one child process, loopback, same gRPC server options):
//   real    — `startServer` over a memory store holding a seeded national registry, auth off
//             (the routing work alone, for the comparison with the no-work server);
//   auth    — the same with API keys on and quota admission: clients send a client key of a
//             tenant with a package (printed as KEY <secret>);
//   nowork  — the same Scheduler service whose Route returns a fixed answer recorded from the real
//             one (or a fixed FAILED_PRECONDITION for a budget under 2 ms): the gRPC floor.
// Prints "READY <port>" once serving; exits when its standard input closes.
// Usage: node --import tsx test/bench/route-server.ts real|auth|nowork NODES tiers|distinct

import { Server, ServerCredentials, status } from '@grpc/grpc-js';
import type { SchedulerServer } from '../../src/gen/cpn/v1/scheduler.js';
import { built, stacksAsInProduction } from './built.js';
import { nationalRegistry, type PriceMode } from './registry-gen.js';

// The built code, as `cpn serve` runs it, for every mode alike (npm run bench builds first).
const { DEFAULT_LATENCY_MODEL } = (await built(
  'core/latency.js',
)) as typeof import('../../src/core/latency.js');
const { SchedulerService, SchedulerClient, RouteRequest } = (await built(
  'gen/cpn/v1/scheduler.js',
)) as typeof import('../../src/gen/cpn/v1/scheduler.js');
const { silentLogger } = (await built('ops/log.js')) as typeof import('../../src/ops/log.js');
const { loadTopology } = (await built('ops/topology.js')) as typeof import('../../src/ops/topology.js');
const { MAX_RECEIVE_MESSAGE_BYTES, MAX_SEND_MESSAGE_BYTES, startServer } = (await built(
  'server/server.js',
)) as typeof import('../../src/server/server.js');
const { MemoryStore } = (await built(
  'store/memory/memory-store.js',
)) as typeof import('../../src/store/memory/memory-store.js');
const { registerPermanent } = (await built('store/store.js')) as typeof import('../../src/store/store.js');

stacksAsInProduction();
const [mode = 'real', nodesArg = '5000', priceMode = 'distinct'] = process.argv.slice(2);
const topology = await loadTopology('simulations/topologies/demo-national.yaml');
const store = new MemoryStore({
  clock: Date.now,
  latency: DEFAULT_LATENCY_MODEL,
  regionCentroids: topology.regionCentroids,
});
await registerPermanent(
  store,
  nationalRegistry(Number(nodesArg), priceMode as PriceMode, topology.regionCentroids),
);
const real = await startServer({
  store,
  logger: silentLogger,
  port: 0,
  reservationTtlMs: 1000,
  clusterJobs: false,
  auth: mode === 'auth' ? 'api-key' : 'none',
});
if (mode === 'auth') {
  await real.plane.accounts.createTenant('bench', 'Bench tenant');
  // A package whose quota never runs out: every Route pays for admission and the ledger hold.
  await real.plane.accounts.setPackage('bench', {
    name: 'bench',
    quotaPoints: 1e15,
    period: { kind: 'calendar-month', timeZone: 'Asia/Shanghai' },
    weights: { '*': { inputPer1k: 1, outputPer1k: 4, cachedInputPer1k: 0 } },
    allowedLevels: [],
    overQuota: 'REJECT',
    throttleRequestsPerS: 0,
    throttleBudgetMs: 0,
  });
  const created = await real.plane.accounts.createApiKey({ role: 'client', name: 'bench', tenant: 'bench' });
  if (created.kind !== 'created') throw new Error(`cannot create the bench key: ${created.kind}`);
  process.stdout.write(`KEY ${created.secret}\n`);
}
let port = real.port;

if (mode === 'nowork') {
  // Record one real answer, then serve it from a bare server of the same service.
  const { credentials, Metadata } = await import('@grpc/grpc-js');
  const client = new SchedulerClient(`127.0.0.1:${real.port}`, credentials.createInsecure());
  const recorded = await new Promise<unknown>((resolve, reject) =>
    client.route(
      RouteRequest.fromPartial({
        model: 'qwen3-32b',
        client: { region: 'CN-GD' },
        latencyBudgetMs: 80,
        inputTokens: 512,
        maxOutputTokens: 256,
        maxFallbacks: 2,
      }),
      new Metadata(),
      {},
      (error, response) => (error ? reject(error) : resolve(response)),
    ),
  );
  client.close();
  await real.shutdown(100);
  const server = new Server({
    'grpc.max_receive_message_length': MAX_RECEIVE_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_SEND_MESSAGE_BYTES,
  });
  const service: SchedulerServer = {
    route: (call, callback) => {
      if (call.request.latencyBudgetMs < 2) {
        callback({ code: status.FAILED_PRECONDITION, details: 'fixed answer: nothing within the budget' });
        return;
      }
      callback(null, recorded as never);
    },
    release: (_call, callback) =>
      callback(null, {
        released: true,
        nodeId: 'n0',
        settledPoints: 0,
        returnedPoints: 0,
        awaitingTrustedMeter: false,
      }),
    // The no-work baseline measures Route only.
    openSession: (_call, callback) => callback({ code: status.UNIMPLEMENTED }),
    updateSession: (_call, callback) => callback({ code: status.UNIMPLEMENTED }),
    closeSession: (_call, callback) => callback({ code: status.UNIMPLEMENTED }),
    watchSession: (call) => call.emit('error', { code: status.UNIMPLEMENTED }),
  };
  server.addService(SchedulerService, service);
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
}

process.stdout.write(`READY ${port}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
