// The candidate index and its best-first search must never change a decision: over random
// registries — a few price tiers or one price per node, time-of-use multipliers, measured RTTs that
// beat or lose to coordinates, nodes on both sides of the antimeridian and near the poles, every
// constraint, updates after the index was built — the decision equals a plain scan of every node
// written here, independently of the pipeline: same placement, same fallbacks in order, same
// degraded pick, same reason and best TTFT. Counts are exact with explain, and lower bounds with
// the documented remainder (`unevaluated`) without.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_LATENCY_MODEL, type LatencyModel, type LatencySample } from '../../src/core/latency.js';
import { LEVELS, type Level, type NodeRecord } from '../../src/core/model.js';
import { type PriceRule, policyMultiplier } from '../../src/core/pricing.js';
import type { Reservation, ReservationBook } from '../../src/core/reservations.js';
import { seededRng } from '../../src/core/rng.js';
import {
  CandidateIndex,
  DEFAULT_LEAF_SIZES,
  DEFAULT_SEARCH_TUNING,
  decideRoute,
  type Estimate,
  estimateOn,
  LEAST_LOADED,
  type LeafSizes,
  MIXED_TREE,
  NEAREST,
  PLACE_TREE,
  PRICE_TREE,
  type RejectionVerdict,
  type RouteContext,
  type RouteDecision,
  type RouteRequest,
  type RoutingView,
  randomPolicy,
  type SearchTuning,
  type TreePricing,
} from '../../src/core/routing/index.js';
import { drawnRequest, FLAT_LATENCY, loadedRecord, book as newBook, offer } from '../helpers/fixtures.js';

const NOW = Date.UTC(2026, 5, 1, 3, 0, 0);
const MODELS = ['m', 'n'];
const REGIONS = ['CN-GD', 'CN-SC', 'US-AK', 'NZ-CH'];
/**
 * More regions than a cell has region bits for (31 of their own, the rest sharing one): the
 * cross-region penalty a cell's bound adds must stay a lower bound for every client region.
 */
const MANY_REGIONS = [...REGIONS, ...Array.from({ length: 36 }, (_, i) => `R-${String(i).padStart(2, '0')}`)];

const CENTROIDS: LatencyModel = {
  ...DEFAULT_LATENCY_MODEL,
  regionCentroids: new Map([
    ['CN-GD', { lat: 23.1, lon: 113.3 }],
    ['NZ-CH', { lat: -43.5, lon: 172.6 }],
  ]),
};

/**
 * Overheads and region defaults far larger than real ones: a reach that ends a hair past a large
 * RTT, where a margin relative to what is left of the reach would be smaller than the rounding.
 */
const BIG: LatencyModel = {
  ...CENTROIDS,
  accessOverheadMs: { CENTER: 300.1, PROVINCE: 100.3, EDGE: 7.7, TERMINAL: 0.1 },
  crossRegionPenaltyMs: 17.3,
  sameRegionRttMs: 1000.7,
  crossRegionRttMs: 4567.1,
};

/**
 * Where nodes and clients are: China, around the antimeridian, near either pole, at a region's
 * very centroid, and (as a programmatic caller may give them) coordinates that are not numbers.
 */
const placeArb = fc.oneof(
  fc.constant({ lat: 23.1, lon: 113.3 }),
  fc.constant({ lat: Number.NaN, lon: 113.3 }),
  fc.constant({ lat: 23.1, lon: Number.POSITIVE_INFINITY }),
  // A province: dense enough that cells split and a budget's reach cuts through them.
  fc.record({
    lat: fc.double({ min: 21, max: 25, noNaN: true }),
    lon: fc.double({ min: 110, max: 116, noNaN: true }),
  }),
  fc.record({
    lat: fc.double({ min: 18, max: 50, noNaN: true }),
    lon: fc.double({ min: 75, max: 130, noNaN: true }),
  }),
  fc.record({
    lat: fc.double({ min: -60, max: 65, noNaN: true }),
    lon: fc.oneof(
      fc.double({ min: 175, max: 180, noNaN: true }),
      fc.double({ min: -180, max: -175, noNaN: true }),
    ),
  }),
  fc.record({
    lat: fc.oneof(
      fc.double({ min: 84, max: 90, noNaN: true }),
      fc.double({ min: -90, max: -84, noNaN: true }),
    ),
    lon: fc.double({ min: -180, max: 180, noNaN: true }),
  }),
);

