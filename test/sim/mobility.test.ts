// Vehicles in the simulator: trips are drawn the same for every mode and follow their route; on a
// slice of the vehicle-corridor scenario, sessions beat per-request routing (fewer context tokens
// prefilled again, more requests within budget) and sticky-forever (more requests within budget).
import { describe, expect, it } from 'vitest';
import { greatCircleKm } from '../../src/core/latency.js';
import { drawTrips, pointAt, routeOf } from '../../src/sim/mobility.js';
import { buildTopology, simulate } from '../../src/sim/run.js';
import { loadScenario, type Scenario } from '../../src/sim/scenario.js';

type ModeOut = { requests: number; slo_attainment: number; reprefilled_tokens: number; handovers: number };

async function corridor(minutes: number): Promise<Scenario> {
  const base = await loadScenario('simulations/vehicle-corridor.yaml');
  return {
    ...base,
    duration: minutes * 60_000,
    warmup: 0,
    bucket: 5 * 60_000,
    // Light background load: the vehicles are what is measured here.
    demand: { ...base.demand, rate_per_s: 5 },
    events: [],
    policies: ['cheapest-feasible'],
  };
}

describe('vehicles in the simulator', () => {
  it('draws the same trips every time; each request lies on the route, a context that grows', async () => {
    const scenario = await corridor(30);
    const topology = await buildTopology(scenario);
    const first = drawTrips(scenario, topology.regionCentroids);
    const again = drawTrips(scenario, topology.regionCentroids);
    expect(again).toEqual(first);
    expect(first.length).toBeGreaterThan(100);
    const mobile = scenario.demand.mobile[0];
    if (mobile === undefined) throw new Error('the corridor has a mobile class');
    const route = routeOf(mobile, topology.regionCentroids);
    for (const request of first.slice(0, 200)) {
      expect(request.km).toBeGreaterThanOrEqual(-1e-9);
      expect(request.km).toBeLessThanOrEqual(route.lengthKm + 1e-9);
      expect(greatCircleKm(request.position, pointAt(route, request.km))).toBeLessThan(1e-6);
      expect(request.contextTokens).toBe(
        Math.min(
          mobile.context_tokens.max,
          mobile.context_tokens.start + request.seq * mobile.context_tokens.per_request,
        ),
      );
    }
    // Within a trip, requests are a fixed gap apart and move at the class's speed.
    const trip = first.filter((r) => r.trip === first[0]?.trip);
    for (let i = 1; i < trip.length; i += 1) {
      const a = trip[i - 1] as (typeof trip)[number];
      const b = trip[i] as (typeof trip)[number];
      expect(b.atMs - a.atMs).toBeCloseTo(60_000 / mobile.requests_per_minute, 6);
      expect(Math.abs(b.km - a.km)).toBeCloseTo((mobile.speed_kmh * (b.atMs - a.atMs)) / 3_600_000, 6);
    }
  });

  it('sessions beat per-request routing and sticky-forever on the corridor', async () => {
    const { summary } = await simulate(await corridor(60));
    const modes = summary.mobility as Record<string, ModeOut>;
    const perRequest = modes['per-request'] as ModeOut;
    const sticky = modes.sticky as ModeOut;
    const sessions = modes.sessions as ModeOut;
    // Identical trips.
    expect(perRequest.requests).toBeGreaterThan(500);
    expect(sticky.requests).toBe(perRequest.requests);
    expect(sessions.requests).toBe(perRequest.requests);
    // Per request: flapping between nodes, the context prefilled again each time.
    expect(sessions.reprefilled_tokens).toBeLessThan(perRequest.reprefilled_tokens / 10);
    expect(sessions.handovers).toBeLessThan(perRequest.handovers / 5);
    expect(sessions.slo_attainment).toBeGreaterThan(perRequest.slo_attainment);
    // Sticky: never moves, so its budget breaks as the car drives away.
    expect(sticky.handovers).toBe(0);
    expect(sessions.slo_attainment).toBeGreaterThan(sticky.slo_attainment);
  }, 60_000);
});
