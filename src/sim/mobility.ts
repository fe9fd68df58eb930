// Moving clients in the simulator: vehicle trips along a route, each sending requests as it goes
// with a conversation context that grows. The same trips (seeded, identical for every mode) are
// served three ways: routed per request, stuck to their first node, or by a mobility session.
// This file draws the trips and keeps their outcomes; simulate.ts places their requests.

import { greatCircleKm } from '../core/latency.js';
import type { LatLon } from '../core/model.js';
import { deriveSeed, exponential, lognormal, lognormalFromMeanP95, seededRng } from '../core/rng.js';
import type { MobileClass, Scenario } from './scenario.js';
import { LogHistogram, round } from './stats.js';

/** A route as a polyline with the distance from its start to each point. */
export interface Route {
  readonly points: readonly LatLon[];
  readonly kmAt: readonly number[];
  readonly lengthKm: number;
}

export function routeOf(mobile: MobileClass, centroids: ReadonlyMap<string, LatLon>): Route {
  const points =
    'waypoints' in mobile.route
      ? mobile.route.waypoints
      : [mobile.route.from, mobile.route.to].map((region) => {
          const at = centroids.get(region);
          if (at === undefined)
            throw new Error(`mobile class ${mobile.name}: route region ${region} is not in the topology`);
          return at;
        });
  const kmAt = [0];
  for (let i = 1; i < points.length; i += 1)
    kmAt.push((kmAt[i - 1] as number) + greatCircleKm(points[i - 1] as LatLon, points[i] as LatLon));
  return { points, kmAt, lengthKm: kmAt[kmAt.length - 1] as number };
}

/** The point `km` along the route (clamped to its ends), straight in lat/lon within a segment. */
export function pointAt(route: Route, km: number): LatLon {
  const d = Math.max(0, Math.min(route.lengthKm, km));
  let i = 1;
  while (i < route.kmAt.length - 1 && (route.kmAt[i] as number) < d) i += 1;
  const a = route.points[i - 1] as LatLon;
  const b = route.points[i] as LatLon;
  const span = (route.kmAt[i] as number) - (route.kmAt[i - 1] as number);
  const f = span === 0 ? 0 : (d - (route.kmAt[i - 1] as number)) / span;
  return { lat: a.lat + (b.lat - a.lat) * f, lon: a.lon + (b.lon - a.lon) * f };
}

/** One request of a vehicle, drawn identically for every mode. */
export interface MobileRequest {
  readonly trip: number;
  readonly classIndex: number;
  /** 0 for the trip's first request. */
  readonly seq: number;
  /** The trip's last request: its session closes after it. */
  readonly last: boolean;
  readonly atMs: number;
  readonly position: LatLon;
  /** Distance along the route from its start. */
  readonly km: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly contextTokens: number;
  readonly rttFactor: number;
  readonly serviceFactor: number;
}

/** Every request of every trip in the scenario, by time. */
export function drawTrips(scenario: Scenario, centroids: ReadonlyMap<string, LatLon>): MobileRequest[] {
  const requests: MobileRequest[] = [];
  let trip = 0;
  const { rtt_jitter, service_noise } = scenario.network;
  scenario.demand.mobile.forEach((mobile, classIndex) => {
    const rng = seededRng(deriveSeed(scenario.seed, `mobile-${mobile.name}`));
    const route = routeOf(mobile, centroids);
    const input = lognormalFromMeanP95(mobile.input_tokens.mean, mobile.input_tokens.p95);
    const output = lognormalFromMeanP95(mobile.output_tokens.mean, mobile.output_tokens.p95);
    const gapMs = 60_000 / mobile.requests_per_minute;
    const kmPerMs = mobile.speed_kmh / 3_600_000;
    for (let t = exponential(rng, mobile.vehicles_per_hour / 3_600_000); t < scenario.duration; ) {
      const startKm = rng.next() * route.lengthKm;
      const direction = rng.next() < 0.5 ? 1 : -1;
      const toEndMs = (direction > 0 ? route.lengthKm - startKm : startKm) / kmPerMs;
      const endMs = Math.min(t + mobile.session_length, t + toEndMs, scenario.duration);
      const times: number[] = [];
      for (let at = t + rng.next() * gapMs; at < endMs; at += gapMs) times.push(at);
      times.forEach((at, seq) => {
        const km = startKm + direction * (at - t) * kmPerMs;
        requests.push({
          trip,
          classIndex,
          seq,
          last: seq === times.length - 1,
          atMs: at,
          position: pointAt(route, km),
          km,
          inputTokens: Math.max(1, Math.round(lognormal(rng, input.mu, input.sigma))),
          outputTokens: Math.max(1, Math.round(lognormal(rng, output.mu, output.sigma))),
          contextTokens: Math.min(
            mobile.context_tokens.max,
            mobile.context_tokens.start + seq * mobile.context_tokens.per_request,
          ),
          rttFactor: lognormal(rng, -(rtt_jitter * rtt_jitter) / 2, rtt_jitter),
          serviceFactor: lognormal(rng, -(service_noise * service_noise) / 2, service_noise),
        });
      });
      trip += 1;
      t += exponential(rng, mobile.vehicles_per_hour / 3_600_000);
    }
  });
  return requests.sort((a, b) => a.atMs - b.atMs || a.trip - b.trip || a.seq - b.seq);
}

/** Kilometres of route per bucket of the handover and SLO-miss histograms. */
export const ROUTE_BIN_KM = 25;

/** What the vehicles of one mode got. */
export class MobileOutcomes {
  requests = 0;
  placed = 0;
  sloMet = 0;
  handovers = 0;
  /** Context tokens prefilled again because the request went to another node than the last. */
  reprefilledTokens = 0;
  costCny = 0;
  vehicleMs = 0;
  readonly ttftMs = new LogHistogram();
  /** Route bucket (ROUTE_BIN_KM wide) → handovers there, and SLO misses there. */
  readonly handoversByKm = new Map<number, number>();
  readonly missesByKm = new Map<number, number>();

  handoverAt(km: number): void {
    this.handovers += 1;
    const bin = Math.floor(km / ROUTE_BIN_KM);
    this.handoversByKm.set(bin, (this.handoversByKm.get(bin) ?? 0) + 1);
  }

  missAt(km: number): void {
    const bin = Math.floor(km / ROUTE_BIN_KM);
    this.missesByKm.set(bin, (this.missesByKm.get(bin) ?? 0) + 1);
  }

  summary(): Record<string, unknown> {
    const hours = this.vehicleMs / 3_600_000;
    return {
      requests: this.requests,
      placed: this.placed,
      slo_attainment: round(this.requests === 0 ? 0 : this.sloMet / this.requests, 6),
      ttft_ms: {
        p50: round(this.ttftMs.quantile(0.5), 3),
        p95: round(this.ttftMs.quantile(0.95), 3),
        p99: round(this.ttftMs.quantile(0.99), 3),
      },
      handovers: this.handovers,
      handovers_per_vehicle_hour: round(hours === 0 ? 0 : this.handovers / hours, 3),
      reprefilled_tokens: this.reprefilledTokens,
      cost_cny: round(this.costCny, 6),
      vehicle_hours: round(hours, 3),
    };
  }
}
