// Route decision cost at national scale. Prints ratios against baselines measured in the same run,
// because these machines are shared and noisy:
//   - core: decideRoute vs. a bare loop that only computes the great-circle distance to every node
//     serving the model (the least any scan-everything router must do);
//   - gRPC: a Route round trip vs. a GetNode round trip on the same server.
// Run: npm run bench   (CPN_BENCH_NODES=10000,100000 to choose sizes)

import { credentials, Metadata } from '@grpc/grpc-js';
import { LIST_PRICE } from '../../src/core/cost.js';
import { DEFAULT_LATENCY_MODEL, greatCircleKm } from '../../src/core/latency.js';
import { type LatLon, LEVELS, type Level, type NodeSpec } from '../../src/core/model.js';
import { ReservationBook } from '../../src/core/reservations.js';
import { decideRoute, type RouteRequest } from '../../src/core/scheduler.js';
import { RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { RouteRequest as ProtoRouteRequest, SchedulerClient } from '../../src/gen/cpn/v1/scheduler.js';
import { silentLogger } from '../../src/ops/log.js';
import { loadTopology } from '../../src/ops/topology.js';
import { startServer } from '../../src/server/server.js';
import { MemoryStore } from '../../src/store/memory/memory-store.js';
import { registerPermanent } from '../../src/store/store.js';

const MODELS = Array.from({ length: 20 }, (_, i) => `model-${i}`);

/** mulberry32: a small seeded PRNG so every run benchmarks the same topology. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function nationalNodes(count: number, centroids: ReadonlyMap<string, LatLon>): NodeSpec[] {
  const random = rng(42);
  const regions = [...centroids.entries()];
  const levelShares: [Level, number][] = [
    ['CENTER', 0.001],
    ['PROVINCE', 0.01],
    ['EDGE', 0.6],
    ['TERMINAL', 1],
  ];
  return Array.from({ length: count }, (_, i) => {
    const [region, centre] = regions[Math.floor(random() * regions.length)] as [string, LatLon];
    const roll = random();
    const level = (levelShares.find(([, share]) => roll < share)?.[0] ?? 'EDGE') as Level;
    const models = MODELS.filter(() => random() < 0.2);
    if (models.length === 0) models.push(MODELS[i % MODELS.length] as string);
    const factor = [0.6, 1.25, 2.2, 3][LEVELS.indexOf(level)] as number;
    return {
      id: `n${i}`,
      level,
      region,
      parentId: '',
      endpoint: `n${i}:8000`,
      location: { lat: centre.lat + (random() - 0.5) * 3, lon: centre.lon + (random() - 0.5) * 3 },
      gpus: [{ type: 'L20', count: 8, memoryGib: 48 }],
      models: models.map((model) => ({
        model,
        maxConcurrency: 16,
        maxQueue: 16,
        prefillTokensPerS: 10_000 + random() * 30_000,
        decodeTokensPerS: 50,
        price: { inputPerMtok: 2 * factor, outputPerMtok: 8 * factor, cachedInputPerMtok: 0.2 * factor },
      })),
      labels: {},
    };
  });
}

function timeOps(label: string, budgetMs: number, op: () => void): number {
  const started = process.hrtime.bigint();
  let ops = 0;
  while (Number(process.hrtime.bigint() - started) / 1e6 < budgetMs && ops < 1_000_000) {
    op();
    ops += 1;
  }
  const perOpUs = Number(process.hrtime.bigint() - started) / 1e3 / ops;
  process.stdout.write(`  ${label.padEnd(64)} ${perOpUs.toFixed(1).padStart(9)} µs/op  (${ops} ops)\n`);
  return perOpUs;
}

async function timeAsync(label: string, count: number, op: () => Promise<void>): Promise<number> {
  for (let i = 0; i < 50; i += 1) await op();
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i += 1) await op();
  const perOpUs = Number(process.hrtime.bigint() - started) / 1e3 / count;
  process.stdout.write(`  ${label.padEnd(64)} ${perOpUs.toFixed(1).padStart(9)} µs/op  (${count} ops)\n`);
  return perOpUs;
}

const topology = await loadTopology('simulations/topologies/demo-national.yaml');
const sizes = (process.env.CPN_BENCH_NODES ?? '1000,10000,100000').split(',').map(Number);
const request = (i: number, latencyBudgetMs: number): RouteRequest => ({
  requestId: '',
  tenant: '',
  model: MODELS[i % MODELS.length] as string,
  client: { region: 'CN-GD', accessPoint: '', location: undefined },
  latencyBudgetMs,
  inputTokens: 256,
  cachedInputTokens: 0,
  maxOutputTokens: 256,
  allowedLevels: [],
  allowedRegions: [],
  allowDegraded: false,
  explain: false,
  maxFallbacks: 2,
});

process.stdout.write('Route decision (core, in process)\n');
for (const size of sizes) {
  const store = new MemoryStore({
    clock: () => 0,
    latency: DEFAULT_LATENCY_MODEL,
    regionCentroids: topology.regionCentroids,
  });
  await registerPermanent(store, nationalNodes(size, topology.regionCentroids));
  const latency = { ...DEFAULT_LATENCY_MODEL, regionCentroids: topology.regionCentroids };
  const book = new ReservationBook(30_000, 'b-');
  const client = topology.regionCentroids.get('CN-GD') as LatLon;
  let i = 0;
  let sink = 0;
  process.stdout.write(`${size} nodes (~${Math.round(size * 0.2)} serve each model)\n`);
  const baseline = timeOps('baseline: distance to every serving node', 1500, () => {
    for (const tier of store.view.priceTiers(MODELS[i++ % MODELS.length] as string)) {
      for (const node of tier.nodes.values())
        if (node.spec.location) sink += greatCircleKm(client, node.spec.location);
    }
  });
  const cases: [string, number][] = [
    ['loose budget 2000 ms (a cheap hub wins)', 2000],
    ['tight budget 15 ms (only nearby edges)', 15],
    ['impossible budget 1 ms (every node seen)', 1],
  ];
  for (const [label, budgetMs] of cases) {
    let placed = 0;
    const perOp = timeOps(`decideRoute, ${label}`, 1500, () => {
      const ctx = { view: store.view, reservations: book, latency, priceMultiplier: LIST_PRICE, nowMs: 0 };
      if (decideRoute(request(i++, budgetMs), ctx).kind === 'placed') placed += 1;
    });
    process.stdout.write(
      `    ratio to baseline ${(perOp / baseline).toFixed(3)}, placed ${placed > 0 ? 'yes' : 'no'}\n`,
    );
  }
  if (sink < 0) process.stdout.write('unreachable\n');
}

process.stdout.write('\nRoute over gRPC on loopback (demo topology, 69 nodes)\n');
{
  const store = new MemoryStore({
    clock: Date.now,
    latency: DEFAULT_LATENCY_MODEL,
    regionCentroids: topology.regionCentroids,
  });
  await registerPermanent(store, topology.nodes);
  const server = await startServer({ store, logger: silentLogger, port: 0, reservationTtlMs: 1000 });
  const address = `127.0.0.1:${server.port}`;
  const registry = new RegistryClient(address, credentials.createInsecure());
  const scheduler = new SchedulerClient(address, credentials.createInsecure());
  const getNode = () =>
    new Promise<void>((resolve, reject) =>
      registry.getNode({ nodeId: 'prov-gd-guangzhou' }, new Metadata(), {}, (error) =>
        error ? reject(error) : resolve(),
      ),
    );
  const route = () =>
    new Promise<void>((resolve, reject) =>
      scheduler.route(protoRequest, new Metadata(), {}, (error) => (error ? reject(error) : resolve())),
    );
  const protoRequest = ProtoRouteRequest.fromPartial({
    model: 'qwen3-32b',
    client: { region: 'CN-GD' },
    latencyBudgetMs: 2000,
    inputTokens: 256,
    maxOutputTokens: 256,
  });
  const baseline = await timeAsync('baseline: GetNode round trip', 2000, getNode);
  const routed = await timeAsync('Route round trip', 2000, route);
  process.stdout.write(`  ratio Route / GetNode: ${(routed / baseline).toFixed(2)}\n`);
  registry.close();
  scheduler.close();
  await server.shutdown(1000);
}
