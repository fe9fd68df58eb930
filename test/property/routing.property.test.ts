// Invariants of the routing rule over random topologies and requests (fast-check).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LEVELS, type Level, type NodeRecord, nodeState, reportedLoad } from '../../src/core/model.js';
import type { ReservationBook, ReservationId } from '../../src/core/reservations.js';
import { decideRoute, estimateOn, type RouteRequest } from '../../src/core/routing/index.js';
import { ControlPlane } from '../../src/plane/control-plane.js';
import { MemoryStore } from '../../src/store/memory/memory-store.js';
import { registerPermanent } from '../../src/store/store.js';
import {
  context,
  drawnRequest,
  FLAT_LATENCY,
  loadedRecord,
  book as newBook,
  offer,
  request,
} from '../helpers/fixtures.js';

const NOW = 1_000_000;
const MODELS = ['m', 'n'];
const REGIONS = ['CN-GD', 'CN-GZ', 'CN-SH'];

const nodeArb = (index: number) =>
  fc
    .record({
      level: fc.constantFrom(...LEVELS),
      region: fc.constantFrom(...REGIONS),
      km: fc.integer({ min: 0, max: 3000 }),
      models: fc.subarray(MODELS, { minLength: 1 }),
      maxConcurrency: fc.integer({ min: 1, max: 4 }),
      maxQueue: fc.integer({ min: 0, max: 3 }),
      price: fc.constantFrom(0.5, 1, 1, 2, 3),
      prefill: fc.constantFrom(5_000, 10_000, 40_000),
      active: fc.integer({ min: 0, max: 6 }),
      draining: fc.boolean(),
      silentMs: fc.constantFrom(0, 0, 0, 60_000),
      healthy: fc.constantFrom(true, true, true, false),
    })
    .map(
      (n): NodeRecord =>
        loadedRecord(
          {
            id: `node-${String(index).padStart(2, '0')}`,
            level: n.level,
            region: n.region,
            km: n.km,
            draining: n.draining,
            offers: n.models.map((model) =>
              offer({
                model,
                maxConcurrency: n.maxConcurrency,
                maxQueue: n.maxQueue,
                prefillTokensPerS: n.prefill,
                price: { inputPerMtok: n.price },
              }),
            ),
            active: n.active,
            healthy: n.healthy,
            silentMs: n.silentMs,
          },
          NOW,
        ),
    );

const topologyOf = (maxNodes: number) =>
  fc
    .integer({ min: 1, max: maxNodes })
    .chain((count) => fc.tuple(...Array.from({ length: count }, (_, i) => nodeArb(i))));
const topologyArb = topologyOf(24);

const requestArb = fc
  .record({
    model: fc.constantFrom(...MODELS),
    budget: fc.integer({ min: 5, max: 400 }),
    input: fc.integer({ min: 0, max: 4000 }),
    cachedShare: fc.double({ min: 0, max: 1, noNaN: true }),
    output: fc.integer({ min: 0, max: 500 }),
    levels: fc.subarray([...LEVELS]),
    regions: fc.subarray(REGIONS),
    degraded: fc.boolean(),
    fallbacks: fc.integer({ min: 0, max: 5 }),
  })
  .map((r): RouteRequest => drawnRequest({ ...r, levels: r.levels as Level[] }, { explain: false }));

/** Independent statement of feasibility (DESIGN.md §3), using the core only for the numbers. */
function feasibleNodes(nodes: readonly NodeRecord[], req: RouteRequest, book: ReservationBook) {
  const ctx = context(nodes, { nowMs: NOW, reservations: book });
  return nodes.flatMap((node) => {
    const o = node.spec.models.find((x) => x.model === req.model);
    if (!o || nodeState(node, NOW) !== 'READY') return [];
    if (req.allowedLevels.length > 0 && !req.allowedLevels.includes(node.spec.level)) return [];
    if (req.allowedRegions.length > 0 && !req.allowedRegions.includes(node.spec.region)) return [];
    const load = reportedLoad(node, req.model) + book.pending(node.spec.id, req.model, node.statusAtMs);
    if (load >= o.maxConcurrency + o.maxQueue) return [];
    const estimate = estimateOn(req, node, o, load, ctx);
    return estimate.ttftMs <= req.latencyBudgetMs ? [{ node, estimate }] : [];
  });
}

