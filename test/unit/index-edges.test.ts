// Edges of the candidate index where rounding or a degenerate registry could make the search
// differ from a full scan, or do much more work than it needs: budgets met exactly, prices that
// tie only after a time-of-use factor, measured prefill curves, rate tiers on repeated rates.

import { describe, expect, it } from 'vitest';
import { curveRate, LIST_PRICE } from '../../src/core/cost.js';
import { DEFAULT_LATENCY_MODEL } from '../../src/core/latency.js';
import type { EngineCurves, Level, ModelOffer, NodeRecord } from '../../src/core/model.js';
import { policyMultiplier } from '../../src/core/pricing.js';
import {
  C,
  CandidateIndex,
  CELL_STRIDE,
  cellItemStart,
  cellLevelMask,
  cellMixBound,
  cellSize,
  decideRoute,
  estimateOn,
  type FlatTree,
  MIXED_TREE,
  type MixWeights,
  mixWeights,
  noMix,
  PLACE_TREE,
  PRICE_TREE,
  type RouteContext,
  type RouteDecision,
  type TreeKind,
  unlocatedCell,
} from '../../src/core/routing/index.js';
import { context, FLAT_LATENCY, GUANGZHOU, indexView, offer, record, request } from '../helpers/fixtures.js';

/** A client the latency model only knows by region (FLAT_LATENCY: 8 ms within it, 45 ms across). */
const BY_REGION = { region: 'CN-GD', accessPoint: '', location: undefined };

function placed(decision: RouteDecision): Extract<RouteDecision, { kind: 'placed' }> {
  if (decision.kind !== 'placed') throw new Error(`expected a placement: ${decision.summary}`);
  return decision;
}

const placedOn = (decision: RouteDecision): string => placed(decision).placement.nodeId;

describe('candidate index: a budget met exactly', () => {
  it('a node whose RTT and prefill add up to the budget exactly is placed', () => {
    const node = record({ id: 'exact', offers: [offer({ prefillTokensPerS: 10_021 })] });
    const budgetMs = 8 + (100 / 10_021) * 1000;
    const req = request({ client: BY_REGION, inputTokens: 100, latencyBudgetMs: budgetMs, explain: false });
    expect(placedOn(decideRoute(req, context([node])))).toBe('exact');
  });

  // One measured point whose rate, turned back into a time, rounds a hair above the curve's own.
  const curves: EngineCurves = {
    name: 'one-point',
    prefill: { tokens: [1807], ms: [159.606297] },
    decode: { batches: [1], contexts: [1], ms: [[10]] },
    maxBatch: 4,
    prefillBudget: 8192,
  };
  const engine = offer({ prefillTokensPerS: curveRate(curves.prefill), engine: { curves, replicas: 1 } });

  it('an engine node whose curve meets the budget exactly is placed, alone or beside others', () => {
    const alone = record({ id: 'engine', offers: [engine] });
    const req = (budgetMs: number) =>
      request({ client: BY_REGION, inputTokens: 1807, latencyBudgetMs: budgetMs, explain: false });
    expect(placedOn(decideRoute(req(8 + 159.606297), context([alone])))).toBe('engine');
    const across = record({ id: 'engine', region: 'CN-SC', offers: [engine] });
    const slow = record({ id: 'slow', offers: [offer({ prefillTokensPerS: 1000 })] });
    expect(placedOn(decideRoute(req(45 + 159.606297), context([across, slow])))).toBe('engine');
  });
});

describe('candidate index: a leaf read by thresholds (review of ec7008f)', () => {
  it('a reach a hair past a large RTT still takes the node that fits it', () => {
    // 45 ms across regions by region default and 6 ms at the centre; one token at the API's
    // fastest rate prefills in a millionth of a millisecond: the node fits 51.000001 ms, with room
    // far below the rounding of a sum at 51 ms.
    const node = record({
      id: 'sc-center',
      level: 'CENTER',
      region: 'CN-SC',
      offers: [offer({ prefillTokensPerS: 1e9 })],
    });
    for (const explain of [false, true]) {
      const decision = decideRoute(
        request({ client: BY_REGION, inputTokens: 1, latencyBudgetMs: 51.000001, explain }),
        context([node], { latency: DEFAULT_LATENCY_MODEL }),
      );
      expect(placedOn(decision)).toBe('sc-center');
    }
  });

  it('a node whose rate is not a number, among others, hides none of them (review of 0778ae8)', () => {
    // A full scan finds such a node feasible (its TTFT is not a number, which no check refuses).
    const nodes = [
      record({ id: 'a-slow', km: 1, offers: [offer({ prefillTokensPerS: 10_000 })] }),
      record({ id: 'b-nan', km: 2, region: 'CN-SC', offers: [offer({ prefillTokensPerS: Number.NaN })] }),
      record({ id: 'c-fast', km: 3, offers: [offer({ prefillTokensPerS: 1e6 })] }),
    ];
    const req = request({ inputTokens: 1000, latencyBudgetMs: 30, allowedRegions: ['CN-GD'], explain: true });
    const decision = placed(decideRoute(req, context(nodes)));
    expect(decision.placement.nodeId).toBe('c-fast');
    // Without the region constraint the node with no rate is a candidate too, as a full scan has it.
    const all = placed(decideRoute({ ...req, allowedRegions: [] }, context(nodes)));
    expect([all.placement, ...all.fallbacks].map((p) => p.nodeId).sort()).toEqual(['b-nan', 'c-fast']);
  });

  it('a node whose rate is not a number, first in its leaf, hides none of the others', () => {
    // The API refuses such a rate; a programmatic caller may not.
    const nodes = [
      record({
        id: 'a-nan',
        km: 50,
        offers: [offer({ prefillTokensPerS: Number.NaN, price: { inputPerMtok: 5 } })],
      }),
      record({ id: 'b-ok', km: 1, offers: [offer({ prefillTokensPerS: 10_000 })] }),
      record({
        id: 'c-ok',
        km: 2,
        offers: [offer({ prefillTokensPerS: 20_000, price: { inputPerMtok: 2 } })],
      }),
    ];
    for (const budget of [30, 200, 1000]) {
      const req = request({ inputTokens: 100, latencyBudgetMs: budget, explain: false, maxFallbacks: 2 });
      const decision = placed(decideRoute(req, context(nodes)));
      const ranked = [decision.placement, ...decision.fallbacks].map((p) => p.nodeId);
      expect(ranked.slice(0, 2)).toEqual(['b-ok', 'c-ok']);
    }
  });
});

