// Load floors change the work of a decision, never its answer: for every policy, after loads rise
// and fall every way they can (reservations stamped out of order, releases, expiry, a status
// report seen by another view of the same book), a decision equals one made without floors.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { NodeRecord } from '../../src/core/model.js';
import type { Reservation } from '../../src/core/reservations.js';
import {
  CHEAPEST_FEASIBLE,
  DEFAULT_SEARCH_TUNING,
  decideRoute,
  LEAST_LOADED,
  NEAREST,
  type RouteDecision,
  type RoutingPolicy,
} from '../../src/core/routing/index.js';
import { book, context, loadedRecord, offer, plain, request } from '../helpers/fixtures.js';

const answerOf = (d: RouteDecision) =>
  d.kind === 'placed'
    ? { placed: d.placement.nodeId, fallbacks: d.fallbacks.map((f) => f.nodeId), degraded: d.degraded }
    : d.kind === 'infeasible'
      ? { reason: d.reason, bestTtftMs: d.bestTtftMs }
      : { kind: d.kind };

const nodeArb = fc.record({
  km: fc.integer({ min: 0, max: 3000 }),
  price: fc.integer({ min: 1, max: 4 }),
  maxConcurrency: fc.integer({ min: 1, max: 3 }),
  maxQueue: fc.integer({ min: 0, max: 3 }),
  active: fc.integer({ min: 0, max: 4 }),
});

describe('load floors (property)', () => {
  it('every policy decides as it would without floors, after loads rise and fall', () => {
    fc.assert(
      fc.property(
        fc.array(nodeArb, { minLength: 1, maxLength: 24 }),
        // Reservations: on which node, stamped when (out of order against the report at 500).
        fc.array(fc.record({ node: fc.nat(), atMs: fc.constantFrom(100, 600, 900) }), { maxLength: 40 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        fc.constantFrom<RoutingPolicy>(CHEAPEST_FEASIBLE, NEAREST, LEAST_LOADED),
        fc.integer({ min: 50, max: 5000 }),
        fc.boolean(),
        fc.constantFrom(undefined, 2, 5),
        fc.boolean(),
        (drawn, piled, released, policy, budget, allowDegraded, maxVisits, newerReport) => {
          const records = (statusAtMs: number): NodeRecord[] =>
            drawn.map((n, i) =>
              loadedRecord(
                {
                  id: `n${i}`,
                  km: n.km,
                  offers: [
                    offer({
                      maxConcurrency: n.maxConcurrency,
                      maxQueue: n.maxQueue,
                      price: { inputPerMtok: n.price },
                    }),
                  ],
                  active: n.active,
                  healthy: true,
                  silentMs: 0,
                },
                statusAtMs,
              ),
            );
          const reservations = book();
          const held: Reservation[] = piled.map((r) =>
            reservations.reserve(`n${r.node % drawn.length}`, 'm', '', r.atMs, 0),
          );
          const searchTuning = { ...DEFAULT_SEARCH_TUNING, flatScanNodes: 0 };
          const registry = records(500);
          const options = { nowMs: 1000, ...(maxVisits === undefined ? {} : { maxVisits }) };
          const ctx = { ...context(registry, { reservations, ...options }), policy, searchTuning };
          const req = request({ latencyBudgetMs: budget, maxFallbacks: 2, explain: false, allowDegraded });
          decideRoute({ ...req, latencyBudgetMs: 1e6 }, ctx);
          decideRoute(req, ctx);
          for (const k of released)
            if (held.length > 0) reservations.free(held[k % held.length] as Reservation);
          // Another view of the same book whose report covers every reservation stamped before 950.
          if (newerReport)
            decideRoute(req, { ...context(records(950), { reservations, ...options }), policy });
          const without = {
            ...context(registry, { reservations: plain(reservations), ...options }),
            policy,
            searchTuning,
          };
          for (const latencyBudgetMs of [budget, budget * 3]) {
            const again = { ...req, latencyBudgetMs };
            expect(answerOf(decideRoute(again, ctx))).toEqual(answerOf(decideRoute(again, without)));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
