import { describe, expect, it } from 'vitest';
import { requestCost } from '../../src/core/cost.js';
import { policyMultiplier } from '../../src/core/pricing.js';
import { seededRng } from '../../src/core/rng.js';
import { CandidateIndex } from '../../src/core/routing/candidate-index.js';
import {
  CHECKS,
  decideRoute,
  LEAST_LOADED,
  NEAREST,
  PHASE_ORDER,
  type RouteContext,
  type RouteDecision,
  randomPolicy,
  VERDICT_ORDER,
  type Verdict,
} from '../../src/core/routing/index.js';
import {
  context,
  FLAT_LATENCY,
  GUANGZHOU,
  book as newBook,
  offer,
  record,
  request,
  view,
} from '../helpers/fixtures.js';

function placedOn(decision: RouteDecision): string {
  if (decision.kind !== 'placed')
    throw new Error(`expected a placement, got ${decision.kind}: ${decision.summary}`);
  return decision.placement.nodeId;
}

function verdictOf(decision: RouteDecision, nodeId: string): Verdict | undefined {
  if (decision.kind === 'refused') return undefined;
  return decision.explain.find((entry) => entry.nodeId === nodeId)?.verdict;
}

/** A node whose `active` requests fill `slots` slots and whose queue holds `queue` more places. */
function busyNode(id: string, slots: number, active: number, queue = 0) {
  return record({
    id,
    offers: [offer({ maxConcurrency: slots, maxQueue: queue })],
    status: {
      load: [{ model: 'm', active, queued: 0 }],
      gpuUtilization: 1,
      kvCacheUtilization: 1,
      healthy: true,
    },
  });
}

/** A node `km` from Guangzhou whose one slot is taken and which has no queue. */
function full(id: string, km: number) {
  return record({
    id,
    km,
    offers: [offer({ maxConcurrency: 1, maxQueue: 0 })],
    status: {
      load: [{ model: 'm', active: 1, queued: 0 }],
      gpuUtilization: 1,
      kvCacheUtilization: 1,
      healthy: true,
    },
  });
}

/** `ctx` with its reservations' pending reads counted (each node a search reads the load of). */
function countingReads(ctx: RouteContext): { ctx: RouteContext; reads: () => number } {
  let reads = 0;
  return {
    ctx: {
      ...ctx,
      reservations: {
        pending: (...args: Parameters<RouteContext['reservations']['pending']>) => {
          reads += 1;
          return ctx.reservations.pending(...args);
        },
      },
    },
    reads: () => reads,
  };
}