type PriceMode = 'flat' | 'tiers' | 'distinct';

const priceArb = (mode: PriceMode) =>
  mode === 'flat'
    ? fc.constant({ inputPerMtok: 2, outputPerMtok: 8, cachedInputPerMtok: 0.2 })
    : mode === 'tiers'
      ? fc.record({
          inputPerMtok: fc.constantFrom(1, 2, 4),
          outputPerMtok: fc.constantFrom(4, 8),
          cachedInputPerMtok: fc.constantFrom(0.1, 0.4),
        })
      : fc.record({
          inputPerMtok: fc.double({ min: 0.2, max: 5, noNaN: true }),
          outputPerMtok: fc.double({ min: 0.5, max: 20, noNaN: true }),
          cachedInputPerMtok: fc.double({ min: 0, max: 1, noNaN: true }),
        });

const nodeArb = (index: number, mode: PriceMode, mixed: boolean, regions: readonly string[]) =>
  fc
    .record({
      place: fc.option(placeArb, { freq: 6 }),
      // Mostly one level and region, so that groups are large enough to hold trees; or every
      // (level, region) mixed, so that cells hold more groups than they list.
      level: mixed ? fc.constantFrom(...LEVELS) : fc.constantFrom('EDGE', 'EDGE', 'EDGE', ...LEVELS),
      region: mixed ? fc.constantFrom(...regions) : fc.constantFrom('CN-GD', 'CN-GD', 'CN-GD', ...regions),
      models: fc.subarray(MODELS, { minLength: 1 }),
      prices: fc.tuple(priceArb(mode), priceArb(mode)),
      maxConcurrency: fc.integer({ min: 1, max: 4 }),
      maxQueue: fc.integer({ min: 0, max: 2 }),
      // Whole rates, and rates a 32-bit float cannot hold (the index keeps rates rounded up in one).
      prefill: fc.oneof(
        fc.constantFrom(10_000, 40_000, 160_000),
        fc.integer({ min: 5_000, max: 200_000 }),
        fc.double({ min: 5_000, max: 200_000, noNaN: true }),
        // Far faster and far slower than any engine: prefills that round to nothing or to ages.
        fc.double({ min: 1e6, max: 1e18, noNaN: true }),
        fc.double({ min: 1, max: 100, noNaN: true }),
      ),
      active: fc.integer({ min: 0, max: 6 }),
      draining: fc.boolean(),
      silentMs: fc.constantFrom(0, 0, 0, 0, 60_000),
      healthy: fc.constantFrom(true, true, true, true, false),
    })
    .map((n): NodeRecord => {
      const base = loadedRecord(
        {
          id: `node-${String(index).padStart(3, '0')}`,
          level: n.level,
          region: n.region,
          draining: n.draining,
          offers: n.models.map((model, i) =>
            offer({
              model,
              maxConcurrency: n.maxConcurrency,
              maxQueue: n.maxQueue,
              prefillTokensPerS: n.prefill,
              price: n.prices[i],
            }),
          ),
          active: n.active,
          healthy: n.healthy,
          silentMs: n.silentMs,
        },
        NOW,
      );
      return { ...base, spec: { ...base.spec, location: n.place ?? undefined } };
    });

const ruleArb = fc.record({
  level: fc.option(fc.constantFrom(...LEVELS), { nil: undefined }),
  region: fc.option(fc.constantFrom(...REGIONS), { nil: undefined }),
  model: fc.option(fc.constantFrom(...MODELS), { nil: undefined }),
  factor: fc.constantFrom(0.3, 0.5, 0.8, 1.2, 2),
  window: fc.option(fc.constantFrom({ fromHour: 0, toHour: 8 }, { fromHour: 22, toHour: 6 }), {
    nil: undefined,
  }),
});

