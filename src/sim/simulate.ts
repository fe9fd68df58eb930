// One policy's run of a scenario: a discrete-event loop on a virtual clock. Arrivals come from a
// seeded stream that is the same for every policy (common random numbers), so differences between
// policies come from the policies alone. Every policy places through the same control plane,
// core pipeline and memory store as `cpn serve` (the policies differ only in ranking); a
// request's reservation is released when it completes.

import { requestCost } from '../core/cost.js';
import { DEFAULT_LATENCY_MODEL, estimateRtt } from '../core/latency.js';
import { findOffer, LEVELS, type Level, type ModelOffer, type NodeSpec } from '../core/model.js';
import type { PriceRule } from '../core/pricing.js';
import type { Reservation } from '../core/reservations.js';
import {
  deriveSeed,
  exponential,
  lognormal,
  lognormalFromMeanP95,
  type Rng,
  seededRng,
} from '../core/rng.js';
import {
  CHEAPEST_FEASIBLE,
  LEAST_LOADED,
  NEAREST,
  type RouteRequest,
  type RoutingPolicy,
  randomPolicy,
} from '../core/routing/index.js';
import type { Topology } from '../ops/topology.js';
import { ControlPlane } from '../plane/control-plane.js';
import { MemoryStore } from '../store/memory/memory-store.js';
import { type BatchingEvents, BatchingNode, type EngineJob } from './batching-node.js';
import { EventQueue } from './event-queue.js';
import { drawTrips, MobileOutcomes, type MobileRequest } from './mobility.js';
import {
  DEFAULT_DAILY_CURVE,
  type MobileClass,
  type MobilityMode,
  POPULATION_M,
  type PolicyName,
  type Scenario,
  type ScenarioEvent,
} from './scenario.js';
import { Station } from './station.js';
import { LogHistogram, Outcomes, type RejectionReason } from './stats.js';

const HOUR_MS = 3_600_000;
const SIM_TOKEN = '0'.repeat(16);
/** The Arrival field of a vehicle's job (never read: `mobile` is set). */
const NO_ARRIVAL: Arrival = {
  index: -1,
  atMs: 0,
  region: '',
  classIndex: -1,
  inputTokens: 0,
  cachedInputTokens: 0,
  outputTokens: 0,
  rttFactor: 1,
  serviceFactor: 1,
};
/** Simulated time 0 is this instant plus start_hour: midnight China time, so pricing windows line up. */
const EPOCH_MS = Date.UTC(2026, 0, 1) - 8 * HOUR_MS;

interface SimJob extends EngineJob {
  readonly serviceMs: number;
  readonly request: Arrival;
  /** A vehicle's request (measured apart from the scenario's classes). */
  readonly mobile?: { readonly request: MobileRequest; readonly budgetMs: number };
  readonly prefillMs: number;
  readonly rttMs: number;
  /** Its node's level, as an index in LEVELS (the busy-time arrays are indexed by it). */
  readonly levelIndex: number;
  /** Undefined for a session's request: the session holds its own slot. */
  readonly reservation: Reservation | undefined;
  readonly key: string;
  /** When it reached the node's station (its wait starts here). */
  readonly queuedAtMs: number;
  /** What serves it, once submitted (so that finishing it looks nothing up). */
  server: Server | undefined;
}

/** A node's model: a FIFO station at fixed rates, or measured engines (ModelOffer.engine). */
type Server = (
  | { readonly kind: 'station'; readonly station: Station<SimJob> }
  | { readonly kind: 'engines'; readonly node: BatchingNode<SimJob> }
) & {
  /** Busy slot-ms of its node after the warmup, shared by the node's servers. */
  readonly busy: { ms: number };
};

/** One simulated request, drawn identically for every policy. */
interface Arrival {
  readonly index: number;
  readonly atMs: number;
  readonly region: string;
  readonly classIndex: number;
  readonly inputTokens: number;
  readonly cachedInputTokens: number;
  readonly outputTokens: number;
  readonly rttFactor: number;
  readonly serviceFactor: number;
}

type SimEvent =
  | { readonly kind: 'arrival'; readonly arrival: Arrival }
  | { readonly kind: 'mobile'; readonly request: MobileRequest }
  | { readonly kind: 'finish'; readonly job: SimJob }
  | { readonly kind: 'event'; readonly apply: () => void };

