// Route decisions and RPCs are recorded in batches and handed to prom-client when a batch fills or
// a scrape reads the metrics: a scrape must still see every one, whenever it comes.

import { describe, expect, it } from 'vitest';
import { DEFAULT_LATENCY_MODEL } from '../../src/core/latency.js';
import type { Level } from '../../src/core/model.js';
import type { RouteDecision } from '../../src/core/routing/index.js';
import { ControlPlaneMetrics } from '../../src/ops/metrics.js';
import { MemoryStore } from '../../src/store/memory/memory-store.js';

function metrics(): ControlPlaneMetrics {
  return new ControlPlaneMetrics({
    store: new MemoryStore({ clock: Date.now, latency: DEFAULT_LATENCY_MODEL }),
    clock: Date.now,
    reservedOn: () => new Map(),
    isLeader: () => false,
  });
}

const placed = (level: Level, ttftMs: number, degraded = false) =>
  ({ kind: 'placed', degraded, placement: { level, estimate: { ttftMs } } }) as unknown as RouteDecision;
const infeasible = { kind: 'infeasible', reason: 'ALL_FULL' } as unknown as RouteDecision;
const refused = { kind: 'refused' } as unknown as RouteDecision;

/** The value of one sample line of the exposition, e.g. `cpn_x_total{a="b"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('metrics recorded in batches', () => {
  it('a scrape sees every decision and RPC recorded before it, across full batches and partial ones', async () => {
    const m = metrics();
    // 2,500 decisions: two full batches of 1,024 observations and part of a third.
    for (let i = 0; i < 2500; i += 1) {
      const decision =
        i % 5 === 0 ? infeasible : i % 7 === 0 ? refused : placed(i % 2 ? 'EDGE' : 'CENTER', 10);
      m.recordDecision(decision, 30, 0.000_02);
      m.recordRpc('Route', i % 5 === 0 ? 'RESOURCE_EXHAUSTED' : 'OK');
    }
    m.recordRpc('Release', 'OK');
    let text = await m.registry.metrics();
    const infeasibleCount = 500;
    const refusedCount = [...Array(2500).keys()].filter((i) => i % 5 !== 0 && i % 7 === 0).length;
    const edge = [...Array(2500).keys()].filter((i) => i % 5 !== 0 && i % 7 !== 0 && i % 2 === 1).length;
    const center = 2500 - infeasibleCount - refusedCount - edge;
    expect(sample(text, 'cpn_route_decisions_total{outcome="all_full",level="none"}')).toBe(infeasibleCount);
    expect(sample(text, 'cpn_route_decisions_total{outcome="refused",level="none"}')).toBe(refusedCount);
    expect(sample(text, 'cpn_route_decisions_total{outcome="placed",level="EDGE"}')).toBe(edge);
    expect(sample(text, 'cpn_route_decisions_total{outcome="placed",level="CENTER"}')).toBe(center);
    expect(sample(text, 'cpn_route_decision_seconds_count')).toBe(2500);
    expect(sample(text, 'cpn_route_decision_seconds_bucket{le="0.000025"}')).toBe(2500);
    expect(sample(text, 'cpn_route_decision_seconds_bucket{le="0.00001"}')).toBe(0);
    expect(sample(text, 'cpn_placement_slack_seconds_count{level="EDGE"}')).toBe(edge);
    expect(sample(text, 'cpn_placement_slack_seconds_bucket{le="0.025",level="EDGE"}')).toBe(edge);
    expect(sample(text, 'cpn_placement_slack_seconds_bucket{le="0.01",level="EDGE"}')).toBe(0);
    expect(sample(text, 'cpn_rpc_requests_total{method="Route",code="OK"}')).toBe(2000);
    expect(sample(text, 'cpn_rpc_requests_total{method="Route",code="RESOURCE_EXHAUSTED"}')).toBe(500);
    expect(sample(text, 'cpn_rpc_requests_total{method="Release",code="OK"}')).toBe(1);

    // Recorded after a scrape: the next one adds them, once.
    m.recordDecision(placed('EDGE', 40, true), 30, 0.002);
    text = await m.registry.metrics();
    expect(sample(text, 'cpn_route_decisions_total{outcome="degraded",level="EDGE"}')).toBe(1);
    expect(sample(text, 'cpn_route_decision_seconds_count')).toBe(2501);
    expect(sample(text, 'cpn_placement_slack_seconds_bucket{le="-0.1",level="EDGE"}')).toBe(0);
    expect(sample(text, 'cpn_placement_slack_seconds_bucket{le="0",level="EDGE"}')).toBe(1);
    text = await m.registry.metrics();
    expect(sample(text, 'cpn_route_decision_seconds_count')).toBe(2501);
    expect(sample(text, 'cpn_rpc_requests_total{method="Route",code="OK"}')).toBe(2000);
  });
});