describe('decideRoute: cheapest feasible', () => {
  // FLAT_LATENCY: RTT = km / 100 ms; prefill of 1000 tokens at 10k tok/s = 100 ms.
  const cases = [
    {
      name: 'the cheapest feasible node wins',
      nodes: [record({ id: 'near-dear', km: 0, price: 2 }), record({ id: 'far-cheap', km: 500, price: 1 })],
      budgetMs: 1000,
      want: 'far-cheap',
    },
    {
      name: 'an over-budget node is never chosen even when cheaper',
      nodes: [record({ id: 'near-dear', km: 0, price: 2 }), record({ id: 'far-cheap', km: 6000, price: 1 })],
      budgetMs: 150,
      want: 'near-dear',
    },
    {
      name: 'equal cost: the lower TTFT wins',
      nodes: [record({ id: 'a-far', km: 300 }), record({ id: 'b-near', km: 100 })],
      budgetMs: 1000,
      want: 'b-near',
    },
    {
      name: 'equal cost and TTFT: the smaller id wins, whatever the input order',
      nodes: [record({ id: 'node-b' }), record({ id: 'node-c' }), record({ id: 'node-a' })],
      budgetMs: 1000,
      want: 'node-a',
    },
    {
      name: 'a node exactly at the budget is feasible',
      nodes: [record({ id: 'exact', km: 0, price: 1 })],
      budgetMs: 100,
      want: 'exact',
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(placedOn(decideRoute(request({ latencyBudgetMs: c.budgetMs }), context(c.nodes)))).toBe(c.want);
    });
  }

  it('returns ordered fallbacks, at most max_fallbacks, and marks them in explain', () => {
    const nodes = [1, 2, 3, 4, 5].map((price) => record({ id: `n${price}`, price }));
    const decision = decideRoute(request({ maxFallbacks: 3 }), context(nodes));
    expect(placedOn(decision)).toBe('n1');
    if (decision.kind !== 'placed') return;
    expect(decision.fallbacks.map((f) => f.nodeId)).toEqual(['n2', 'n3', 'n4']);
    expect(verdictOf(decision, 'n4')).toBe('FALLBACK');
    expect(verdictOf(decision, 'n5')).toBe('FEASIBLE');
    expect(decision.counts.feasible).toBe(5);
  });

  it('applies the price multiplier (time-of-use pricing) before comparing', () => {
    const nodes = [record({ id: 'a', price: 1 }), record({ id: 'b', price: 1.5, region: 'CN-GX' })];
    const offPeakB = { at: (node: { region: string }) => (node.region === 'CN-GX' ? 0.5 : 1) };
    const decision = decideRoute(request(), context(nodes, { priceMultiplier: offPeakB }));
    expect(placedOn(decision)).toBe('b');
  });

  it('a long prompt on a tight budget takes the slowest node fast enough, among many faster', () => {
    // 1200 nodes in one place, each faster and dearer than the one before: the rate tiers (the
    // fastest half, quarter… of the nodes in trees of their own) must not leave out the cheapest
    // node that fits, whichever tier the budget selects.
    const rateOf = (i: number) => 10_000 + 25 * i;
    const idOf = (i: number) => `n-${String(i).padStart(4, '0')}`;
    const nodes = Array.from({ length: 1200 }, (_, i) =>
      record({
        id: idOf(i),
        offers: [offer({ prefillTokensPerS: rateOf(i), price: { inputPerMtok: 1 + i / 1200 } })],
      }),
    );
    const ctx = context(nodes);
    // 1000 prompt tokens, no RTT: node i fits when 1000 / rate ≤ the budget.
    for (let k = 0; k < 40; k += 1) {
      const budgetMs = 25.5 + 1.77 * k;
      const want = nodes.findIndex((_, i) => (1000 / rateOf(i)) * 1000 <= budgetMs);
      const decision = decideRoute(request({ latencyBudgetMs: budgetMs, explain: false }), ctx);
      expect(placedOn(decision), `budget ${budgetMs} ms`).toBe(idOf(want));
    }
  });

  it('a time-of-use window that opens after the index was searched still wins', () => {
    // Enough nodes for cells to be pruned by price: the trees are keyed by the prices in force
    // when a decision first searches them, and must not be trusted once a window opens.
    const nodes = [
      ...Array.from({ length: 64 }, (_, i) => record({ id: `gd-${i}`, price: 1, permanent: true })),
      ...Array.from({ length: 64 }, (_, i) =>
        record({ id: `gx-${i}`, price: 1.5, region: 'CN-GX', permanent: true }),
      ),
    ];
    const dayDiscount = policyMultiplier({
      utcOffsetHours: 8,
      rules: [
        {
          level: undefined,
          region: 'CN-GX',
          model: undefined,
          factor: 0.5,
          window: { fromHour: 8, toHour: 20 },
        },
      ],
    });
    const night = context(nodes, { priceMultiplier: dayDiscount, nowMs: Date.UTC(2026, 0, 1, 19) });
    expect(placedOn(decideRoute(request({ explain: false }), night))).toBe('gd-0');
    const noon = { ...night, nowMs: Date.UTC(2026, 0, 2, 4) };
    expect(placedOn(decideRoute(request({ explain: false }), noon))).toBe('gx-0');
    expect(placedOn(decideRoute(request({ explain: false }), night))).toBe('gd-0');
    // Decisions keep each group's factor while the policy says it holds: up to the millisecond
    // of the window's edges, both ways, and the cost is the factor's of that millisecond.
    const at = (nowMs: number) => {
      const decision = decideRoute(request({ explain: false }), { ...night, nowMs });
      if (decision.kind !== 'placed') throw new Error(decision.summary);
      return decision;
    };
    for (const [nowMs, node, factor] of [
      [Date.UTC(2026, 0, 2, 0) - 1, 'gd-0', 1],
      [Date.UTC(2026, 0, 2, 0), 'gx-0', 0.5],
      [Date.UTC(2026, 0, 2, 12) - 1, 'gx-0', 0.5],
      [Date.UTC(2026, 0, 2, 12), 'gd-0', 1],
      [Date.UTC(2026, 0, 2, 0) - 1, 'gd-0', 1],
    ] as const) {
      const decision = at(nowMs);
      expect(decision.placement.nodeId, new Date(nowMs).toISOString()).toBe(node);
      const price = node === 'gd-0' ? 1 : 1.5;
      expect(decision.placement.estimate.cost).toBeCloseTo(
        (1000 * price * factor + 100 * 4 * factor) / 1e6,
        12,
      );
    }
  });
});