export interface BucketSeries {
  readonly startMs: number;
  arrivals: number;
  placed: number;
  rejected: number;
  sloMet: number;
  costCny: number;
  ttftSumMs: number;
  ttftCount: number;
  readonly busySlotMs: Record<Level, number>;
}

export interface PolicyResult {
  readonly policy: PolicyName;
  readonly total: Outcomes;
  readonly byRegion: Map<string, Outcomes>;
  readonly byClass: Map<string, Outcomes>;
  /** By class, then by the region its requests came from. */
  readonly byClassRegion: Map<string, Map<string, Outcomes>>;
  /** Busy slot-milliseconds / available slot-milliseconds after warmup, per level. */
  readonly utilizationByLevel: Record<Level, number>;
  readonly buckets: BucketSeries[];
  readonly simulatedRequests: number;
  /** Busy slot-milliseconds per node after the warmup (jobs that started after it). */
  readonly busyByNode: ReadonlyMap<string, number>;
  /** With a mobility mode: how the scenario's vehicles fared under it. */
  readonly mobility?: MobilityMode;
  readonly mobile?: MobileOutcomes;
}

export type Progress = (simulatedMs: number, requests: number) => void;

/** Region weights: the scenario's, else population, restricted to regions the topology knows. */
function regionWeights(scenario: Scenario, topology: Topology): [string, number][] {
  const given = scenario.demand.region_weights;
  const regions = [...topology.regionCentroids.keys()].sort();
  return regions
    .map((region): [string, number] => [region, given ? (given[region] ?? 0) : (POPULATION_M[region] ?? 1)])
    .filter(([, w]) => w > 0);
}

/** A stretch of simulated time with one arrival rate and one set of region weights. */
interface Segment {
  readonly fromMs: number;
  readonly untilMs: number;
  /** The boundaries it was cut with (a segment is reused only for the same list). */
  readonly boundaries: readonly number[];
  readonly perMs: number;
  readonly weights: number[];
}

export class ArrivalStream {
  private readonly rng: Rng;
  private index = 0;
  private readonly curve: readonly number[];
  private readonly classShares: number[];
  private readonly classIndices: number[];
  private readonly regionNames: string[];
  private segment: Segment | undefined;
  private readonly tokenParams: {
    input: { mu: number; sigma: number };
    output: { mu: number; sigma: number };
  }[];

  constructor(
    private readonly scenario: Scenario,
    private readonly weights: [string, number][],
    private readonly surgeFactor: (region: string, atMs: number) => number,
  ) {
    this.rng = seededRng(deriveSeed(scenario.seed, 'arrivals'));
    this.curve = scenario.demand.daily_curve ?? DEFAULT_DAILY_CURVE;
    const totalShare = scenario.demand.classes.reduce((sum, c) => sum + c.share, 0);
    this.classShares = scenario.demand.classes.map((c) => c.share / totalShare);
    this.classIndices = this.classShares.map((_, i) => i);
    this.regionNames = weights.map(([region]) => region);
    this.tokenParams = scenario.demand.classes.map((c) => ({
      input: lognormalFromMeanP95(c.input_tokens.mean, c.input_tokens.p95),
      output: lognormalFromMeanP95(c.output_tokens.mean, c.output_tokens.p95),
    }));
  }

  /** Arrivals per ms at `atMs`, and the weights of regions then. */
  private rateAt(atMs: number): { perMs: number; weights: number[] } {
    const hour = Math.floor(this.scenario.demand.start_hour + atMs / HOUR_MS) % 24;
    const weights = this.weights.map(([region, weight]) => weight * this.surgeFactor(region, atMs));
    const base = this.weights.reduce((sum, [, w]) => sum + w, 0);
    const surged = weights.reduce((sum, w) => sum + w, 0);
    return {
      perMs: (this.scenario.demand.rate_per_s / 1000) * (this.curve[hour] ?? 1) * (surged / base),
      weights,
    };
  }

  /**
   * The rate segment holding `t`: rates are constant from one hour or event boundary to the next,
   * so an arrival reuses its segment's rate and weights instead of working them out again.
   */
  private segmentAt(t: number, boundaries: readonly number[]): Segment {
    const cached = this.segment;
    if (cached !== undefined && t >= cached.fromMs && t < cached.untilMs && cached.boundaries === boundaries)
      return cached;
    const { perMs, weights } = this.rateAt(t);
    const startMs = this.scenario.demand.start_hour * HOUR_MS;
    let untilMs = (Math.floor((t + startMs) / HOUR_MS) + 1) * HOUR_MS - startMs;
    for (const b of boundaries) if (b > t && b < untilMs) untilMs = b;
    this.segment = { fromMs: t, untilMs, boundaries, perMs, weights };
    return this.segment;
  }