describe('routing invariants (property)', () => {
  it('every non-degraded placement is feasible and no feasible node is strictly cheaper', () => {
    fc.assert(
      fc.property(topologyArb, requestArb, (nodes, req) => {
        const book = newBook();
        const decision = decideRoute(req, context(nodes, { nowMs: NOW, reservations: book }));
        const feasible = feasibleNodes(nodes, req, book);
        if (decision.kind !== 'placed') {
          expect(feasible).toEqual([]);
          return;
        }
        if (decision.degraded) {
          expect(feasible).toEqual([]);
          return;
        }
        const chosen = feasible.find((f) => f.node.spec.id === decision.placement.nodeId);
        expect(chosen, `${decision.placement.nodeId} is not feasible`).toBeDefined();
        const cheapest = Math.min(...feasible.map((f) => f.estimate.cost));
        expect(decision.placement.estimate.cost).toBeLessThanOrEqual(cheapest);
        for (const fallback of decision.fallbacks) {
          expect(feasible.some((f) => f.node.spec.id === fallback.nodeId)).toBe(true);
          expect(fallback.estimate.cost).toBeGreaterThanOrEqual(decision.placement.estimate.cost);
        }
      }),
      { numRuns: 400 },
    );
  });

  it('the decision does not depend on the order nodes are listed in', () => {
    fc.assert(
      fc.property(topologyArb, requestArb, fc.nat(), (nodes, req, seed) => {
        const shuffled = [...nodes].sort(
          (a, b) => ((a.spec.id.charCodeAt(6) * 31 + seed) % 7) - ((b.spec.id.charCodeAt(6) * 31 + seed) % 7),
        );
        const one = decideRoute(req, context(nodes, { nowMs: NOW }));
        const two = decideRoute(req, context(shuffled, { nowMs: NOW }));
        const outcome = (d: typeof one) =>
          d.kind === 'placed' ? d.placement.nodeId : d.kind === 'infeasible' ? d.reason : d.kind;
        expect(outcome(two)).toBe(outcome(one));
      }),
      { numRuns: 200 },
    );
  });

  it('reservations never exceed capacity and releases never free more than was reserved', async () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('route' as const), model: fc.constantFrom(...MODELS) }),
      fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('tick' as const), ms: fc.integer({ min: 1, max: 20_000 }) }),
    );
    await fc.assert(
      // Few nodes and many operations, so that nodes fill up and the capacity limit is exercised.
      fc.asyncProperty(topologyOf(3), fc.array(op, { minLength: 30, maxLength: 150 }), async (nodes, ops) => {
        let now = NOW;
        const store = new MemoryStore({ clock: () => now, latency: FLAT_LATENCY });
        await registerPermanent(
          store,
          nodes.map((node) => node.spec),
        );
        const plane = new ControlPlane({
          store,
          clock: () => now,
          monotonicClock: () => now,
          reservationTtlMs: 30_000,
          replicaId: 'p',
          latency: FLAT_LATENCY,
        });
        const issued: ReservationId[] = [];
        const released = new Set<string>();
        for (const step of ops) {
          if (step.kind === 'tick') now += step.ms;
          if (step.kind === 'route') {
            const result = plane.route(
              request({ model: step.model, latencyBudgetMs: 10_000, explain: false }),
            );
            if (result.reservation) issued.push(result.reservation.id);
          }
          if (step.kind === 'release' && issued.length > 0) {
            const id = issued[step.pick % issued.length] as ReservationId;
            const { released: freed } = await plane.release(
              id,
              { inputTokens: 1, cachedInputTokens: 0, outputTokens: 1 },
              true,
            );
            if (freed) {
              expect(released.has(id), `${id} freed twice`).toBe(false);
              released.add(id);
            }
          }
          plane.expireReservations();
          for (const { record: node, reserved } of plane.listNodes({})) {
            for (const o of node.spec.models) {
              expect(reportedLoad(node, o.model) + (reserved.get(o.model) ?? 0)).toBeLessThanOrEqual(
                o.maxConcurrency + o.maxQueue,
              );
            }
          }
          expect(plane.reservationCount()).toBeLessThanOrEqual(issued.length - released.size);
        }
      }),
      { numRuns: 150 },
    );
  });
});