const scenarioArb = fc
  .record({
    count: fc.integer({ min: 1, max: 120 }),
    mode: fc.constantFrom<PriceMode>('flat', 'tiers', 'distinct'),
    mixed: fc.boolean(),
    manyRegions: fc.boolean(),
  })
  .chain(({ count, mode, mixed, manyRegions }) =>
    fc.record({
      nodes: fc.tuple(
        ...Array.from({ length: count }, (_, i) =>
          nodeArb(i, mode, mixed, manyRegions ? MANY_REGIONS : REGIONS),
        ),
      ),
      samples: fc.array(
        fc.record({
          node: fc.nat(count - 1),
          from: fc.constantFrom('ap-1', 'CN-GD'),
          rttMs: fc.double({ min: 0.2, max: 400, noNaN: true }),
          stale: fc.boolean(),
        }),
        { maxLength: 10 },
      ),
      rules: fc.array(ruleArb, { maxLength: 3 }),
      reservations: fc.array(fc.record({ node: fc.nat(count - 1), model: fc.constantFrom(...MODELS) }), {
        maxLength: 6,
      }),
      // Updates after the index was built: removals and re-registrations at a new price.
      // Enough of them, sometimes, to trigger a rebuild (more than 32 + √n pending changes).
      removed: fc.array(fc.nat(count - 1), { maxLength: 45 }),
      repriced: fc.array(fc.record({ node: fc.nat(count - 1), factor: fc.constantFrom(0.5, 3) }), {
        maxLength: 45,
      }),
      readded: fc.array(fc.nat(count - 1), { maxLength: 10 }),
      explainCap: fc.constantFrom(3, 40, 1000),
      // The trees were first built for decisions this many hours earlier: priced for another
      // time-of-use window, sometimes, which a decision now must not trust.
      builtHoursBefore: fc.constantFrom(0, 0, 3, 6, 9, 13),
      // Rate tiers (the fastest half, quarter… of a model's nodes in trees of their own) split
      // out at the default size, or at any size so that these small registries have them.
      minTierNodes: fc.constantFrom(256, 1, 3),
      // Leaves as built (up to 32 nodes, so these registries make shallow trees), small enough
      // that they make deep ones, or larger than a walk's first leaf queue (32), which then grows.
      leafSizes: fc.constantFrom<LeafSizes>(
        DEFAULT_LEAF_SIZES,
        [2, 2, 2],
        [3, 5, 2],
        [8, 8, 8],
        [48, 64, 40],
      ),
      // Which tree the cost search walks changes its work, never its answer: as chosen, always
      // the price tree, never it, and the price tree given up after one cell (a fresh start), the
      // next request of its kind then sent straight to the mixed tree (or not: no retry count).
      tuning: fc.constantFrom<SearchTuning | undefined>(
        undefined,
        { priceTreeReach: 0, priceTreeMaxCells: Number.POSITIVE_INFINITY },
        { priceTreeReach: Number.POSITIVE_INFINITY, priceTreeMaxCells: 0 },
        { priceTreeReach: 0, priceTreeMaxCells: 1 },
        { priceTreeReach: 0, priceTreeMaxCells: 1, priceTreeRetryAfter: 4 },
      ),
      client: fc.record({
        place: fc.option(placeArb, { freq: 4 }),
        region: fc.constantFrom('CN-GD', 'NZ-CH', 'XX-NONE', 'R-03', 'R-33', 'R-35'),
        accessPoint: fc.constantFrom('', 'ap-1'),
      }),
      request: fc.record({
        model: fc.constantFrom(...MODELS),
        budget: fc.oneof(
          fc.integer({ min: 1, max: 60 }),
          fc.integer({ min: 60, max: 400 }),
          fc.integer({ min: 400, max: 3000 }),
          fc.double({ min: 0.5, max: 500, noNaN: true }),
        ),
        input: fc.oneof(
          fc.integer({ min: 0, max: 400 }),
          fc.integer({ min: 0, max: 8000 }),
          fc.integer({ min: 1, max: 3 }),
          fc.integer({ min: 1_000_000, max: 100_000_000 }),
        ),
        cachedShare: fc.double({ min: 0, max: 1, noNaN: true }),
        output: fc.integer({ min: 0, max: 2000 }),
        levels: fc.subarray([...LEVELS]),
        regions: fc.subarray(REGIONS),
        degraded: fc.boolean(),
        fallbacks: fc.integer({ min: 0, max: 4 }),
        explain: fc.boolean(),
      }),
      latency: fc.constantFrom(FLAT_LATENCY, DEFAULT_LATENCY_MODEL, CENTROIDS, BIG),
    }),
  );