describe('candidate index: prices that tie after a time-of-use factor', () => {
  it('equal costs across a discount go to the lowest TTFT, as a full scan would, within the cap', () => {
    // Far nodes at double list price, half price now; near ones at list price. Every cost is the
    // same: the nearest node must win, and the search must not spend its cap on the far tier.
    const far = Array.from({ length: 1500 }, (_, i) =>
      record({
        id: `sc-${String(i).padStart(4, '0')}`,
        region: 'CN-SC',
        km: 300 + ((i * 0.2) % 300),
        permanent: true,
        offers: [offer({ price: { inputPerMtok: 2, outputPerMtok: 8, cachedInputPerMtok: 0.2 } })],
      }),
    );
    const near = Array.from({ length: 24 }, (_, i) =>
      record({ id: i === 0 ? 'gd-near' : `gd-${String(i).padStart(2, '0')}`, km: i * 0.5, permanent: true }),
    );
    const halfInSichuan = policyMultiplier({
      utcOffsetHours: 8,
      rules: [{ level: undefined, region: 'CN-SC', model: undefined, factor: 0.5, window: undefined }],
    });
    const ctx = context([...far, ...near], { priceMultiplier: halfInSichuan, maxVisits: 1000 });
    const decision = placed(decideRoute(request({ explain: false, maxFallbacks: 0 }), ctx));
    expect(decision.placement.nodeId).toBe('gd-near');
    expect(decision.counts.truncated).toBe(false);
  });

  it('one price tier stops at its tie whether or not a factor applies', () => {
    const nodes = Array.from({ length: 3000 }, (_, i) =>
      record({ id: `n-${String(i).padStart(4, '0')}`, km: (i * 0.1) % 300, price: 1, permanent: true }),
    );
    const halfEverywhere = policyMultiplier({
      utcOffsetHours: 8,
      rules: [{ level: undefined, region: undefined, model: undefined, factor: 0.5, window: undefined }],
    });
    for (const priceMultiplier of [LIST_PRICE, halfEverywhere]) {
      const ctx = context(nodes, { priceMultiplier, maxVisits: 1000 });
      const decision = placed(decideRoute(request({ explain: false }), ctx));
      expect(decision.placement.nodeId).toBe('n-0000');
      expect(decision.counts.truncated).toBe(false);
    }
  });
});

describe('candidate index: the work cap', () => {
  it('every node charged to the cap before it ran out is still read, best bound first', () => {
    // Prices spread within each cell: the first leaf read charges its first nodes to the cap, and
    // cells whose bound is below some of those nodes' wait beside them on the frontier when the
    // cap runs out. Nothing bounds a node out (a ranking with room for every node charged, a
    // budget every node meets): every node charged is read.
    const nodes = Array.from({ length: 3000 }, (_, i) =>
      record({
        id: `n-${String(i).padStart(4, '0')}`,
        km: (i * 7.3) % 900,
        price: 1 + ((i * 37) % 100) / 100,
        permanent: true,
      }),
    );
    for (const maxVisits of [4, 6, 9]) {
      const decision = decideRoute(
        request({ explain: false, maxFallbacks: 16 }),
        context(nodes, { maxVisits }),
      );
      const chosen = placed(decision);
      expect(chosen.counts.truncated).toBe(true);
      expect(chosen.counts.evaluated).toBe(maxVisits);
      expect(chosen.fallbacks).toHaveLength(maxVisits - 1);
      const costs = [chosen.placement, ...chosen.fallbacks].map((p) => p.estimate.cost);
      expect(costs).toEqual([...costs].sort((x, y) => x - y));
    }
  });
});