describe('the checks list', () => {
  it('runs phases in order: what the index answers, then the record, then the estimate', () => {
    const phases = CHECKS.map((check) => PHASE_ORDER.indexOf(check.phase));
    expect(phases.every((phase) => phase >= 0)).toBe(true);
    expect([...phases].sort((a, b) => a - b)).toEqual(phases);
  });

  it('derives the explain order: chosen first, then the checks read backwards', () => {
    expect(VERDICT_ORDER.slice(0, 4)).toEqual(['SELECTED', 'DEGRADED_SELECTED', 'FALLBACK', 'FEASIBLE']);
    expect(VERDICT_ORDER.slice(4)).toEqual(CHECKS.map((check) => check.verdict).reverse());
    expect(new Set(VERDICT_ORDER).size).toBe(VERDICT_ORDER.length);
  });

  it('a node failing several checks gets the first one in list order', () => {
    // Draining, at an excluded level and far over budget: the level check comes first.
    const bad = record({ id: 'bad', level: 'CENTER', draining: true, km: 9000 });
    const decision = decideRoute(
      request({ allowedLevels: ['PROVINCE'], latencyBudgetMs: 150 }),
      context([bad, record({ id: 'good' })]),
    );
    expect(verdictOf(decision, 'bad')).toBe('LEVEL_EXCLUDED');
  });
});

describe('decideRoute: admission, explain cap and bounded counts', () => {
  it('an admission rule refuses before any node is looked at', () => {
    const decision = decideRoute(request(), {
      ...context([record({ id: 'n' })]),
      admission: [
        () => ({ rule: 'quota', message: 'tenant t is over its monthly quota', retryAfterMs: 5000 }),
      ],
    });
    expect(decision).toMatchObject({ kind: 'refused', refusal: { rule: 'quota' } });
    expect(decision.summary).toContain('refused by quota: tenant t is over its monthly quota');
  });

  it('explain stops at the cap, keeps the chosen node and says how many it left out', () => {
    const nodes = Array.from({ length: 30 }, (_, i) =>
      record({ id: `n${String(i).padStart(2, '0')}`, price: 30 - i }),
    );
    const decision = decideRoute(request(), context(nodes, { maxExplainNodes: 10 }));
    if (decision.kind !== 'placed') throw new Error(decision.summary);
    expect(decision.placement.nodeId).toBe('n29');
    expect(decision.explain).toHaveLength(10);
    expect(decision.explainOmitted).toBe(20);
    expect(decision.explain[0]).toMatchObject({ nodeId: 'n29', verdict: 'SELECTED' });
    expect(decision.summary).toContain('20 left out by the explain cap');
  });

  it('without explain, nodes too far for the budget are counted but not evaluated', () => {
    const far = Array.from({ length: 40 }, (_, i) => record({ id: `far-${i}`, km: 4000 + i * 10 }));
    const nodes = [record({ id: 'near', draining: true }), ...far];
    const decision = decideRoute(
      request({ explain: false, latencyBudgetMs: 20, inputTokens: 100 }),
      context(nodes),
    );
    if (decision.kind !== 'infeasible') throw new Error(decision.summary);
    const { counts } = decision;
    expect(decision.reason).toBe('NO_NODE_WITHIN_CONSTRAINTS');
    expect(counts.serving).toBe(41);
    expect(counts.evaluated).toBeLessThan(41);
    expect(counts.rejected.DRAINING).toBe(1);
    expect(counts.unevaluated).toBe(41 - counts.evaluated);
    // The nearest ready node: 2 × 4000 km / 200 km/ms + 10 ms of prefill.
    expect(decision.bestTtftMs).toBeCloseTo(50, 0);
    expect(decision.summary).toContain('1 draining');
    expect(decision.summary).toContain('(best 49.9 ms)');
    expect(decision.summary).toMatch(
      /\d+ too far to meet the budget( \(best 49\.9 ms\))? \(not evaluated\)$/,
    );
  });
});