type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never;

interface Judged {
  readonly node: NodeRecord;
  readonly verdict: RejectionVerdict | 'FEASIBLE';
  readonly estimate: Estimate | undefined;
  readonly hasSlot: boolean;
  /** Share of the offer's slots and queue in use (estimated nodes only). */
  readonly share?: number;
}

/** The routing rule of DESIGN §3, one node at a time, over every node. */
function fullScan(
  nodes: readonly NodeRecord[],
  req: RouteRequest,
  ctx: RouteContext,
  reservations: ReservationBook,
) {
  const judged: Judged[] = [];
  let live = 0;
  for (const node of nodes) {
    const o = node.spec.models.find((x) => x.model === req.model);
    if (o === undefined) continue;
    const down = ctx.nowMs > node.expiresAtMs;
    const state = down
      ? 'DOWN'
      : node.status !== undefined && !node.status.healthy
        ? 'UNHEALTHY'
        : node.draining
          ? 'DRAINING'
          : 'READY';
    if (state === 'READY' || state === 'DRAINING') live += 1;
    const reject = (verdict: RejectionVerdict) =>
      judged.push({ node, verdict, estimate: undefined, hasSlot: false });
    if (req.allowedLevels.length > 0 && !req.allowedLevels.includes(node.spec.level))
      reject('LEVEL_EXCLUDED');
    else if (req.allowedRegions.length > 0 && !req.allowedRegions.includes(node.spec.region))
      reject('REGION_EXCLUDED');
    else if (state !== 'READY') reject(state);
    else {
      const load =
        (node.status?.load.find((l) => l.model === req.model)?.active ?? 0) +
        (node.status?.load.find((l) => l.model === req.model)?.queued ?? 0) +
        reservations.pending(node.spec.id, req.model, node.statusAtMs);
      const estimate = estimateOn(req, node, o, load, ctx);
      const hasSlot = load < o.maxConcurrency + o.maxQueue;
      const verdict =
        estimate.networkRttMs + estimate.prefillMs > req.latencyBudgetMs
          ? 'OVER_BUDGET'
          : !hasSlot
            ? 'AT_CAPACITY'
            : estimate.ttftMs > req.latencyBudgetMs
              ? 'QUEUE_OVER_BUDGET'
              : 'FEASIBLE';
      judged.push({ node, verdict, estimate, hasSlot, share: load / (o.maxConcurrency + o.maxQueue) });
    }
  }
  const id = (j: Judged) => j.node.spec.id;
  const byId = (a: Judged, b: Judged) => (id(a) < id(b) ? -1 : id(a) > id(b) ? 1 : 0);
  const est = (j: Judged) => j.estimate as Estimate;
  const feasible = judged
    .filter((j) => j.verdict === 'FEASIBLE')
    .sort((a, b) => est(a).cost - est(b).cost || est(a).ttftMs - est(b).ttftMs || byId(a, b));
  const estimated = judged.filter((j) => j.estimate !== undefined);
  const byTtft = (a: Judged, b: Judged) =>
    est(a).ttftMs - est(b).ttftMs || est(a).cost - est(b).cost || byId(a, b);
  const degraded = estimated.filter((j) => j.hasSlot).sort(byTtft)[0];
  const rejected: Partial<Record<RejectionVerdict, number>> = {};
  for (const j of judged) if (j.verdict !== 'FEASIBLE') rejected[j.verdict] = (rejected[j.verdict] ?? 0) + 1;
  const full = (rejected.AT_CAPACITY ?? 0) + (rejected.QUEUE_OVER_BUDGET ?? 0);
  return {
    judged,
    feasible,
    degraded,
    serving: judged.length,
    rejected,
    bestTtftMs: estimated.length === 0 ? undefined : Math.min(...estimated.map((j) => est(j).ttftMs)),
    reason: live === 0 ? 'NO_LIVE_NODE' : full > 0 ? 'ALL_FULL' : 'NO_NODE_WITHIN_CONSTRAINTS',
  };
}

/** Builds every tree of a model, so that later updates land on built trees. */
function buildTrees(candidates: ReturnType<CandidateIndex['candidates']>, pricing: TreePricing): void {
  candidates?.tree(PLACE_TREE);
  candidates?.tree(MIXED_TREE, pricing);
  candidates?.tree(PRICE_TREE, pricing);
}