describe('candidate index: the price tree giving up', () => {
  // A helper's review found these: the price tree gave up with nodes it had charged to the work cap
  // still waiting on its frontier, and dropped them unread; the mixed tree charged them again.
  const PRICE_TREE_FIRST = { priceTreeReach: 0 };

  it('reads the nodes it charged before handing over: a cap of one visit a node is enough', () => {
    const count = 8;
    const nodes = Array.from({ length: count }, (_, i) =>
      record({
        id: `n-${i}`,
        km: (i * 37) % 50,
        permanent: true,
        offers: [
          offer({
            price: {
              inputPerMtok: 1 + ((i * 7) % count),
              outputPerMtok: 1 + ((i * 5) % count) * 3,
              cachedInputPerMtok: 0.1,
            },
          }),
        ],
      }),
    );
    const index = new CandidateIndex(256, [2, 2, 2]);
    for (const node of nodes) index.put(node);
    const ctx: RouteContext = {
      ...context(nodes),
      view: indexView(index, nodes),
      maxVisits: count,
      searchTuning: { ...PRICE_TREE_FIRST, priceTreeMaxCells: 4 },
    };
    const decision = placed(
      decideRoute(request({ explain: false, maxFallbacks: 16, latencyBudgetMs: 100_000 }), ctx),
    );
    expect(decision.counts.truncated).toBe(false);
    expect(decision.fallbacks).toHaveLength(count - 1);
  });

  it('on a large registry too: every node charged is read once', () => {
    const nodes = Array.from({ length: 3000 }, (_, i) =>
      record({
        id: `n-${String(i).padStart(4, '0')}`,
        km: (i * 7.3) % 900,
        permanent: true,
        offers: [
          offer({
            price: {
              inputPerMtok: 1 + ((i * 37) % 100) / 100,
              outputPerMtok: 1 + ((i * 53) % 100) / 25,
              cachedInputPerMtok: 0.1,
            },
          }),
        ],
      }),
    );
    const ctx = {
      ...context(nodes, { maxVisits: 17 }),
      searchTuning: { ...PRICE_TREE_FIRST, priceTreeMaxCells: 9 },
    };
    const decision = placed(decideRoute(request({ explain: false, maxFallbacks: 16 }), ctx));
    expect(decision.counts.evaluated).toBe(17);
    expect(decision.fallbacks).toHaveLength(16);
  });
});

describe('candidate index: a leaf no split divides', () => {
  it('nodes alike in place, price and rate rank by id, as a full scan would', () => {
    // No split separates them, so they share one leaf of 2,000: its queue is read sorted.
    const nodes = Array.from({ length: 2000 }, (_, i) =>
      record({ id: `n-${String((i * 7919) % 2000).padStart(4, '0')}`, km: 5, permanent: true }),
    );
    const decision = placed(decideRoute(request({ explain: false, maxFallbacks: 2 }), context(nodes)));
    expect(decision.placement.nodeId).toBe('n-0000');
    expect(decision.fallbacks.map((f) => f.nodeId)).toEqual(['n-0001', 'n-0002']);
    expect(decision.counts.truncated).toBe(false);
  });
});

describe('candidate index: rate tiers', () => {
  const tiersOf = (rate: (i: number) => number, count: number) => {
    const index = new CandidateIndex(32);
    for (let i = 0; i < count; i += 1)
      index.put(record({ id: `n${i}`, offers: [offer({ prefillTokensPerS: rate(i) })] }));
    const candidates = index.candidates('m');
    candidates?.tree(PLACE_TREE);
    return candidates?.tierFloors() ?? [];
  };

  it('a tier that would repeat the one above is skipped, not the faster tiers after it', () => {
    // The fastest 128 at distinct high rates, the next 384 at 20k, the rest at 10k: the fastest
    // half and quarter are the same nodes (≥ 20k); the fastest eighth is its own tier.
    const floors = tiersOf((i) => (i < 128 ? 100_000 + i : i < 512 ? 20_000 : 10_000), 1024);
    expect(floors[1]).toBe(20_000);
    expect(floors[2]).toBe(Number.POSITIVE_INFINITY);
    expect(floors[3]).toBe(100_000);
  });

  it('a leaf size below one node is refused when the index is made', () => {
    expect(() => new CandidateIndex(256, [16, 0, 16])).toThrow(/a leaf holds at least one node, not 0/);
    expect(() => new CandidateIndex(256, [16, 32, 1.5])).toThrow(/not 1.5/);
  });

  it('one rate for every node makes no tier beyond all of them', () => {
    expect(tiersOf(() => 30_000, 1024).slice(1)).toEqual(Array(4).fill(Number.POSITIVE_INFINITY));
  });

  it('fastShare tells what share of the nodes prefill at a rate or faster, to 1/64', () => {
    const index = new CandidateIndex(32);
    // 1,000 nodes at 10k, 11k, … tokens/s (node i at 10k + 1k·(i mod 1000)), shuffled by id.
    for (let i = 0; i < 1000; i += 1)
      index.put(
        record({ id: `n${(i * 7919) % 1000}`, offers: [offer({ prefillTokensPerS: 10_000 + i * 1000 })] }),
      );
    const candidates = index.candidates('m');
    expect(candidates?.fastShare(1)).toBe(0);
    candidates?.tree(PLACE_TREE);
    for (const [rate, share] of [
      [0, 1],
      [10_000, 1],
      [510_000, 0.49],
      [760_000, 0.24],
      [1_009_000, 0.001],
      [1_009_001, 0],
    ] as const)
      expect(Math.abs((candidates?.fastShare(rate) ?? -1) - share)).toBeLessThanOrEqual(1 / 64);
  });
});