describe('decideRoute: exclusions carry the right verdict', () => {
  const nowMs = 100_000;
  const good = record({ id: 'good', price: 5 }, nowMs);
  const cases: {
    name: string;
    bad: ReturnType<typeof record>;
    overrides?: Parameters<typeof request>[0];
    verdict: Verdict;
  }[] = [
    { name: 'draining', bad: record({ id: 'bad', price: 1, draining: true }, nowMs), verdict: 'DRAINING' },
    {
      name: 'down (silent past its TTL)',
      bad: record({ id: 'bad', price: 1, lastSeenMs: nowMs - 31_000, ttlS: 30 }, nowMs),
      verdict: 'DOWN',
    },
    {
      name: 'unhealthy',
      bad: record(
        {
          id: 'bad',
          price: 1,
          status: { load: [], gpuUtilization: 0, kvCacheUtilization: 0, healthy: false },
        },
        nowMs,
      ),
      verdict: 'UNHEALTHY',
    },
    {
      name: 'wrong model',
      bad: record({ id: 'bad', offers: [offer({ model: 'other', price: { inputPerMtok: 0.01 } })] }, nowMs),
      verdict: 'MODEL_NOT_SERVED',
    },
    {
      name: 'wrong level',
      bad: record({ id: 'bad', price: 1, level: 'CENTER' }, nowMs),
      overrides: { allowedLevels: ['PROVINCE'] },
      verdict: 'LEVEL_EXCLUDED',
    },
    {
      name: 'wrong region',
      bad: record({ id: 'bad', price: 1, region: 'CN-GZ' }, nowMs),
      overrides: { allowedRegions: ['CN-GD'] },
      verdict: 'REGION_EXCLUDED',
    },
  ];
  for (const c of cases) {
    it(`${c.name} → ${c.verdict}`, () => {
      const decision = decideRoute(request(c.overrides), context([c.bad, good], { nowMs }));
      expect(placedOn(decision)).toBe('good');
      expect(verdictOf(decision, 'bad')).toBe(c.verdict);
    });
  }

  it('a permanent node never goes DOWN however long it is silent', () => {
    const node = record({ id: 'static', permanent: true, lastSeenMs: 0 });
    expect(placedOn(decideRoute(request(), context([node], { nowMs: 10 * 86_400_000 })))).toBe('static');
  });
});

describe('decideRoute: estimates', () => {
  it('a measured sample overrides the coordinate estimate; a stale one does not', () => {
    const node = record({ id: 'n', km: 0, permanent: true }, 0);
    const fresh = decideRoute(
      request(),
      context([node], { samples: { 'CN-GD|n': { rttMs: 80, updatedAtMs: 0, count: 3 } } }),
    );
    expect(fresh.kind === 'placed' && fresh.placement.estimate).toMatchObject({
      networkRttMs: 80,
      latencySource: 'MEASURED',
    });
    const stale = decideRoute(
      request(),
      context([node], { nowMs: 6 * 60_000, samples: { 'CN-GD|n': { rttMs: 80, updatedAtMs: 0, count: 3 } } }),
    );
    expect(stale.kind === 'placed' && stale.placement.estimate.latencySource).toBe('COORDINATES');
  });

  it('an access-point sample wins over a region sample', () => {
    const node = record({ id: 'n' });
    const samples = {
      'ap-7|n': { rttMs: 2, updatedAtMs: 0, count: 1 },
      'CN-GD|n': { rttMs: 40, updatedAtMs: 0, count: 1 },
    };
    const client = { region: 'CN-GD', accessPoint: 'ap-7', location: undefined };
    const decision = decideRoute(request({ client }), context([node], { samples }));
    expect(decision.kind === 'placed' && decision.placement.estimate.networkRttMs).toBe(2);
  });

  it('prices cache-hit tokens at the cache rate and skips their prefill', () => {
    const node = record({
      id: 'n',
      offers: [offer({ price: { inputPerMtok: 2, cachedInputPerMtok: 0.2, outputPerMtok: 8 } })],
    });
    const decision = decideRoute(
      request({ inputTokens: 1000, cachedInputTokens: 600, maxOutputTokens: 100 }),
      context([node]),
    );
    if (decision.kind !== 'placed') throw new Error(decision.summary);
    expect(decision.placement.estimate.cost).toBeCloseTo((400 * 2 + 600 * 0.2 + 100 * 8) / 1e6, 12);
    expect(decision.placement.estimate.prefillMs).toBeCloseTo(40, 9);
  });

  it('adds the expected queue wait when every slot is taken', () => {
    // 4 slots all busy; this request is 1st in the queue: waits 1/4 of a service time (100 ms prefill + 2000 ms decode).
    const node = busyNode('n', 4, 4, 4);
    const decision = decideRoute(request(), context([node]));
    if (decision.kind !== 'placed') throw new Error(decision.summary);
    expect(decision.placement.estimate.queueMs).toBeCloseTo(525, 9);
    expect(decision.placement.estimate.ttftMs).toBeCloseTo(625, 9);
  });
});