  /** The next arrival after `fromMs` before `untilMs`, or undefined. Rates are piecewise constant between `boundaries`. */
  next(fromMs: number, untilMs: number, boundaries: readonly number[]): Arrival | undefined {
    let t = fromMs;
    for (;;) {
      const segment = this.segmentAt(t, boundaries);
      const { perMs, weights } = segment;
      const boundary = Math.min(segment.untilMs, untilMs);
      const gap = perMs > 0 ? exponential(this.rng, perMs) : Number.POSITIVE_INFINITY;
      if (t + gap >= boundary) {
        if (boundary >= untilMs) return undefined;
        t = boundary;
        continue;
      }
      t += gap;
      return this.draw(t, weights);
    }
  }

  private draw(atMs: number, weights: number[]): Arrival {
    const rng = this.rng;
    const region = pickWeighted(rng, weights, this.regionNames);
    const classIndex = pickWeighted(rng, this.classShares, this.classIndices);
    const cls = this.scenario.demand.classes[classIndex] as Scenario['demand']['classes'][number];
    const params = this.tokenParams[classIndex] as (typeof this.tokenParams)[number];
    const inputTokens = Math.max(1, Math.round(lognormal(rng, params.input.mu, params.input.sigma)));
    const outputTokens = Math.max(1, Math.round(lognormal(rng, params.output.mu, params.output.sigma)));
    const { rtt_jitter, service_noise } = this.scenario.network;
    return {
      index: this.index++,
      atMs,
      region,
      classIndex,
      inputTokens,
      cachedInputTokens: Math.floor(inputTokens * cls.cached_share),
      outputTokens,
      rttFactor: lognormal(rng, -(rtt_jitter * rtt_jitter) / 2, rtt_jitter),
      serviceFactor: lognormal(rng, -(service_noise * service_noise) / 2, service_noise),
    };
  }
}

function pickWeighted<T>(rng: Rng, weights: readonly number[], values: readonly T[]): T {
  const total = weights.reduce((sum, w) => sum + w, 0);
  let u = rng.next() * total;
  for (let i = 0; i < weights.length; i += 1) {
    u -= weights[i] as number;
    if (u < 0) return values[i] as T;
  }
  return values[values.length - 1] as T;
}

function windowed(event: ScenarioEvent, atMs: number): boolean {
  return 'for' in event && atMs >= event.at && atMs < event.at + event.for;
}