describe('candidate index: the cross-region penalty in a cell bound', () => {
  // 40 regions of 30 far, cheap nodes each (more regions than cells have bits of their own), and
  // one near, dear node in the client's region. Only that node meets the budget, and only because
  // no cross-region penalty applies to it: a cell bound that added the penalty would lose it.
  const penalty = { ...FLAT_LATENCY, crossRegionPenaltyMs: 5 };
  const regions = Array.from({ length: 40 }, (_, i) => `R-${String(i).padStart(2, '0')}`);
  const node = (id: string, region: string, km: number, price: number) =>
    record({
      id,
      region,
      km,
      permanent: true,
      offers: [
        offer({
          prefillTokensPerS: 1_000_000,
          price: { inputPerMtok: price, outputPerMtok: price, cachedInputPerMtok: price },
        }),
      ],
    });
  const far = regions.flatMap((region, r) =>
    Array.from({ length: 30 }, (_, i) => node(`far-${r}-${i}`, region, 500 + i, 1)),
  );
  const nearIn = (region: string) => node(`near-${region}`, region, 10, 9);
  // RTT 0.1 ms and prefill 1 ms: within 3 ms without the penalty, past it with.
  const req = (region: string) =>
    request({
      client: { region, accessPoint: '', location: { lat: 23.13, lon: 113.26 } },
      latencyBudgetMs: 3,
      explain: false,
      maxFallbacks: 0,
    });

  for (const region of ['R-02', 'R-35', 'R-39']) {
    it(`a client in ${region} (region ${regions.indexOf(region)} of the model) is placed on the node in its region`, () => {
      const ctx = context([...far, nearIn(region)], { latency: penalty });
      expect(placedOn(decideRoute(req(region), ctx))).toBe(`near-${region}`);
    });
  }

  it('a client in a region with no node pays the penalty everywhere, and is refused', () => {
    const ctx = context([...far, nearIn('R-39')], { latency: penalty });
    expect(decideRoute(req('XX-NONE'), ctx).kind).toBe('infeasible');
  });
});

describe('candidate index: the price tree remembered per kind of request', () => {
  it('after the price tree gives up, the next requests of that kind skip it, then try it again', () => {
    const nodes = Array.from({ length: 60 }, (_, i) =>
      record({ id: `n-${String(i).padStart(2, '0')}`, km: i * 3, price: 1 + (i % 7) / 10, permanent: true }),
    );
    const ctx = {
      ...context(nodes),
      // The price tree judged worth it for every request, and given up after one cell.
      searchTuning: { priceTreeReach: 0, priceTreeMaxCells: 1, priceTreeRetryAfter: 3 },
    };
    const skips = () => [...(ctx.view.candidates('m')?.priceTreeSkips ?? [])].filter((n) => n > 0);
    const req = request({ explain: false });
    const first = placedOn(decideRoute(req, ctx));
    expect(skips()).toEqual([3]);
    // Three requests of the kind go straight to the mixed tree, the fourth tries the price tree.
    for (const left of [2, 1, 0, 3]) {
      expect(placedOn(decideRoute(req, ctx))).toBe(first);
      expect(skips()).toEqual(left === 0 ? [] : [left]);
    }
    // Another kind (a prompt past the next half power of two) is judged on its own.
    decideRoute({ ...req, inputTokens: 4000 }, ctx);
    expect(skips()).toEqual([3, 3]);
  });
});

describe('candidate index: the reach estimate remembered per kind of request', () => {
  it('is worked out once for the next requests of a kind, per place tree and share, and answers alike', () => {
    const nodes = Array.from({ length: 60 }, (_, i) =>
      record({ id: `n-${String(i).padStart(2, '0')}`, km: i * 3, price: 1 + (i % 7) / 10, permanent: true }),
    );
    const ctx = context(nodes);
    const candidates = ctx.view.candidates('m');
    if (candidates === undefined) throw new Error('model m is not indexed');
    const req = request({ explain: false, latencyBudgetMs: 300 });
    const first = placedOn(decideRoute(req, ctx));
    const memo = candidates.reachMemo(candidates.tree(PLACE_TREE), 0.25);
    const held = () => [...memo.uses.keys()].filter((slot) => (memo.answers[slot] as number) > 0);
    expect(held()).toHaveLength(1);
    const slot = held()[0] as number;
    expect(memo.uses[slot]).toBe(15);
    // The next requests of the kind take the answer (and decide the same), counting down.
    for (const left of [14, 13, 12]) {
      expect(placedOn(decideRoute(req, ctx))).toBe(first);
      expect(memo.uses[slot]).toBe(left);
    }
    // Another kind (a client a degree away) is judged on its own, in a slot of its own.
    const moved = { ...req.client, location: { lat: GUANGZHOU.lat + 1, lon: GUANGZHOU.lon } };
    decideRoute({ ...req, client: moved }, ctx);
    expect(held()).toHaveLength(2);
    // Another share, or another place tree, starts afresh.
    expect(candidates.reachMemo(candidates.tree(PLACE_TREE), 0.5)).not.toBe(memo);
    expect(candidates.reachMemo(candidates.tree(PLACE_TREE), 0.25)).not.toBe(memo);
  });
});