describe('decideRoute: nothing feasible', () => {
  it('NO_LIVE_NODE when no node serves the model', () => {
    const decision = decideRoute(request({ model: 'missing' }), context([record({ id: 'n' })]));
    expect(decision).toMatchObject({ kind: 'infeasible', reason: 'NO_LIVE_NODE' });
    expect(decision.summary).toContain('no registered node serves this model');
  });

  it('NO_LIVE_NODE when every serving node is down', () => {
    const nodes = [record({ id: 'n', lastSeenMs: 0, ttlS: 1 })];
    expect(decideRoute(request(), context(nodes, { nowMs: 5000 }))).toMatchObject({
      kind: 'infeasible',
      reason: 'NO_LIVE_NODE',
    });
  });

  it('NO_NODE_WITHIN_CONSTRAINTS with counts per reason and the best TTFT seen', () => {
    const nodes = [
      record({ id: 'a', km: 1000 }),
      record({ id: 'b', km: 2000 }),
      record({ id: 'c', draining: true }),
    ];
    const decision = decideRoute(request({ latencyBudgetMs: 20 }), context(nodes));
    expect(decision).toMatchObject({ kind: 'infeasible', reason: 'NO_NODE_WITHIN_CONSTRAINTS' });
    if (decision.kind !== 'infeasible') return;
    expect(decision.counts.rejected).toEqual({ OVER_BUDGET: 2, DRAINING: 1 });
    expect(decision.bestTtftMs).toBeCloseTo(110, 1);
    expect(decision.summary).toBe(
      'model m within 20 ms from CN-GD: 3 nodes serve it, 1 draining, 2 over budget (best 110.0 ms)',
    );
  });

  it('ALL_FULL when a node would meet the budget but has no slot', () => {
    const full = busyNode('full', 1, 1);
    const decision = decideRoute(
      request({ latencyBudgetMs: 200 }),
      context([full, record({ id: 'far', km: 15_000 })]),
    );
    expect(decision).toMatchObject({ kind: 'infeasible', reason: 'ALL_FULL' });
    expect(verdictOf(decision, 'full')).toBe('AT_CAPACITY');
  });

  it('degraded mode takes the lowest-TTFT node that has a slot', () => {
    const nodes = [record({ id: 'far', km: 3000 }), record({ id: 'farther', km: 5000, price: 0.1 })];
    const decision = decideRoute(request({ latencyBudgetMs: 50, allowDegraded: true }), context(nodes));
    expect(decision).toMatchObject({ kind: 'placed', degraded: true, fallbacks: [] });
    expect(placedOn(decision)).toBe('far');
    expect(verdictOf(decision, 'far')).toBe('DEGRADED_SELECTED');
  });

  it('degraded mode still refuses a full node', () => {
    const full = busyNode('full', 1, 1);
    expect(decideRoute(request({ allowDegraded: true }), context([full]))).toMatchObject({
      kind: 'infeasible',
      reason: 'ALL_FULL',
    });
  });
});