/** Runs one policy over the scenario. */
export async function runPolicy(
  scenario: Scenario,
  topology: Topology,
  policy: PolicyName,
  progress?: Progress,
  /** Also drive the scenario's vehicles, served this way (the classes still by `policy`). */
  mobility?: MobilityMode,
): Promise<PolicyResult> {
  let now = 0;
  const clock = () => EPOCH_MS + scenario.demand.start_hour * HOUR_MS + now;
  const latency = { ...DEFAULT_LATENCY_MODEL, regionCentroids: topology.regionCentroids };
  const store = new MemoryStore({ clock, latency, regionCentroids: topology.regionCentroids });
  const specs = new Map(topology.nodes.map((spec) => [spec.id, spec]));
  // Reservations live until the request completes: the simulated load is exact. The plane's
  // clocks are the virtual clock; usage is counted here, not metered into the store.
  const plane = new ControlPlane({
    store,
    clock,
    monotonicClock: clock,
    reservationTtlMs: 400 * 24 * HOUR_MS,
    replicaId: 'sim',
    latency,
    meterUsage: false,
    // One replica that never checks tokens: the id's sequence number already makes it unique.
    newReservationToken: () => SIM_TOKEN,
  });
  const register = async (nodes: readonly NodeSpec[]) => {
    for (const spec of nodes) await plane.registerNode(spec, { ttlS: 0, permanent: true });
  };
  await register(topology.nodes);
  const policyRng = seededRng(deriveSeed(scenario.seed, `policy-${policy}`));
  const routingPolicy: RoutingPolicy =
    policy === 'cheapest-feasible'
      ? CHEAPEST_FEASIBLE
      : policy === 'nearest'
        ? NEAREST
        : policy === 'least-loaded'
          ? LEAST_LOADED
          : randomPolicy(policyRng);

  // Scenario events.
  const events = scenario.events;
  const surgeFactor = (region: string, atMs: number) =>
    events.reduce(
      (f, e) => (e.kind === 'surge' && e.region === region && windowed(e, atMs) ? f * e.factor : f),
      1,
    );
  const linkPenaltyMs = (a: string, b: string, atMs: number) =>
    events.reduce(
      (ms, e) =>
        e.kind === 'link_degraded' && (e.region === a || e.region === b) && windowed(e, atMs)
          ? ms + e.add_ms
          : ms,
      0,
    );
  const queue = new EventQueue<SimEvent>();
  const boundaries: number[] = [];
  for (const [i, event] of events.entries()) {
    if (event.kind === 'price_change') {
      const rules = event.multipliers.map(
        (m): PriceRule => ({
          level: m.level,
          region: m.region,
          model: m.model,
          factor: m.factor,
          window: m.window
            ? { fromHour: Number(m.window.split('-')[0]), toHour: Number(m.window.split('-')[1]) }
            : undefined,
        }),
      );
      await plane.schedulePricing(
        { rules, utcOffsetHours: event.utc_offset_hours },
        clock() + event.at - now,
        `scenario-${i}`,
      );
      continue;
    }
    boundaries.push(event.at, event.at + event.for);
    if (event.kind === 'node_down' || event.kind === 'region_down') {
      const affected = topology.nodes.filter((n) =>
        event.kind === 'node_down' ? n.id === event.node : n.region === event.region,
      );
      queue.push(event.at, {
        kind: 'event',
        apply: () => affected.forEach((n) => void plane.deregisterNode(n.id)),
      });
      queue.push(event.at + event.for, {
        kind: 'event',
        apply: () => void register(affected),
      });
    }
  }

  // Measurement.
  const total = new Outcomes();
  const byRegion = new Map<string, Outcomes>();
  const byClass = new Map<string, Outcomes>();
  const byClassRegion = new Map<string, Map<string, Outcomes>>();
  /** Per class index, then region: the outcomes a request counts in (one array each, made once). */
  const countedIn: Map<string, readonly Outcomes[]>[] = scenario.demand.classes.map(() => new Map());
  const outcomesFor = (arrival: Arrival): readonly Outcomes[] => {
    const byRegionOfClass = countedIn[arrival.classIndex] as Map<string, readonly Outcomes[]>;
    const found = byRegionOfClass.get(arrival.region);
    if (found !== undefined) return found;
    const cls = scenario.demand.classes[arrival.classIndex]?.name ?? '?';
    const made = (map: Map<string, Outcomes>, key: string) => {
      let o = map.get(key);
      if (o === undefined) {
        o = new Outcomes();
        map.set(key, o);
      }
      return o;
    };
    let regions = byClassRegion.get(cls);
    if (regions === undefined) {
      regions = new Map();
      byClassRegion.set(cls, regions);
    }
    const counts = [total, made(byRegion, arrival.region), made(byClass, cls), made(regions, arrival.region)];
    byRegionOfClass.set(arrival.region, counts);
    return counts;
  };
  const counted = (arrival: Arrival) => arrival.atMs >= scenario.warmup;
  const bucketCount = Math.ceil(scenario.duration / scenario.bucket);
  const buckets: BucketSeries[] = Array.from({ length: bucketCount }, (_, i) => ({
    startMs: i * scenario.bucket,
    arrivals: 0,
    placed: 0,
    rejected: 0,
    sloMet: 0,
    costCny: 0,
    ttftSumMs: 0,
    ttftCount: 0,
    busySlotMs: { CENTER: 0, PROVINCE: 0, EDGE: 0, TERMINAL: 0 },
  }));
  const bucketAt = (atMs: number) =>
    buckets[Math.min(bucketCount - 1, Math.floor(atMs / scenario.bucket))] as BucketSeries;
  const slotsByLevel: Record<Level, number> = { CENTER: 0, PROVINCE: 0, EDGE: 0, TERMINAL: 0 };
  for (const spec of topology.nodes)
    for (const offer of spec.models) slotsByLevel[spec.level] += offer.maxConcurrency;
  // Busy slots and slot-time by level index (LEVELS order), per bucket in one array: the two
  // updates of every request touch numbers, not objects keyed by level name.
  const levelCount = LEVELS.length;
  const busy = new Float64Array(levelCount);
  /** Busy slot-ms per node after the warmup: one box per node, reached from its servers. */
  const busyBoxes = new Map<string, { ms: number }>();
  const busyBoxOf = (nodeId: string) => {
    let box = busyBoxes.get(nodeId);
    if (box === undefined) {
      box = { ms: 0 };
      busyBoxes.set(nodeId, box);
    }
    return box;
  };
  const busyAfterWarmup = new Float64Array(levelCount);
  const bucketBusy = new Float64Array(bucketCount * levelCount);
  let integratedTo = 0;
  /** Adds busy slot-time up to `toMs`; called before `busy` changes (and at the end), not per event. */
  const integrate = (toMs: number) => {
    const end = Math.min(toMs, scenario.duration);
    while (integratedTo < end) {
      let bucketEnd = Math.min(end, (Math.floor(integratedTo / scenario.bucket) + 1) * scenario.bucket);
      // A stretch that crosses the end of the warm-up counts after it from there on.
      if (integratedTo < scenario.warmup) bucketEnd = Math.min(bucketEnd, scenario.warmup);
      const dt = bucketEnd - integratedTo;
      const at = Math.min(bucketCount - 1, Math.floor(integratedTo / scenario.bucket)) * levelCount;
      const afterWarmup = integratedTo >= scenario.warmup;
      for (let level = 0; level < levelCount; level += 1) {
        const slotMs = (busy[level] as number) * dt;
        bucketBusy[at + level] = (bucketBusy[at + level] as number) + slotMs;
        if (afterWarmup) busyAfterWarmup[level] = (busyAfterWarmup[level] as number) + slotMs;
      }
      integratedTo = bucketEnd;
    }
  };
  /** `delta` more (or fewer) slots busy at the level of index `level` from now. */
  const busier = (level: number, delta: number) => {
    if (integratedTo < now) integrate(now);
    busy[level] = (busy[level] as number) + delta;
  };

  // Each node's model's server, by key.
  const servers = new Map<string, Server>();
  const admittedAt = new Map<SimJob, number>();
  const engineEvents: BatchingEvents<SimJob> = {
    schedule: (atMs, fn) => queue.push(atMs, { kind: 'event', apply: fn }),
    admitted: (job, atMs) => {
      busier(job.levelIndex, 1);
      admittedAt.set(job, atMs);
    },
    firstToken: (job, atMs) => measure(job, job.rttMs + (atMs - job.queuedAtMs)),
    done: (job, atMs) => {
      busier(job.levelIndex, -1);
      const start = admittedAt.get(job) ?? atMs;
      admittedAt.delete(job);
      if (start >= scenario.warmup) (job.server as Server).busy.ms += atMs - start;
      if (job.reservation !== undefined) plane.freeHeld(job.reservation);
    },
  };
  /** A server's key (node and model), one string per offer. */
  const keys = new Map<ModelOffer, string>();
  /**
   * A request's job on a node's offer: its tokens (what measured engines use) and, for a
   * fixed-rate station, its prefill and decode times at the offer's rates × the request's noise.
   */
  const jobOn = (
    offer: ModelOffer,
    spec: NodeSpec,
    nodeId: string,
    work: Pick<
      SimJob,
      'request' | 'mobile' | 'prefillTokens' | 'contextTokens' | 'outputTokens' | 'rttMs' | 'reservation'
    > & { readonly serviceFactor: number },
  ): SimJob => {
    const prefillMs = (work.prefillTokens / offer.prefillTokensPerS) * 1000 * work.serviceFactor;
    const decodeMs = (work.outputTokens / offer.decodeTokensPerS) * 1000 * work.serviceFactor;
    let key = keys.get(offer);
    if (key === undefined) {
      key = `${nodeId}\u0000${offer.model}`;
      keys.set(offer, key);
    }
    // Field by field: a spread of `work` per request was a tenth of the simulator's time.
    return {
      request: work.request,
      mobile: work.mobile,
      prefillTokens: work.prefillTokens,
      contextTokens: work.contextTokens,
      outputTokens: work.outputTokens,
      rttMs: work.rttMs,
      reservation: work.reservation,
      serviceMs: prefillMs + decodeMs,
      prefillMs,
      levelIndex: LEVELS.indexOf(spec.level),
      key,
      queuedAtMs: now,
      server: undefined,
    };
  };
  /** Hands a job to its node: true when accepted (started or queued), false when the queue is full. */
  const submit = (job: SimJob, nodeId: string, model: string): boolean => {
    let server = servers.get(job.key);
    if (server === undefined) {
      const offer = findOffer(specs.get(nodeId) as NodeSpec, model);
      server =
        offer?.engine === undefined
          ? {
              kind: 'station',
              station: new Station<SimJob>(offer?.maxConcurrency ?? 1, offer?.maxQueue ?? 0),
              busy: busyBoxOf(nodeId),
            }
          : {
              kind: 'engines',
              node: BatchingNode.of<SimJob>(offer.engine, offer.maxQueue, engineEvents),
              busy: busyBoxOf(nodeId),
            };
      servers.set(job.key, server);
    }
    job.server = server;
    if (server.kind === 'engines') return server.node.arrive(job, now) === 'accepted';
    const outcome = server.station.arrive(job, now);
    if (outcome.kind === 'rejected') return false;
    if (outcome.kind === 'started') {
      started(job, 0);
      queue.push(outcome.finishMs, { kind: 'finish', job });
    }
    return true;
  };

  const reject = (arrival: Arrival, reason: RejectionReason) => {
    if (!counted(arrival)) return;
    for (const o of outcomesFor(arrival)) o.rejected[reason] += 1;
    bucketAt(arrival.atMs).rejected += 1;
  };

  /** A fixed-rate station started the job after `waitMs`: it holds a slot, and its TTFT is known. */
  const started = (job: SimJob, waitMs: number) => {
    busier(job.levelIndex, 1);
    measure(job, job.rttMs + waitMs + job.prefillMs);
  };

  /** Records a request's measured TTFT. */
  const measure = (job: SimJob, ttftMs: number) => {
    if (job.mobile !== undefined) {
      const { request: req, budgetMs } = job.mobile;
      if (req.atMs < scenario.warmup || mobile === undefined) return;
      mobile.ttftMs.record(ttftMs);
      if (ttftMs <= budgetMs) mobile.sloMet += 1;
      else mobile.missAt(req.km);
      return;
    }
    const { request } = job;
    if (!counted(request)) return;
    const met = ttftMs <= (scenario.demand.classes[request.classIndex]?.latency_budget_ms ?? 0);
    const bucketOfTtft = LogHistogram.bucketOf(ttftMs);
    for (const o of outcomesFor(request)) {
      o.ttftMs.recordBucket(bucketOfTtft);
      if (met) o.sloMet += 1;
    }
    const bucket = bucketAt(request.atMs);
    bucket.ttftSumMs += ttftMs;
    bucket.ttftCount += 1;
    if (met) bucket.sloMet += 1;
  };

  const place = (arrival: Arrival) => {
    const cls = scenario.demand.classes[arrival.classIndex] as Scenario['demand']['classes'][number];
    const request: RouteRequest = {
      requestId: '',
      tenant: '',
      model: cls.model,
      client: { region: arrival.region, accessPoint: '', location: undefined },
      latencyBudgetMs: cls.latency_budget_ms,
      inputTokens: arrival.inputTokens,
      cachedInputTokens: arrival.cachedInputTokens,
      maxOutputTokens: arrival.outputTokens,
      allowedLevels: cls.allowed_levels ?? [],
      allowedRegions: [],
      allowDegraded: false,
      explain: false,
      maxFallbacks: 0,
    };
    const result = plane.route(request, { policy: routingPolicy });
    const { decision, reservation } = result;
    if (decision.kind !== 'placed' || reservation === undefined) {
      reject(arrival, decision.kind === 'infeasible' ? decision.reason : 'ALL_FULL');
      return;
    }
    const { placement } = decision;
    const nodeId = placement.nodeId;
    const spec = specs.get(nodeId) as NodeSpec;
    const offer = findOffer(spec, cls.model);
    if (offer === undefined)
      throw new Error(`policy ${policy} placed ${cls.model} on ${nodeId}, which does not serve it`);
    const rttMs =
      placement.estimate.networkRttMs * arrival.rttFactor + linkPenaltyMs(arrival.region, spec.region, now);
    const job = jobOn(offer, spec, nodeId, {
      request: arrival,
      prefillTokens: arrival.inputTokens - arrival.cachedInputTokens,
      contextTokens: arrival.inputTokens,
      outputTokens: arrival.outputTokens,
      serviceFactor: arrival.serviceFactor,
      rttMs,
      reservation,
    });
    // The request reaches the node after half a round trip; we model its queue from arrival for simplicity.
    if (!submit(job, nodeId, cls.model)) {
      plane.freeHeld(reservation);
      reject(arrival, 'NODE_QUEUE_FULL');
      return;
    }
    if (counted(arrival)) {
      const cost = placement.estimate.cost;
      for (const o of outcomesFor(arrival)) {
        o.placed += 1;
        o.costCny += cost;
        o.inputTokens += arrival.inputTokens;
        o.cachedInputTokens += arrival.cachedInputTokens;
        o.outputTokens += arrival.outputTokens;
      }
      const bucket = bucketAt(arrival.atMs);
      bucket.placed += 1;
      bucket.costCny += cost;
    }
  };

  const finish = (job: SimJob) => {
    busier(job.levelIndex, -1);
    // Per node, for the report's map: slot-ms of jobs that started after the warmup.
    const server = job.server as Server;
    if (now - job.serviceMs >= scenario.warmup) server.busy.ms += job.serviceMs;
    if (job.reservation !== undefined) plane.freeHeld(job.reservation);
    const next = server.kind === 'station' ? server.station.finish(now) : undefined;
    if (next !== undefined) {
      started(next.job, now - next.job.queuedAtMs);
      queue.push(next.finishMs, { kind: 'finish', job: next.job });
    }
  };

  // Vehicles: the same trips whatever the mode (drawn from their own seeded streams).
  const mobile = mobility === undefined ? undefined : new MobileOutcomes();
  const trips = new Map<number, { nodeId?: string; sessionId?: string; lastAtMs?: number }>();
  if (mobility !== undefined)
    for (const request of drawTrips(scenario, topology.regionCentroids))
      queue.push(request.atMs, { kind: 'mobile', request });
  const placeMobile = async (req: MobileRequest) => {
    const cls = scenario.demand.mobile[req.classIndex] as MobileClass;
    const state = trips.get(req.trip) ?? {};
    trips.set(req.trip, state);
    const counts = req.atMs >= scenario.warmup && mobile !== undefined;
    if (counts) {
      mobile.requests += 1;
      if (state.lastAtMs !== undefined) mobile.vehicleMs += req.atMs - state.lastAtMs;
    }
    state.lastAtMs = req.atMs;
    const client = { region: '', accessPoint: '', location: req.position };
    const cold: RouteRequest = {
      requestId: '',
      tenant: '',
      model: cls.model,
      client,
      latencyBudgetMs: cls.latency_budget_ms,
      inputTokens: req.inputTokens + req.contextTokens,
      cachedInputTokens: 0,
      maxOutputTokens: req.outputTokens,
      allowedLevels: cls.allowed_levels ?? [],
      allowedRegions: [],
      allowDegraded: false,
      explain: false,
      maxFallbacks: 0,
    };
    let nodeId: string | undefined;
    let reservation: Reservation | undefined;
    let warm = false;
    /**
     * Routed from scratch. Per request, the client declares its context as cached (as clients do
     * for prefix caching), which holds only if the node it lands on is the one it was on; a
     * sticky client re-pins with nothing cached.
     */
    const routeCold = () => {
      const declared = mobility === 'per-request' ? { ...cold, cachedInputTokens: req.contextTokens } : cold;
      const routed = plane.route(declared, { policy: CHEAPEST_FEASIBLE });
      if (routed.decision.kind !== 'placed' || routed.reservation === undefined) return;
      nodeId = routed.decision.placement.nodeId;
      reservation = routed.reservation;
      warm = nodeId === state.nodeId;
    };
    const previous = state.nodeId;
    if (mobility === 'per-request') routeCold();
    else if (mobility === 'sticky') {
      const pinned = state.nodeId === undefined ? undefined : store.getNode(state.nodeId);
      if (pinned !== undefined && findOffer(pinned.spec, cls.model) !== undefined && !pinned.draining) {
        nodeId = pinned.spec.id;
        reservation = plane.reserveOn(nodeId, cls.model, '');
        warm = true;
      } else routeCold();
    } else if (state.sessionId === undefined) {
      const opened = await plane.sessions.open({
        tenant: '',
        model: cls.model,
        client,
        latencyBudgetMs: cls.latency_budget_ms,
        inputTokens: req.inputTokens,
        maxOutputTokens: req.outputTokens,
        contextTokens: req.contextTokens,
        allowedLevels: cls.allowed_levels ?? [],
        allowedRegions: [],
        motion: {},
        ttlS: 3600,
      });
      if (opened.kind === 'opened') {
        state.sessionId = opened.session.record.id;
        nodeId = opened.session.record.nodeId;
      }
    } else {
      const updated = await plane.sessions.update({
        tenant: '',
        id: state.sessionId,
        client,
        contextTokens: req.contextTokens,
        motion: undefined,
      });
      if (updated.kind === 'updated') {
        nodeId = updated.session.record.nodeId;
        warm = updated.session.handover === undefined && nodeId === state.nodeId;
      }
    }
    if (mobility === 'sessions' && req.last && state.sessionId !== undefined) {
      await plane.sessions.close('', state.sessionId);
      state.sessionId = undefined;
    }
    const spec = nodeId === undefined ? undefined : specs.get(nodeId);
    const offer = spec === undefined ? undefined : findOffer(spec, cls.model);
    if (spec === undefined || offer === undefined || nodeId === undefined) {
      if (counts) mobile.missAt(req.km);
      return;
    }
    if (previous !== undefined && nodeId !== previous) {
      if (counts) {
        mobile.handoverAt(req.km);
        mobile.reprefilledTokens += req.contextTokens;
      }
    }
    state.nodeId = nodeId;
    const rttMs =
      estimateRtt(client, spec, latency, store.view.samplesFrom, clock()).rttMs * req.rttFactor +
      linkPenaltyMs(spec.region, spec.region, now);
    const job = jobOn(offer, spec, nodeId, {
      request: NO_ARRIVAL,
      mobile: { request: req, budgetMs: cls.latency_budget_ms },
      prefillTokens: req.inputTokens + (warm ? 0 : req.contextTokens),
      contextTokens: req.inputTokens + req.contextTokens,
      outputTokens: req.outputTokens,
      serviceFactor: req.serviceFactor,
      rttMs,
      reservation,
    });
    if (!submit(job, nodeId, cls.model)) {
      if (reservation !== undefined) plane.freeHeld(reservation);
      if (counts) mobile.missAt(req.km);
      return;
    }
    if (counts) {
      mobile.placed += 1;
      mobile.costCny += requestCost(
        {
          inputTokens: req.inputTokens + req.contextTokens,
          cachedInputTokens: warm ? req.contextTokens : 0,
          maxOutputTokens: req.outputTokens,
        },
        offer.price,
        1,
      );
    }
  };

  const stream = new ArrivalStream(scenario, regionWeights(scenario, topology), surgeFactor);
  const scheduleNextArrival = (fromMs: number) => {
    const arrival = stream.next(fromMs, scenario.duration, boundaries);
    if (arrival) queue.push(arrival.atMs, { kind: 'arrival', arrival });
  };
  scheduleNextArrival(0);

  let simulated = 0;
  let nextProgressMs = 0;
  for (let item = queue.pop(); item !== undefined; item = queue.pop()) {
    now = item.timeMs;
    const event = item.event;
    if (event.kind === 'arrival') {
      simulated += 1;
      if (counted(event.arrival)) {
        for (const o of outcomesFor(event.arrival)) o.requests += 1;
        bucketAt(event.arrival.atMs).arrivals += 1;
      }
      place(event.arrival);
      scheduleNextArrival(now);
    } else if (event.kind === 'mobile') {
      simulated += 1;
      await placeMobile(event.request);
    } else if (event.kind === 'finish') {
      finish(event.job);
    } else {
      event.apply();
    }
    if (progress && now >= nextProgressMs) {
      progress(Math.min(now, scenario.duration), simulated);
      nextProgressMs = now + scenario.duration / 200;
    }
  }
  integrate(scenario.duration);
  progress?.(scenario.duration, simulated);
  for (const [b, bucket] of buckets.entries())
    for (const [level, name] of LEVELS.entries())
      bucket.busySlotMs[name] = bucketBusy[b * levelCount + level] as number;

  const measuredMs = scenario.duration - scenario.warmup;
  const utilizationByLevel = Object.fromEntries(
    LEVELS.map((level) => [
      level,
      slotsByLevel[level] === 0
        ? 0
        : (busyAfterWarmup[LEVELS.indexOf(level)] as number) / (slotsByLevel[level] * measuredMs),
    ]),
  ) as Record<Level, number>;
  return {
    policy,
    total,
    byRegion,
    byClass,
    byClassRegion,
    utilizationByLevel,
    buckets,
    simulatedRequests: simulated,
    busyByNode: new Map(Array.from(busyBoxes, ([nodeId, box]) => [nodeId, box.ms])),
    ...(mobility === undefined ? {} : { mobility, mobile }),
  };
}