describe('candidate index: levels apart', () => {
  /** Model m's tree of `kind`, built. */
  const treeOf = (index: CandidateIndex, kind: TreeKind): FlatTree => {
    const tree = index.candidates('m')?.tree(kind);
    if (tree === undefined) throw new Error('model m is not indexed');
    return tree;
  };

  it('the trees a cost search walks hold one level per cell; the nearest-first tree mixes them', () => {
    const index = new CandidateIndex(32);
    const levels = ['CENTER', 'PROVINCE', 'EDGE', 'TERMINAL'] as const;
    for (let i = 0; i < 600; i += 1) {
      const node = record({
        id: `n${i}`,
        level: levels[i % 4],
        km: (i * 7) % 900,
        offers: [offer({ price: { inputPerMtok: 1 + (i % 11) / 10 }, prefillTokensPerS: 10_000 + i * 10 })],
      });
      // A fifth of the nodes with no coordinates: their own roots, split by level too.
      index.put(i % 5 === 0 ? { ...node, spec: { ...node.spec, location: undefined } } : node);
    }
    const masksOf = (kind: TreeKind) => {
      const tree = treeOf(index, kind);
      const masks: number[] = [];
      for (let at = 0; at < tree.cells.length; at += CELL_STRIDE) masks.push(cellLevelMask(tree.cells, at));
      return { masks, roots: tree.roots.length };
    };
    const oneBit = (mask: number) => mask > 0 && (mask & (mask - 1)) === 0;
    for (const kind of [PRICE_TREE, MIXED_TREE] as const) {
      const { masks, roots } = masksOf(kind);
      expect(masks.every(oneBit)).toBe(true);
      // Four levels, located and not.
      expect(roots).toBe(8);
    }
    const place = masksOf(PLACE_TREE);
    expect(place.roots).toBe(2);
    expect(place.masks.some((mask) => !oneBit(mask))).toBe(true);
  });

  it('a node whose coordinates are not numbers counts as one with none: its cells alone are unlocated', () => {
    // The API refuses such coordinates; a programmatic caller may not. The estimate reads them as
    // no place (region defaults), so the index files such a node with the nodes that have none:
    // cells of located nodes keep their box, and nearby nodes are never cut.
    const index = new CandidateIndex(32, [4, 4, 4]);
    const odd = record({ id: 'zz', km: 0 });
    index.put({ ...odd, spec: { ...odd.spec, location: { lat: Number.NaN, lon: 113 } } });
    const far = record({ id: 'zy', km: 0 });
    index.put({ ...far, spec: { ...far.spec, location: { lat: 23, lon: Number.POSITIVE_INFINITY } } });
    for (let i = 0; i < 12; i += 1) index.put(record({ id: `n${i}`, km: i * 0.5 }));
    for (const kind of [PRICE_TREE, MIXED_TREE, PLACE_TREE] as const) {
      const tree = treeOf(index, kind);
      const { cells } = tree;
      for (let at = 0; at < cells.length; at += CELL_STRIDE) {
        const start = cellItemStart(cells, at);
        const ids = tree.items.slice(start, start + cellSize(cells, at)).map((entry) => entry.id);
        // A cell is unlocated exactly when it holds the two odd nodes and nothing else.
        expect(unlocatedCell(cells, at)).toBe(ids.every((id) => id === 'zz' || id === 'zy'));
      }
    }
  });

  it('a node whose coordinates are not numbers is decided by its region, as a full scan decides', () => {
    // FLAT_LATENCY: 8 ms to a node of the client's region known by region alone; nodes in
    // Guangzhou at 0 ms; prefill 1 ms. The odd node is the cheapest.
    const near = record({ id: 'near', km: 0, price: 2 });
    const oddRecord = record({ id: 'odd', km: 0, price: 1 });
    const odd = { ...oddRecord, spec: { ...oddRecord.spec, location: { lat: Number.NaN, lon: 113 } } };
    const nodes = [
      near,
      odd,
      ...Array.from({ length: 40 }, (_, i) => record({ id: `n${i}`, km: i, price: 3 })),
    ];
    const small = { inputTokens: 10, maxOutputTokens: 10, explain: true };
    // Within 5 ms only the located nodes fit: the odd node is 8 ms away by its region.
    const tight = placed(decideRoute(request({ ...small, latencyBudgetMs: 5 }), context(nodes)));
    expect(tight.placement.nodeId).toBe('near');
    const oddEntry = tight.explain.find((entry) => entry.nodeId === 'odd');
    expect(oddEntry?.verdict).toBe('OVER_BUDGET');
    expect(oddEntry?.estimate?.latencySource).toBe('REGION_DEFAULT');
    expect(oddEntry?.estimate?.networkRttMs).toBe(8);
    // Within 20 ms it fits, and it is the cheapest.
    const loose = placed(decideRoute(request({ ...small, latencyBudgetMs: 20 }), context(nodes)));
    expect(loose.placement.nodeId).toBe('odd');
    expect(loose.placement.estimate.networkRttMs).toBe(8);
    expect(loose.placement.estimate.latencySource).toBe('REGION_DEFAULT');
    // A client whose own coordinates are not numbers is placed at its region's centroid (none
    // here: by region), as if it gave none.
    const lost = { region: 'CN-GD', accessPoint: '', location: { lat: 23, lon: Number.NaN } };
    const byRegion = placed(
      decideRoute(request({ ...small, latencyBudgetMs: 20, client: lost }), context(nodes)),
    );
    expect(byRegion.placement.estimate.latencySource).toBe('REGION_DEFAULT');
    expect(byRegion.placement.nodeId).toBe('odd');
  });

  it('no tree has a root for nodes it does not hold (every node located, two levels)', () => {
    const index = new CandidateIndex(32);
    for (let i = 0; i < 100; i += 1)
      index.put(
        record({ id: `n${i}`, level: i % 2 === 0 ? 'EDGE' : 'CENTER', km: i * 3, offers: [offer()] }),
      );
    const rootSizes = (kind: TreeKind) => {
      const tree = treeOf(index, kind);
      return Array.from(tree.roots, (root) => {
        const at = root * CELL_STRIDE;
        return cellSize(tree.cells, at);
      });
    };
    expect(rootSizes(PRICE_TREE)).toEqual([50, 50]);
    expect(rootSizes(MIXED_TREE)).toEqual([50, 50]);
    expect(rootSizes(PLACE_TREE)).toEqual([100]);
  });
});