describe('decideRoute with reservations', () => {
  it('counts reservations made after the last status report, not those before it', () => {
    const book = newBook();
    book.reserve('n', 'm', 't', 0, 0);
    book.reserve('n', 'm', 't', 0, 0);
    const capacityThree = [offer({ maxConcurrency: 3, maxQueue: 0 })];
    const before = record({ id: 'n', offers: capacityThree });
    // 2 reserved + 0 reported < 3: one slot left.
    expect(decideRoute(request(), context([before], { reservations: book })).kind).toBe('placed');
    book.reserve('n', 'm', 't', 0, 0);
    expect(decideRoute(request(), context([before], { reservations: book }))).toMatchObject({
      reason: 'ALL_FULL',
    });
    // A report at t=10 that says only 1 request is active covers all three reservations.
    const reported = record({
      id: 'n',
      offers: capacityThree,
      statusAtMs: 10,
      status: {
        load: [{ model: 'm', active: 1, queued: 0 }],
        gpuUtilization: 0.3,
        kvCacheUtilization: 0.1,
        healthy: true,
      },
    });
    expect(decideRoute(request(), context([reported], { reservations: book, nowMs: 10 })).kind).toBe(
      'placed',
    );
  });

  it('cost function is the DESIGN formula', () => {
    const o = offer({ price: { inputPerMtok: 3, outputPerMtok: 12, cachedInputPerMtok: 0.3 } });
    expect(
      requestCost(
        { inputTokens: 2_000_000, cachedInputTokens: 1_000_000, maxOutputTokens: 500_000 },
        o.price,
        2,
      ),
    ).toBeCloseTo(((1e6 * 3 + 1e6 * 0.3 + 5e5 * 12) / 1e6) * 2, 9);
  });
});

describe('decideRoute: the random baseline', () => {
  // Far nodes miss the budget (FLAT_LATENCY: 1 ms per 100 km, then 100 ms of prefill), CENTER
  // ones are excluded by the request: only the near PROVINCE nodes may be drawn.
  const near = Array.from({ length: 5 }, (_, i) => record({ id: `near-${i}`, km: 10 * i }));
  const far = Array.from({ length: 10 }, (_, i) => record({ id: `far-${i}`, km: 6_000 + i }));
  const center = Array.from({ length: 5 }, (_, i) => record({ id: `center-${i}`, level: 'CENTER' }));
  const ask = request({
    latencyBudgetMs: 150,
    allowedLevels: ['PROVINCE'],
    maxFallbacks: 0,
    explain: false,
  });

  it('draws every feasible node about equally often and never another', () => {
    const ctx = context([...far, ...center, ...near], { policy: randomPolicy(seededRng(11)) });
    const picks = new Map<string, number>();
    for (let i = 0; i < 5000; i += 1) {
      const id = placedOn(decideRoute(ask, ctx));
      picks.set(id, (picks.get(id) ?? 0) + 1);
    }
    expect([...picks.keys()].sort()).toEqual(near.map((n) => n.spec.id));
    // 1,000 expected each; a binomial spread of about 28.
    for (const count of picks.values()) expect(Math.abs(count - 1000)).toBeLessThan(150);
  });

  it('counts each node it draws once, however often it draws it', () => {
    const ctx = context([record({ id: 'far', km: 6_000 }), record({ id: 'near', km: 0 })], {
      policy: randomPolicy(seededRng(1)),
    });
    for (let i = 0; i < 200; i += 1) {
      const decision = decideRoute({ ...ask, allowedLevels: [] }, ctx);
      if (decision.kind !== 'placed') throw new Error(decision.summary);
      expect(decision.counts.unevaluated).toBeGreaterThanOrEqual(0);
      expect(decision.counts.rejected.OVER_BUDGET ?? 0).toBeLessThanOrEqual(1);
    }
  });

  it('still finds the one feasible node among many that are not', () => {
    const crowd = Array.from({ length: 300 }, (_, i) => record({ id: `far-${i}`, km: 6_000 + i }));
    const ctx = context([...crowd, near[0] as (typeof near)[number]], { policy: randomPolicy(seededRng(3)) });
    for (let i = 0; i < 20; i += 1) expect(placedOn(decideRoute(ask, ctx))).toBe('near-0');
  });
});