function setUp(s: Scenario) {
  // Build the index, search it once (so its trees exist), then apply updates on top.
  const index = new CandidateIndex(s.minTierNodes, s.leafSizes);
  const multiplier = policyMultiplier({ rules: s.rules as PriceRule[], utcOffsetHours: 8 });
  const builtFor: TreePricing = { multiplier, nowMs: NOW - s.builtHoursBefore * 3_600_000 };
  let nodes = [...s.nodes] as NodeRecord[];
  for (const node of nodes) index.put(node);
  for (const model of MODELS) buildTrees(index.candidates(model), builtFor);
  for (const i of s.removed) {
    const id = (s.nodes[i] as NodeRecord).spec.id;
    index.remove(id);
    nodes = nodes.filter((node) => node.spec.id !== id);
  }
  for (const { node: i, factor } of s.repriced) {
    const current = nodes.find((node) => node.spec.id === (s.nodes[i] as NodeRecord).spec.id);
    if (current === undefined) continue;
    const models = current.spec.models.map((o) => ({
      ...o,
      price: {
        ...o.price,
        inputPerMtok: o.price.inputPerMtok * factor,
        outputPerMtok: o.price.outputPerMtok * factor,
      },
    }));
    const updated = { ...current, spec: { ...current.spec, models } };
    index.put(updated);
    nodes = nodes.map((node) => (node === current ? updated : node));
  }
  // A removed node registered again under the same id.
  for (const i of s.readded) {
    const original = s.nodes[i] as NodeRecord;
    if (nodes.some((node) => node.spec.id === original.spec.id)) continue;
    index.put(original);
    nodes.push(original);
  }
  for (const model of MODELS) buildTrees(index.candidates(model), builtFor);
  const samples = new Map<string, Map<string, LatencySample>>();
  for (const sample of s.samples) {
    const nodeId = (s.nodes[sample.node] as NodeRecord).spec.id;
    if (!samples.has(sample.from)) samples.set(sample.from, new Map());
    samples.get(sample.from)?.set(nodeId, {
      rttMs: sample.rttMs,
      updatedAtMs: sample.stale ? NOW - 3_600_000 : NOW - 1000,
      count: 1,
    });
  }
  const view: RoutingView = {
    candidates: (model) => index.candidates(model),
    allNodes: () => nodes,
    nodeCount: () => nodes.length,
    samplesFrom: (from) => samples.get(from),
  };
  const reservations = newBook();
  const held = s.reservations.map((r) =>
    reservations.reserve((s.nodes[r.node] as NodeRecord).spec.id, r.model, 't', NOW, 0),
  );
  const r = s.request;
  const client = s.client;
  const req = drawnRequest(
    { ...r, levels: r.levels as Level[] },
    {
      client: { region: client.region, accessPoint: client.accessPoint, location: client.place ?? undefined },
      explain: r.explain,
    },
  );
  const ctx: RouteContext = {
    view,
    reservations,
    latency: s.latency,
    priceMultiplier: multiplier,
    nowMs: NOW,
    maxExplainNodes: s.explainCap,
    searchTuning: s.tuning,
  };
  return { nodes, req, ctx, reservations, index, held };
}