describe('candidate index: mixes of input and output prices', () => {
  /** A deterministic stream in [0, 1) (a test must not vary from run to run). */
  const stream = (seed: number) => () => {
    seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) | 0;
    return ((seed ^ (seed >>> 13)) >>> 0) / 2 ** 32;
  };
  const next = stream(7);
  // Each node prices input and output apart (±20 % around 2 and 8), five in six with coordinates.
  const index = new CandidateIndex(32);
  for (let i = 0; i < 600; i += 1)
    index.put(
      record({
        id: `n${i}`,
        level: i % 3 === 0 ? 'PROVINCE' : 'EDGE',
        km: next() * 800,
        offers: [
          offer({
            price: { inputPerMtok: 1.6 + 0.8 * next(), outputPerMtok: 6.4 + 3.2 * next() },
            prefillTokensPerS: 10_000 + next() * 30_000,
          }),
        ],
      }),
    );
  const candidates = index.candidates('m');
  if (candidates === undefined) throw new Error('model m is not indexed');
  const nightHalf = policyMultiplier({
    utcOffsetHours: 8,
    rules: [
      { level: 'EDGE', region: undefined, model: undefined, factor: 0.5, window: { fromHour: 0, toHour: 8 } },
    ],
  });
  const night = Date.UTC(2026, 10, 22, 19, 0, 0);
  const day = Date.UTC(2026, 10, 23, 4, 0, 0);
  // Prompt alone, answer alone, and mixes between (some on a kept mix exactly: 1000 and 0).
  const mixes: (readonly [number, number])[] = [
    [1000, 0],
    [0, 1000],
    [4000, 50],
    [2000, 500],
    [700, 700],
    [200, 1050],
    ...Array.from({ length: 20 }, () => [Math.floor(next() * 5000), Math.floor(next() * 1500)] as const),
  ];

  /** Per cell: [the mix bound less the search's hair, the kind-by-kind bound, the cheapest node's cost]. */
  function bounds(tree: FlatTree, prompt: number, answer: number, factorOf: (node: number) => number) {
    const weights: MixWeights = mixWeights(tree, prompt, answer, noMix());
    const out: [number, number, number][] = [];
    for (let c = 0; c < tree.cells.length / CELL_STRIDE; c += 1) {
      const at = c * CELL_STRIDE;
      let cheapest = Number.POSITIVE_INFINITY;
      const start = cellItemStart(tree.cells, at);
      for (let i = start; i < start + cellSize(tree.cells, at); i += 1) {
        const { price } = (
          tree.items[i] as { offer: { price: { inputPerMtok: number; outputPerMtok: number } } }
        ).offer;
        const factor = factorOf(i);
        cheapest = Math.min(
          cheapest,
          prompt * (price.inputPerMtok * factor) + answer * (price.outputPerMtok * factor),
        );
      }
      const byKind =
        prompt * (tree.cells[at + C.minInput] as number) + answer * (tree.cells[at + C.minOutput] as number);
      out.push([cellMixBound(tree, c, weights) * (1 - 1e-9), byKind, cheapest]);
    }
    return out;
  }

  it('bound every cell from below, at list prices, priced by a factor, and repriced', () => {
    const trees: [string, FlatTree, (i: number) => number][] = [];
    for (const kind of [PRICE_TREE, MIXED_TREE] as const) {
      trees.push([`list ${kind}`, candidates.tree(kind), () => 1]);
      for (const nowMs of [night, day]) {
        // The second time is another window: the same tree, repriced.
        const tree = candidates.tree(kind, { multiplier: nightHalf, nowMs });
        const factorOf = (i: number) => {
          const node = tree.items[i] as { group: { level: string; region: string } };
          return nightHalf.at(node.group as never, 'm', nowMs);
        };
        expect(tree.priced).toBe(true);
        trees.push([`${kind} at ${nowMs}`, tree, factorOf]);
      }
    }
    for (const [name, tree, factorOf] of trees)
      for (const [prompt, answer] of mixes)
        for (const [mix, , cheapest] of bounds(tree, prompt, answer, factorOf))
          expect(mix, `${name}, ${prompt}/${answer}`).toBeLessThanOrEqual(cheapest);
  });

  it('bound most cells tighter than the cheapest price of each kind does, and no looser where they tie', () => {
    const tree = candidates.tree(MIXED_TREE);
    let tighter = 0;
    let cells = 0;
    for (const [prompt, answer] of mixes)
      for (const [mix, byKind, cheapest] of bounds(tree, prompt, answer, () => 1)) {
        cells += 1;
        // One kind alone: the mix bound is that kind's cheapest price (less the hair).
        if (prompt === 0 || answer === 0) expect(Math.abs(mix - byKind) / byKind).toBeLessThan(1e-8);
        else if (mix > byKind && byKind < cheapest) tighter += 1;
      }
    expect(tighter / cells).toBeGreaterThan(0.5);
  });

  /** A node at `km` east of Guangzhou with prices [input, output, cached] per Mtok. */
  const pricedNode = (id: string, level: Level, km: number, [input, output, cached]: readonly number[]) =>
    record({
      id,
      level,
      km,
      permanent: true,
      offers: [offer({ price: { inputPerMtok: input, outputPerMtok: output, cachedInputPerMtok: cached } })],
    });
  const unbounded = { latencyBudgetMs: 1e6, maxFallbacks: 0, explain: false };

  it('a tree priced at a tiny factor and repriced at a large one keeps its bounds finite and true', () => {
    // Each node cheap on one kind: b is cheaper for this request. Night factor 1e-306, day 100:
    // the night's scales, kept, would make the day's mixes overflow (review of 3107145).
    const night = Date.UTC(2026, 5, 1, 3, 0, 0);
    const day = Date.UTC(2026, 5, 1, 12, 0, 0);
    const everywhere = { level: undefined, region: undefined, model: undefined };
    const extremes = policyMultiplier({
      utcOffsetHours: 0,
      rules: [
        { ...everywhere, factor: 1e-306, window: { fromHour: 0, toHour: 8 } },
        { ...everywhere, factor: 100, window: { fromHour: 8, toHour: 0 } },
      ],
    });
    const nodes = [pricedNode('a', 'EDGE', 0, [0, 10, 0]), pricedNode('b', 'CENTER', 300, [10, 0, 0])];
    const req = request({ ...unbounded, inputTokens: 1, maxOutputTokens: 1000 });
    const ctx = context(nodes, { priceMultiplier: extremes, nowMs: night });
    expect(placedOn(decideRoute(req, ctx))).toBe('b');
    expect(placedOn(decideRoute(req, { ...ctx, nowMs: day }))).toBe('b');
  });

  it('subnormal prices tie as a full scan ties them (the nearer node), not by a rounded mix', () => {
    // a and b cost the same (2.18e-313): a is nearer. A mix of subnormal prices rounds far more
    // than the share the search takes off for rounding (review of 3107145).
    const tiny = 2.1838400932885e-310;
    const nodes = [
      pricedNode('a', 'EDGE', 0, [0, tiny, 0]),
      pricedNode('b', 'CENTER', 300, [0, 0, tiny]),
      pricedNode('f', 'PROVINCE', 600, [1, 1e6, 1]),
    ];
    const req = request({ ...unbounded, inputTokens: 1000, cachedInputTokens: 1000, maxOutputTokens: 1000 });
    expect(placedOn(decideRoute(req, context(nodes)))).toBe('a');
  });

  it('are read only where they bound tighter: not where every node prices output at 4 times input', () => {
    expect(candidates.tree(MIXED_TREE).mixesTighten).toBe(true);
    const alike = new CandidateIndex(32);
    for (let i = 0; i < 300; i += 1)
      alike.put(
        pricedNode(`n${i}`, 'EDGE', (i * 7) % 800, [1 + (i % 13) / 10, 4 * (1 + (i % 13) / 10), 0.1]),
      );
    const tree = alike.candidates('m')?.tree(MIXED_TREE);
    expect(tree?.mixesTighten).toBe(false);
    expect(mixWeights(tree as FlatTree, 1000, 1000, { ...noMix(), step: 0 }).step).toBe(-1);
  });

  it('a request with no uncached prompt and no answer is bounded by nothing', () => {
    const tree = candidates.tree(MIXED_TREE);
    expect(mixWeights(tree, 0, 0, { ...noMix(), step: 0 }).step).toBe(-1);
    expect(Number.isNaN(cellMixBound(tree, 0, noMix()))).toBe(true);
  });
});