describe('decideRoute: nearest for a client placed by its region alone', () => {
  // The region's centroid is Guangzhou: nodes at 0, 50, 100 … km east of it; the two nearest
  // are full. Read from the region's RTT order, as a located client's walk finds it.
  const latency = { ...FLAT_LATENCY, regionCentroids: new Map([['CN-GD', GUANGZHOU]]) };
  const nodes = Array.from({ length: 8 }, (_, i) =>
    i < 2 ? full(`n-${i}`, i * 50) : record({ id: `n-${i}`, km: i * 50 }),
  );
  const ask = (location: typeof GUANGZHOU | undefined, budgetMs: number) =>
    request({
      maxFallbacks: 2,
      explain: false,
      latencyBudgetMs: budgetMs,
      client: { region: 'CN-GD', accessPoint: '', location },
    });

  it('takes the nearest node with room, then the next ones as fallbacks', () => {
    const ctx = context(nodes, { policy: NEAREST, latency });
    for (const location of [undefined, GUANGZHOU]) {
      const decision = decideRoute(ask(location, 1000), ctx);
      expect(placedOn(decision)).toBe('n-2');
      if (decision.kind === 'placed') expect(decision.fallbacks.map((f) => f.nodeId)).toEqual(['n-3', 'n-4']);
    }
  });

  it('honours the budget: no node past it is placed or offered as a fallback', () => {
    const ctx = context(nodes, { policy: NEAREST, latency });
    // RTT = km / 100 ms plus 100 ms of prefill: n-2 takes 101 ms, n-3 101.5 ms.
    const prefilled = decideRoute(ask(undefined, 101.2), ctx);
    expect(placedOn(prefilled)).toBe('n-2');
    if (prefilled.kind === 'placed') expect(prefilled.fallbacks).toEqual([]);
    // The prompt all cached (no prefill): the RTT alone against 2 ms, n-4 exactly at it.
    const cached = decideRoute({ ...ask(undefined, 2), cachedInputTokens: 1000 }, ctx);
    expect(placedOn(cached)).toBe('n-2');
    if (cached.kind === 'placed') expect(cached.fallbacks.map((f) => f.nodeId)).toEqual(['n-3', 'n-4']);
  });
});

describe('decideRoute: least-loaded among equal loads', () => {
  // Idle nodes all share load 0: the smallest id ranks first, whichever way the search met them.
  const idle = ['n-b', 'n-d', 'n-a', 'n-c'].map((id) => record({ id, km: 10 }));
  const ask = request({ maxFallbacks: 1, explain: false });
  const fallbacksOf = (decision: RouteDecision) =>
    decision.kind === 'placed' ? decision.fallbacks.map((f) => f.nodeId) : [];

  it('read by id, it stops at the first idle feasible node: nothing after it can rank', () => {
    // n-a half full, then idle nodes: n-b wins, and the loads of the idle nodes after it are
    // never read (a search that went on would read every one).
    const idleAfter = Array.from({ length: 20 }, (_, i) =>
      busyNode(`n-c${String(i).padStart(2, '0')}`, 2, 0),
    );
    const nodes = [busyNode('n-a', 2, 1), busyNode('n-b', 2, 0), ...idleAfter];
    const { ctx, reads } = countingReads(context(nodes, { policy: LEAST_LOADED }));
    expect(placedOn(decideRoute(request({ maxFallbacks: 0, explain: false }), ctx))).toBe('n-b');
    expect(reads()).toBeLessThan(idleAfter.length / 2);
  });

  it('does not stop at a node that is merely lightly loaded: an idle one later still wins', () => {
    const nodes = [busyNode('n-a', 4, 1), busyNode('n-b', 4, 2), busyNode('n-c', 4, 0)];
    for (const maxFallbacks of [0, 1]) {
      const decision = decideRoute(
        request({ maxFallbacks, explain: false }),
        context(nodes, { policy: LEAST_LOADED }),
      );
      expect(placedOn(decision)).toBe('n-c');
      expect(fallbacksOf(decision)).toEqual(maxFallbacks === 0 ? [] : ['n-a']);
    }
  });

  it('a node with a measured sample (met first) ranks after idle nodes of smaller id', () => {
    const sampled = record({ id: 'n-z', km: 10 });
    const ctx = context([...idle, sampled], {
      policy: LEAST_LOADED,
      samples: { 'CN-GD|n-z': { rttMs: 1, updatedAtMs: 0, count: 3 } },
    });
    const decision = decideRoute(ask, ctx);
    expect(placedOn(decision)).toBe('n-a');
    expect(fallbacksOf(decision)).toEqual(['n-b']);
  });

  it('a node registered after the index was built (met first) ranks after idle nodes of smaller id', () => {
    const index = new CandidateIndex();
    for (const node of idle) index.put(node);
    const later = [record({ id: 'n-0', km: 10 }), record({ id: 'n-y', km: 10 })];
    const all = [...idle, ...later];
    const ctx = {
      ...context(idle, { policy: LEAST_LOADED }),
      view: { ...view(all), candidates: (model: string) => index.candidates(model) },
    };
    // The first decision builds the index; the nodes put after it wait among the recent ones.
    expect(placedOn(decideRoute(ask, ctx))).toBe('n-a');
    for (const node of later) index.put(node);
    expect(index.candidates('m')?.recent().length).toBe(2);
    const decision = decideRoute(ask, ctx);
    expect(placedOn(decision)).toBe('n-0');
    expect(fallbacksOf(decision)).toEqual(['n-a']);
  });
});