/** Expects `decision` to be what a full scan decides: placement, fallbacks, degraded pick, reason, counts. */
function expectAsFullScan(
  decision: RouteDecision,
  req: RouteRequest,
  scan: ReturnType<typeof fullScan>,
): void {
  const k = 1 + req.maxFallbacks;
  if (decision.kind === 'refused') throw new Error('no admission rule was given');
  if (scan.feasible.length > 0) {
    expect(decision.kind).toBe('placed');
    if (decision.kind !== 'placed') return;
    expect(decision.degraded).toBe(false);
    expect(decision.placement.nodeId).toBe(scan.feasible[0]?.node.spec.id);
    expect(decision.placement.estimate).toEqual(scan.feasible[0]?.estimate);
    expect(decision.fallbacks.map((f) => f.nodeId)).toEqual(
      scan.feasible.slice(1, k).map((j) => j.node.spec.id),
    );
  } else if (req.allowDegraded && scan.degraded !== undefined) {
    expect(decision).toMatchObject({ kind: 'placed', degraded: true, fallbacks: [] });
    if (decision.kind === 'placed') expect(decision.placement.nodeId).toBe(scan.degraded.node.spec.id);
  } else {
    expect(decision.kind).toBe('infeasible');
    if (decision.kind !== 'infeasible') return;
    expect(decision.reason).toBe(scan.reason);
    expect(decision.bestTtftMs).toBe(scan.bestTtftMs);
  }
  const { counts } = decision;
  expect(counts.serving).toBe(scan.serving);
  let rejectedTotal = 0;
  for (const [verdict, count] of Object.entries(counts.rejected)) {
    rejectedTotal += count;
    expect(count).toBeLessThanOrEqual(scan.rejected[verdict as RejectionVerdict] ?? 0);
  }
  expect(counts.feasible).toBeLessThanOrEqual(scan.feasible.length);
  expect(counts.unevaluated).toBeGreaterThanOrEqual(0);
  expect(counts.feasible + rejectedTotal + counts.unevaluated).toBe(scan.serving);
  expect(counts.truncated).toBe(false);
  // Level and region exclusions come from the index's groups: always exact.
  expect(counts.rejected.LEVEL_EXCLUDED).toBe(scan.rejected.LEVEL_EXCLUDED);
  expect(counts.rejected.REGION_EXCLUDED).toBe(scan.rejected.REGION_EXCLUDED);
  if (req.explain && decision.explainOmitted === 0) {
    // Explain evaluated every node: the counts are a full scan's.
    expect(counts.unevaluated).toBe(0);
    expect(counts.rejected).toEqual(scan.rejected);
    expect(counts.feasible).toBe(scan.feasible.length);
    expect(decision.explain.filter((e) => e.verdict !== 'MODEL_NOT_SERVED')).toHaveLength(scan.serving);
  }
}

/** What a decision answers, without the counts (which depend on the work done). */
function answerOf(decision: RouteDecision) {
  if (decision.kind === 'placed')
    return {
      kind: decision.kind,
      degraded: decision.degraded,
      placement: decision.placement,
      fallbacks: decision.fallbacks,
    };
  if (decision.kind === 'infeasible')
    return { kind: decision.kind, reason: decision.reason, bestTtftMs: decision.bestTtftMs };
  return { kind: decision.kind };
}

/** A full scan's order for the simulator's ranked baselines: their key, then the node id. */
const BASELINES = {
  nearest: { policy: NEAREST, key: (j: Judged) => (j.estimate as Estimate).networkRttMs },
  'least-loaded': { policy: LEAST_LOADED, key: (j: Judged) => j.share as number },
} as const;

/** Expects `decision`, by baseline `name`, to rank as a full scan in that baseline's order. */
function expectAsBaseline(
  decision: RouteDecision,
  req: RouteRequest,
  scan: ReturnType<typeof fullScan>,
  name: keyof typeof BASELINES,
): void {
  const { key } = BASELINES[name];
  const id = (j: Judged) => j.node.spec.id;
  const ranked = scan.judged
    .filter((j) => j.verdict === 'FEASIBLE')
    .sort((a, b) => key(a) - key(b) || (id(a) < id(b) ? -1 : id(a) > id(b) ? 1 : 0));
  if (decision.kind === 'refused') throw new Error('no admission rule was given');
  if (ranked.length === 0) {
    if (!req.allowDegraded || scan.degraded === undefined) expect(decision.kind).toBe('infeasible');
    return;
  }
  expect(decision.kind).toBe('placed');
  if (decision.kind !== 'placed') return;
  expect(decision.placement.nodeId).toBe(id(ranked[0] as Judged));
  expect(decision.fallbacks.map((f) => f.nodeId)).toEqual(ranked.slice(1, 1 + req.maxFallbacks).map(id));
  expect(decision.counts.feasible).toBeLessThanOrEqual(ranked.length);
}