describe('candidate index: node facts', () => {
  // A node the search ranks is estimated from facts the index keeps by ordinal (its rate, prices,
  // place and room: see F), not from its offer: they must say what the record in force says,
  // through every report that swaps the record in place.
  const CHEAP = { inputPerMtok: 0.25, outputPerMtok: 1 };
  const idle = { load: [], gpuUtilization: 0, kvCacheUtilization: 0, healthy: true };
  const others = Array.from({ length: 40 }, (_, i) =>
    record({
      id: `n${String(i).padStart(2, '0')}`,
      km: 2 + i,
      permanent: true,
      offers: [offer({ price: { inputPerMtok: 2 + i } })],
    }),
  );
  /** An index over `nodes` with its trees built (no node waits in the list of recent ones). */
  const indexed = (nodes: readonly NodeRecord[]) => {
    const index = new CandidateIndex();
    for (const node of nodes) index.put(node);
    index.candidates('m')?.tree(PLACE_TREE);
    const ctx: RouteContext = { ...context([]), view: indexView(index, nodes) };
    return { index, ctx };
  };
  const req = request({ explain: false });

  it('a report that takes away the room of the cheapest node is heeded, and one that gives it back', () => {
    const cheap = (maxConcurrency: number, maxQueue: number, active: number) =>
      record({
        id: 'cheap',
        km: 1,
        permanent: true,
        offers: [offer({ maxConcurrency, maxQueue, price: CHEAP })],
        status: { ...idle, load: [{ model: 'm', active, queued: 0 }] },
      });
    const { index, ctx } = indexed([cheap(4, 0, 0), ...others]);
    expect(placedOn(decideRoute(req, ctx))).toBe('cheap');
    // One slot, which the report fills (nothing the index sorts by moved: swapped in place).
    index.put(cheap(1, 0, 1));
    const full = placed(decideRoute(req, ctx));
    expect(full.placement.nodeId).toBe('n00');
    expect(full.counts.rejected.AT_CAPACITY).toBe(1);
    // Room in its queue again: placed, with the wait the queue means (2.1 s: a budget to match).
    index.put(cheap(1, 2, 1));
    const queued = placed(decideRoute({ ...req, latencyBudgetMs: 10_000 }, ctx));
    expect(queued.placement.nodeId).toBe('cheap');
    expect(queued.placement.estimate.queueMs).toBeGreaterThan(0);
    // A queue of minus its slots (only a programmatic caller can send one) leaves no room at all.
    index.put(cheap(2, -2, 0));
    expect(placedOn(decideRoute(req, ctx))).toBe('n00');
  });

  it('a report that swaps a rate for an engine curve of the same bound rate is estimated by the curve', () => {
    const curves: EngineCurves = {
      name: 'two-points',
      prefill: { tokens: [500, 2000], ms: [40, 130] },
      decode: { batches: [1], contexts: [1], ms: [[10]] },
      maxBatch: 4,
      prefillBudget: 8192,
    };
    // The rate the index bounds an engine's prefill by (see boundRate): the swap moves nothing.
    const rate = curveRate(curves.prefill) * (1 + 1e-12);
    const byRate = record({
      id: 'cheap',
      km: 1,
      permanent: true,
      offers: [offer({ prefillTokensPerS: rate, price: CHEAP })],
      status: idle,
    });
    const { index, ctx } = indexed([byRate, ...others]);
    const first = placed(decideRoute(req, ctx));
    expect(first.placement.nodeId).toBe('cheap');
    expect(first.placement.estimate).toEqual(
      estimateOn(req, byRate, byRate.spec.models[0] as ModelOffer, 0, ctx),
    );
    const byCurve = {
      ...byRate,
      spec: {
        ...byRate.spec,
        models: [offer({ prefillTokensPerS: 1000, engine: { curves, replicas: 1 }, price: CHEAP })],
      },
    };
    index.put(byCurve);
    const second = placed(decideRoute(req, ctx));
    expect(second.placement.estimate).toEqual(
      estimateOn(req, byCurve, byCurve.spec.models[0] as ModelOffer, 0, ctx),
    );
    expect(second.placement.estimate.prefillMs).not.toBe(first.placement.estimate.prefillMs);
  });
});
