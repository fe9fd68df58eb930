// Two builds of cpn, one process, the same decisions: a change's effect on decision time without
// the host's drift between runs (on these shared machines two runs of one build differ by more than
// most changes). Each build gets its own registry of the bench's nodes; every round times the
// requests of a case in sequence on each build in turn (in sequence: a decision pays for the memory
// the ones before it evicted, as in service), alternating which build goes first.
//
//   git worktree add /tmp/before <rev> && (cd /tmp/before && ln -s "$PWD/node_modules" . && npm run build)
//   npm run bench:compare -- /tmp/before .     (builds this checkout first)
//
// Environment: CPN_COMPARE_NODES (10000), CPN_COMPARE_PRICES (tiers,distinct,tou),
// CPN_COMPARE_BUDGETS (2000,80,30,1 ms), CPN_COMPARE_ROUNDS (5; odd, so that a request's median is one of its times). Prints p50 and p99 per build:
// placed decisions only, except for budgets no node can meet (there, every decision). Then the same
// over each request's median time across the rounds ("per request"): a host's interrupts and
// neighbours slow about one decision in a hundred to two hundred by tens of microseconds, which a
// p99 of single timings reads as the code's own; a request's median keeps its own work and misses
// (each round still runs the requests in sequence) and drops those hiccups.

import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { LatLon } from '../../src/core/model.js';
import type { RouteContext, RouteDecision, RouteRequest } from '../../src/core/routing/index.js';
import { benchRequests, nationalRegistry, TIME_OF_USE } from './registry-gen.js';
import { median, percentileOf } from './stats.js';

interface Build {
  readonly name: string;
  readonly centroids: ReadonlyMap<string, LatLon>;
  /** A context over a fresh registry of `prices`. */
  context(prices: string): Promise<RouteContext>;
  readonly decideRoute: (request: RouteRequest, ctx: RouteContext) => RouteDecision;
}

const roots = process.argv.slice(2);
if (roots.length !== 2 || roots.includes('--help')) {
  console.error('usage: node --import tsx test/bench/compare-builds.ts <repo with dist/> <repo with dist/>');
  process.exit(roots.includes('--help') ? 0 : 2);
}
const NODES = Number(process.env.CPN_COMPARE_NODES ?? 10_000);
const PRICES = (process.env.CPN_COMPARE_PRICES ?? 'tiers,distinct,tou').split(',');
for (const prices of PRICES)
  if (!['tiers', 'distinct', 'tou'].includes(prices))
    throw new Error(`CPN_COMPARE_PRICES: tiers, distinct or tou, not ${prices}`);
const BUDGETS = (process.env.CPN_COMPARE_BUDGETS ?? '2000,80,30,1').split(',').map(Number);
const ROUNDS = Number(process.env.CPN_COMPARE_ROUNDS ?? 5);
const NOW = Date.UTC(2026, 10, 22, 19, 0, 0);

async function load(root: string): Promise<Build> {
  const from = async (path: string) => import(pathToFileURL(resolve(root, 'dist', path)).href);
  const { LIST_PRICE } = await from('core/cost.js');
  const { DEFAULT_LATENCY_MODEL } = await from('core/latency.js');
  const { policyMultiplier } = await from('core/pricing.js');
  const { ReservationBook } = await from('core/reservations.js');
  const { decideRoute } = await from('core/routing/index.js');
  const { loadTopology } = await from('ops/topology.js');
  const { MemoryStore } = await from('store/memory/memory-store.js');
  const { registerPermanent } = await from('store/store.js');
  const centroids = (await loadTopology('simulations/topologies/demo-national.yaml')).regionCentroids;
  return {
    name: root,
    centroids,
    decideRoute,
    async context(prices) {
      const latency = { ...DEFAULT_LATENCY_MODEL, regionCentroids: centroids };
      const store = new MemoryStore({ clock: () => NOW, latency, regionCentroids: centroids });
      await registerPermanent(
        store,
        nationalRegistry(NODES, prices === 'tiers' ? 'tiers' : 'distinct', centroids),
      );
      return {
        view: store.view,
        reservations: new ReservationBook({ ttlMs: 30_000, replicaId: 'b', newToken: () => '0'.repeat(16) }),
        latency,
        priceMultiplier: prices === 'tou' ? policyMultiplier(TIME_OF_USE) : LIST_PRICE,
        nowMs: NOW,
        maxExplainNodes: 5000,
      };
    },
  };
}

const builds = [await load(roots[0] as string), await load(roots[1] as string)];
const regionCentroids = (builds[1] as Build).centroids;

console.log(`${NODES} nodes; A = ${builds[0]?.name}, B = ${builds[1]?.name}; µs per decision`);
for (const prices of PRICES) {
  const contexts = await Promise.all(builds.map((build) => build.context(prices)));
  for (const budgetMs of BUDGETS) {
    const requests = benchRequests(regionCentroids, budgetMs, {}, 1);
    // Warm: trees built, code optimised.
    builds.forEach((build, b) => {
      for (let k = 0; k < 2; k += 1)
        for (const request of requests) build.decideRoute(request, contexts[b] as RouteContext);
    });
    const placed = builds.map(() => [] as number[]);
    const all = builds.map(() => [] as number[]);
    /** By build: each request's time in each round, at request × ROUNDS + round (preallocated). */
    const byRequest = builds.map(() => new Float64Array(requests.length * ROUNDS));
    /** By build: the requests it placed. */
    const wasPlaced = builds.map(() => new Uint8Array(requests.length));
    for (let round = 0; round < ROUNDS; round += 1) {
      for (let k = 0; k < builds.length; k += 1) {
        const b = (k + round) % builds.length;
        const build = builds[b] as Build;
        const ctx = contexts[b] as RouteContext;
        for (const [i, request] of requests.entries()) {
          const started = process.hrtime.bigint();
          const decision = build.decideRoute(request, ctx);
          const us = Number(process.hrtime.bigint() - started) / 1000;
          (all[b] as number[]).push(us);
          (byRequest[b] as Float64Array)[i * ROUNDS + round] = us;
          if (decision.kind === 'placed') {
            (placed[b] as number[]).push(us);
            (wasPlaced[b] as Uint8Array)[i] = 1;
          }
        }
      }
    }
    const line = builds.map((_, b) => {
      const times = (placed[b] as number[]).length > 0 ? (placed[b] as number[]) : (all[b] as number[]);
      return `${b === 0 ? 'A' : 'B'} ${percentileOf(times, 0.5).toFixed(1).padStart(6)} / ${percentileOf(times, 0.99).toFixed(1).padStart(6)}`;
    });
    const which = (placed[0] as number[]).length > 0 ? 'placed' : 'all';
    console.log(
      `  ${prices.padEnd(9)} ${String(budgetMs).padStart(5)} ms (${which.padEnd(6)}) p50 / p99: ${line.join('   ')}`,
    );
    const medians = builds.map((_, b) =>
      requests
        .map((_, i) => i)
        .filter((i) => which === 'all' || (wasPlaced[b] as Uint8Array)[i] === 1)
        .map((i) => median((byRequest[b] as Float64Array).subarray(i * ROUNDS, (i + 1) * ROUNDS))),
    );
    const perRequest = medians.map(
      (times, b) =>
        `${b === 0 ? 'A' : 'B'} ${percentileOf(times, 0.5).toFixed(1).padStart(6)} / ${percentileOf(times, 0.99).toFixed(1).padStart(6)}`,
    );
    console.log(`  ${''.padEnd(25)} per request p50 / p99: ${perRequest.join('   ')}`);
  }
}