describe('candidate index (property)', () => {
  it("ranks as a full scan does for the simulator's nearest and least-loaded baselines", () => {
    fc.assert(
      fc.property(scenarioArb, fc.constantFrom('nearest', 'least-loaded' as const), (s, name) => {
        const { nodes, req, ctx, reservations } = setUp(s);
        const decision = decideRoute(req, { ...ctx, policy: BASELINES[name].policy });
        expectAsBaseline(decision, req, fullScan(nodes, req, ctx, reservations), name);
      }),
      { numRuns: 300 },
    );
  });

  it('the random baseline places on a node a full scan finds feasible, and counts within it', () => {
    fc.assert(
      fc.property(scenarioArb, fc.integer({ min: 1, max: 1000 }), (s, seed) => {
        const { nodes, req: drawn, ctx, reservations } = setUp(s);
        // The simulator's requests: no fallbacks, no explain (the policy then draws nodes).
        const req = { ...drawn, maxFallbacks: 0, explain: false };
        const decision = decideRoute(req, { ...ctx, policy: randomPolicy(seededRng(seed)) });
        const scan = fullScan(nodes, req, ctx, reservations);
        if (decision.kind === 'refused') throw new Error('no admission rule was given');
        const feasible = new Set(scan.feasible.map((j) => j.node.spec.id));
        if (feasible.size === 0) {
          if (!req.allowDegraded || scan.degraded === undefined) expect(decision.kind).toBe('infeasible');
        } else {
          expect(decision.kind).toBe('placed');
          if (decision.kind === 'placed') expect(feasible.has(decision.placement.nodeId)).toBe(true);
        }
        const { counts } = decision;
        let rejectedTotal = 0;
        for (const [verdict, count] of Object.entries(counts.rejected)) {
          rejectedTotal += count;
          expect(count).toBeLessThanOrEqual(scan.rejected[verdict as RejectionVerdict] ?? 0);
        }
        expect(counts.feasible).toBeLessThanOrEqual(feasible.size);
        expect(counts.unevaluated).toBeGreaterThanOrEqual(0);
        expect(counts.feasible + rejectedTotal + counts.unevaluated).toBe(scan.serving);
      }),
      { numRuns: 300 },
    );
  });

  it('decides exactly as a full scan of every node', () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const { nodes, req, ctx, reservations } = setUp(s);
        const decision = decideRoute(req, ctx);
        // Decided again: when the price tree gave up the first time, this one skips it (see
        // SearchTuning.priceTreeRetryAfter). The work differs, the answer must not.
        expect(answerOf(decideRoute(req, ctx))).toEqual(answerOf(decision));
        expectAsFullScan(decision, req, fullScan(nodes, req, ctx, reservations));
      }),
      { numRuns: 600 },
    );
  });

  it('decides and counts the same whether a walk bounds cells and nodes in one pass or through the general calls', () => {
    // The one-pass bounds (SearchTuning.onePassBounds) copy what the general calls work out; a
    // difference in a rounding or a tie rule shows here as a different walk, hence different counts,
    // long before it changes an answer a full scan would catch. Half the budgets sit on a node's
    // reach, where a bound a hair off moves a node across it.
    fc.assert(
      fc.property(scenarioArb, fc.nat(5), fc.boolean(), (drawn, k, onEdge) => {
        // Without allowed levels or regions: a walk with exclusions never takes the one-pass path.
        const s = { ...drawn, request: { ...drawn.request, levels: [], regions: [] } };
        const onePass = setUp(s);
        let req = onePass.req;
        if (onEdge) {
          const open = { ...req, latencyBudgetMs: Number.MAX_VALUE };
          const edges = fullScan(onePass.nodes, open, onePass.ctx, onePass.reservations)
            .judged.filter((j) => j.estimate !== undefined)
            .map((j) => (j.estimate as Estimate).networkRttMs + (j.estimate as Estimate).prefillMs)
            .sort((a, b) => a - b);
          if (edges.length > 0)
            req = { ...req, latencyBudgetMs: edges[Math.min(k, edges.length - 1)] as number };
        }
        const general = setUp(s);
        const generalCtx = {
          ...general.ctx,
          searchTuning: { ...(s.tuning ?? DEFAULT_SEARCH_TUNING), onePassBounds: false },
        };
        const a = decideRoute(req, onePass.ctx);
        const b = decideRoute(req, generalCtx);
        expect(answerOf(a)).toEqual(answerOf(b));
        expect(a.kind === 'refused' ? undefined : a.counts).toEqual(
          b.kind === 'refused' ? undefined : b.counts,
        );
      }),
      { numRuns: 400 },
    );
  });

  it("decides as a full scan when the budget is exactly some node's RTT plus prefill (its reach's very edge)", () => {
    // Random budgets seldom fall within a hair of a node: these put one node on the edge of the
    // reach, where a bound a little too tight (a cell's distance, a node's, its prefill) loses it.
    // The baselines walk the place tree, whose leaves mix levels; the cost search, the others.
    fc.assert(
      fc.property(
        scenarioArb,
        fc.nat(5),
        fc.constantFrom('cheapest', 'nearest', 'least-loaded' as const),
        (s, k, name) => {
          const { nodes, req: drawn, ctx, reservations } = setUp(s);
          const open = { ...drawn, latencyBudgetMs: Number.MAX_VALUE };
          const reach = (j: Judged) =>
            (j.estimate as Estimate).networkRttMs + (j.estimate as Estimate).prefillMs;
          const edges = fullScan(nodes, open, ctx, reservations)
            .judged.filter((j) => j.estimate !== undefined)
            .map(reach)
            .sort((a, b) => a - b);
          if (edges.length === 0) return;
          const req = { ...drawn, latencyBudgetMs: edges[Math.min(k, edges.length - 1)] as number };
          const scan = fullScan(nodes, req, ctx, reservations);
          if (name === 'cheapest') expectAsFullScan(decideRoute(req, ctx), req, scan);
          else
            expectAsBaseline(decideRoute(req, { ...ctx, policy: BASELINES[name].policy }), req, scan, name);
        },
      ),
      { numRuns: 900 },
    );
  });

  it('decides as a full scan after loads fall: what earlier decisions learnt of loads is forgotten', () => {
    // Earlier decisions keep, per node, the load they saw, and later ones pass over a node whose
    // queue alone puts it past their budget (see LoadFloors). Loads then fall every way they can:
    // a release, an expiry, a status report saying less.
    const fallArb = fc.record({
      // Reservations piled on a few nodes of the requested model, so that their queues count.
      piles: fc.array(fc.record({ node: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }), { maxLength: 4 }),
      released: fc.array(fc.nat(), { maxLength: 12 }),
      releaseAll: fc.boolean(),
      expireAll: fc.boolean(),
      reported: fc.array(fc.nat(), { maxLength: 8 }),
    });
    fc.assert(
      fc.property(scenarioArb, fallArb, (s, fall) => {
        const { nodes, req, ctx, reservations, index, held } = setUp(s);
        const all = [...held];
        for (const pile of fall.piles) {
          const node = nodes[pile.node % Math.max(1, nodes.length)];
          if (node === undefined) continue;
          for (let k = 0; k < pile.count; k += 1)
            all.push(reservations.reserve(node.spec.id, req.model, 't', NOW, 0));
        }
        // Loose and tight decisions first, so that floors are kept for many nodes.
        decideRoute(
          { ...req, latencyBudgetMs: 1e6, maxFallbacks: 3, allowedLevels: [], allowedRegions: [] },
          ctx,
        );
        decideRoute(req, ctx);
        expectAsFullScan(decideRoute(req, ctx), req, fullScan(nodes, req, ctx, reservations));
        for (const i of fall.released)
          if (all.length > 0) reservations.free(all[i % all.length] as Reservation);
        if (fall.releaseAll) for (const reservation of all) reservations.free(reservation);
        if (fall.expireAll) reservations.expire(Number.MAX_SAFE_INTEGER);
        let now = nodes;
        for (const i of fall.reported) {
          const current = now[i % Math.max(1, now.length)];
          if (current?.status === undefined) continue;
          // The same report time: only the load it says changes (to nothing).
          const idle = {
            ...current,
            status: {
              ...current.status,
              load: current.status.load.map((l) => ({ ...l, active: 0, queued: 0 })),
            },
          };
          index.put(idle);
          now = now.map((node) => (node === current ? idle : node));
        }
        // At the drawn budget and looser ones, where more queued nodes fit.
        for (const latencyBudgetMs of [
          req.latencyBudgetMs,
          req.latencyBudgetMs * 3,
          req.latencyBudgetMs * 10,
        ]) {
          const again = { ...req, latencyBudgetMs };
          expectAsFullScan(decideRoute(again, ctx), again, fullScan(now, again, ctx, reservations));
        }
      }),
      { numRuns: 400 },
    );
  });
});