describe('decideRoute: bounded work', () => {
  it('a saturated fleet stops at the work cap, says so, and still answers ALL_FULL', () => {
    const nodes = Array.from({ length: 60 }, (_, i) => full(`full-${String(i).padStart(2, '0')}`, i));
    const decision = decideRoute(request({ explain: false }), context(nodes, { maxVisits: 10 }));
    if (decision.kind !== 'infeasible') throw new Error(decision.summary);
    expect(decision.reason).toBe('ALL_FULL');
    expect(decision.counts.truncated).toBe(true);
    expect(decision.counts.evaluated).toBeLessThanOrEqual(10);
    expect(decision.counts.unevaluated).toBeGreaterThanOrEqual(50);
    expect(decision.summary).toContain('stopped at its work cap');
  });

  it('a policy that reads a small model as a list does so only when the work cap covers it', () => {
    // Out of reach first (in the registry's order), then the nodes that fit: a list would spend
    // the cap on the first; a walk skips their cells without spending anything.
    const nodes = [
      ...Array.from({ length: 250 }, (_, i) => record({ id: `far-${i}`, km: 15_000 + i })),
      ...Array.from({ length: 50 }, (_, i) => record({ id: `near-${i}`, km: i })),
    ];
    const ctx = context(nodes, { policy: LEAST_LOADED, maxVisits: 100 });
    const decision = decideRoute(request({ latencyBudgetMs: 200, explain: false }), ctx);
    expect(decision.kind).toBe('placed');
  });

  it('the work cap holds across a search that gives up the price tree for the mixed tree', () => {
    const nodes = Array.from({ length: 60 }, (_, i) => full(`full-${String(i).padStart(2, '0')}`, i));
    // Every node examined is estimated (a loose budget, all live), and each estimate reads its
    // pending reservations once: the reads count the nodes examined, in both searches.
    const { ctx, reads } = countingReads({
      ...context(nodes, { maxVisits: 10 }),
      // The price walk reaches a leaf in four cells, examines it, then gives way to the mixed tree.
      searchTuning: { priceTreeReach: 0, priceTreeMaxCells: 4 },
    });
    const decision = decideRoute(request({ explain: false }), ctx);
    if (decision.kind !== 'infeasible') throw new Error(decision.summary);
    expect(decision.counts.truncated).toBe(true);
    expect(reads()).toBeGreaterThan(0);
    expect(reads()).toBeLessThanOrEqual(10);
  });

  it('under the cap the same fleet is answered exactly', () => {
    const nodes = [
      ...Array.from({ length: 60 }, (_, i) => full(`full-${i}`, i)),
      record({ id: 'free', km: 70 }),
    ];
    const decision = decideRoute(request({ explain: false }), context(nodes));
    expect(decision).toMatchObject({ kind: 'placed', counts: { truncated: false } });
    expect(placedOn(decision)).toBe('free');
  });

  it('explain spends its cap on nodes that serve the model before the others', () => {
    const others = Array.from({ length: 30 }, (_, i) =>
      record({ id: `other-${i}`, offers: [offer({ model: 'x' })] }),
    );
    const serving = Array.from({ length: 5 }, (_, i) => record({ id: `serving-${i}` }));
    const decision = decideRoute(request(), context([...others, ...serving], { maxExplainNodes: 8 }));
    if (decision.kind !== 'placed') throw new Error(decision.summary);
    expect(decision.explain.filter((e) => e.verdict !== 'MODEL_NOT_SERVED')).toHaveLength(5);
    expect(decision.explainOmitted).toBe(27);
  });
});
