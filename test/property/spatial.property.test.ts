// The spatial shortcut (visit only nodes within the distance a budget allows) must never change a
// decision: same node, same cost, same fallbacks, same reason, as a scan of every node.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_LATENCY_MODEL } from '../../src/core/latency.js';
import { LEVELS, type NodeRecord } from '../../src/core/model.js';
import { ReservationBook } from '../../src/core/reservations.js';
import { decideRoute, type RouteRequest } from '../../src/core/scheduler.js';
import { RegistryIndex } from '../../src/store/registry-index.js';
import { context, FLAT_LATENCY, offer, record, request } from '../helpers/fixtures.js';

const NOW = 5_000_000;

const nodeArb = (index: number) =>
  fc
    .record({
      lat: fc.double({ min: 18, max: 50, noNaN: true }),
      lon: fc.double({ min: 75, max: 130, noNaN: true }),
      located: fc.constantFrom(true, true, true, true, false),
      level: fc.constantFrom(...LEVELS),
      price: fc.constantFrom(0.5, 1, 2, 3),
      active: fc.integer({ min: 0, max: 5 }),
      prefill: fc.constantFrom(5_000, 20_000, 80_000),
    })
    .map((n): NodeRecord => {
      const base = record(
        {
          id: `n${String(index).padStart(3, '0')}`,
          level: n.level,
          region: index % 2 === 0 ? 'CN-GD' : 'CN-SC',
          offers: [
            offer({
              maxConcurrency: 4,
              maxQueue: 2,
              prefillTokensPerS: n.prefill,
              price: { inputPerMtok: n.price },
            }),
          ],
          status: {
            load: [{ model: 'm', active: Math.min(n.active, 4), queued: Math.max(0, n.active - 4) }],
            gpuUtilization: 0,
            kvCacheUtilization: 0,
            healthy: true,
          },
          permanent: true,
        },
        NOW,
      );
      return {
        ...base,
        spec: { ...base.spec, location: n.located ? { lat: n.lat, lon: n.lon } : undefined },
      };
    });

const scenarioArb = fc.integer({ min: 1, max: 60 }).chain((count) =>
  fc.record({
    nodes: fc.tuple(...Array.from({ length: count }, (_, i) => nodeArb(i))),
    samples: fc.array(
      fc.record({ node: fc.nat(count - 1), rttMs: fc.double({ min: 0.5, max: 80, noNaN: true }) }),
      { maxLength: 8 },
    ),
    client: fc.record({
      lat: fc.double({ min: 18, max: 50, noNaN: true }),
      lon: fc.double({ min: 75, max: 130, noNaN: true }),
    }),
    budget: fc.integer({ min: 3, max: 120 }),
    input: fc.integer({ min: 0, max: 3000 }),
    fallbacks: fc.integer({ min: 0, max: 3 }),
    latency: fc.constantFrom(FLAT_LATENCY, DEFAULT_LATENCY_MODEL),
  }),
);

describe('spatial index (property)', () => {
  it('decides exactly as a full scan', () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const index = new RegistryIndex();
        for (const node of s.nodes) index.put(node);
        const sampleTable: Record<string, { rttMs: number; updatedAtMs: number; count: number }> = {};
        for (const sample of s.samples) {
          const nodeId = (s.nodes[sample.node] as NodeRecord).spec.id;
          const value = { rttMs: sample.rttMs, updatedAtMs: NOW, count: 1 };
          index.setSample('CN-GD', nodeId, value);
          sampleTable[`CN-GD|${nodeId}`] = value;
        }
        const req: RouteRequest = request({
          client: { region: 'CN-GD', accessPoint: '', location: s.client },
          latencyBudgetMs: s.budget,
          inputTokens: s.input,
          explain: false,
          maxFallbacks: s.fallbacks,
        });
        const withGrid = decideRoute(req, {
          ...context([], { nowMs: NOW, latency: s.latency }),
          view: index.view,
          reservations: new ReservationBook(1000, 'a-'),
        });
        const fullScan = decideRoute(req, {
          ...context(s.nodes, { nowMs: NOW, latency: s.latency, samples: sampleTable }),
          reservations: new ReservationBook(1000, 'b-'),
        });
        expect(withGrid.kind).toBe(fullScan.kind);
        if (withGrid.kind === 'placed' && fullScan.kind === 'placed') {
          expect(withGrid.placement).toEqual(fullScan.placement);
          expect(withGrid.fallbacks).toEqual(fullScan.fallbacks);
          expect(withGrid.degraded).toBe(fullScan.degraded);
        }
        if (withGrid.kind === 'infeasible' && fullScan.kind === 'infeasible') {
          expect(withGrid.reason).toBe(fullScan.reason);
          expect(withGrid.counts).toEqual(fullScan.counts);
        }
      }),
      { numRuns: 500 },
    );
  });
});
