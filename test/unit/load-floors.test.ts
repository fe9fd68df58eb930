// Load floors: what a decision saw of a node's load lets later ones pass over a node whose queue
// alone puts it past their budget, unread, until its load may have fallen (see LoadFloors).

import { describe, expect, it, vi } from 'vitest';
import type { NodeRecord } from '../../src/core/model.js';
import {
  CandidateIndex,
  DEFAULT_SEARCH_TUNING,
  type DecisionCounts,
  decideRoute,
  type PendingReservations,
  type RouteContext,
  type RouteDecision,
  type RouteRequest,
} from '../../src/core/routing/index.js';
import {
  book,
  context,
  FLAT_LATENCY,
  loadedRecord,
  offer,
  plain,
  record,
  request,
} from '../helpers/fixtures.js';

/**
 * Two nodes in one place: `cheap` (2 slots, 4 queued at most; `active` requests on it, reported at
 * `statusAtMs`, prefilling at `rate`) and `dear` at twice its price.
 */
function nodes(options: { active?: number; statusAtMs?: number; rate?: number } = {}): NodeRecord[] {
  return [
    loadedRecord(
      {
        id: 'cheap',
        offers: [
          offer({
            maxConcurrency: 2,
            maxQueue: 4,
            prefillTokensPerS: options.rate ?? 10_000,
            price: { inputPerMtok: 1 },
          }),
        ],
        active: options.active ?? 0,
        healthy: true,
        silentMs: 0,
      },
      options.statusAtMs ?? 0,
    ),
    record({ id: 'dear', offers: [offer({ maxConcurrency: 2, maxQueue: 4, price: { inputPerMtok: 2 } })] }),
  ];
}

/** 1,000 prompt tokens (100 ms of prefill) and 100 output tokens (2 s of decode at 50/s). */
const ask = (latencyBudgetMs: number): RouteRequest =>
  request({ latencyBudgetMs, inputTokens: 1000, maxOutputTokens: 100, maxFallbacks: 0, explain: false });

function placedOn(decision: RouteDecision): string | undefined {
  return decision.kind === 'placed' ? decision.placement.nodeId : undefined;
}

function countsOf(decision: RouteDecision): DecisionCounts {
  if (decision.kind === 'refused') throw new Error('no admission rule was given');
  return decision.counts;
}

describe('load floors', () => {
  it('pass over a node known to queue past the budget, unread, until a reservation on it is released', () => {
    const reservations = book();
    const ctx = context(nodes(), { reservations });
    // Both slots of `cheap` held: the next request queues behind one of them (about 1 s).
    reservations.reserve('cheap', 'm', '', 0, 0);
    const second = reservations.reserve('cheap', 'm', '', 0, 0);
    const first = decideRoute(ask(1000), ctx);
    expect(placedOn(first)).toBe('dear');
    expect(countsOf(first).rejected.QUEUE_OVER_BUDGET).toBe(1);
    const again = decideRoute(ask(1000), ctx);
    expect(placedOn(again)).toBe('dear');
    // Passed over from what the first decision saw: not read, so not counted as rejected.
    expect(countsOf(again).rejected.QUEUE_OVER_BUDGET).toBeUndefined();
    expect(countsOf(again).unevaluated).toBe(1);
    reservations.release(second.id);
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('cheap');
  });

  it('fall by one with each reservation released, without the node being read again', () => {
    const reservations = book();
    const ctx = context(nodes(), { reservations });
    const held = [0, 1, 2].map(() => reservations.reserve('cheap', 'm', '', 0, 0));
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('dear');
    // Three on two slots, then two: the queue is still past the budget, and the floor knows it.
    reservations.release((held[0] as (typeof held)[number]).id);
    const still = decideRoute(ask(1000), ctx);
    expect(placedOn(still)).toBe('dear');
    expect(countsOf(still).unevaluated).toBe(1);
    reservations.release((held[1] as (typeof held)[number]).id);
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('cheap');
  });

  it('never pass over a node whose queue fits the budget exactly', () => {
    const reservations = book();
    const ctx = context(nodes(), { reservations });
    reservations.reserve('cheap', 'm', '', 0, 0);
    reservations.reserve('cheap', 'm', '', 0, 0);
    const loose = decideRoute(ask(1e6), ctx);
    if (loose.kind !== 'placed') throw new Error('a loose request is placed');
    expect(loose.placement.nodeId).toBe('cheap');
    const ttftMs = loose.placement.estimate.ttftMs;
    expect(ttftMs).toBeGreaterThan(1000);
    for (let k = 0; k < 2; k += 1) expect(placedOn(decideRoute(ask(ttftMs), ctx))).toBe('cheap');
    expect(placedOn(decideRoute(ask(ttftMs * (1 - 1e-6)), ctx))).toBe('dear');
  });

  it('are forgotten when a status report replaces the record, or when reservations expire', () => {
    const index = new CandidateIndex();
    const [busy, dear] = nodes({ active: 2 }) as [NodeRecord, NodeRecord];
    index.put(busy);
    index.put(dear);
    const reservations = book(1000);
    const ctx: RouteContext = {
      ...context([busy, dear], { reservations }),
      view: {
        candidates: (model) => index.candidates(model),
        allNodes: () => [busy, dear],
        nodeCount: () => 2,
        samplesFrom: () => undefined,
      },
    };
    decideRoute(ask(1000), ctx);
    expect(countsOf(decideRoute(ask(1000), ctx)).unevaluated).toBe(1);
    // The node reports it has nothing running: it is read again, and fits.
    index.put(nodes()[0] as NodeRecord);
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('cheap');

    index.put(nodes()[0] as NodeRecord);
    reservations.reserve('cheap', 'm', '', 0, 0);
    reservations.reserve('cheap', 'm', '', 0, 0);
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('dear');
    expect(countsOf(decideRoute(ask(1000), ctx)).unevaluated).toBe(1);
    reservations.expire(1000);
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('cheap');
  });

  it('still answer ALL_FULL when every node is full, and count the full node', () => {
    const reservations = book();
    const ctx = context(nodes().slice(0, 1), { reservations });
    for (let k = 0; k < 6; k += 1) reservations.reserve('cheap', 'm', '', 0, 0);
    for (let k = 0; k < 3; k += 1) {
      const decision = decideRoute(ask(1e6), ctx);
      expect(decision).toMatchObject({ kind: 'infeasible', reason: 'ALL_FULL' });
      expect(countsOf(decision).rejected.AT_CAPACITY).toBe(1);
    }
  });

  it('are forgotten by a view the book stops telling (one book tells eight views at most)', () => {
    const reservations = book();
    const first = context(nodes(), { reservations });
    const held = [0, 1].map(() => reservations.reserve('cheap', 'm', '', 0, 0));
    expect(placedOn(decideRoute(ask(1000), first))).toBe('dear');
    expect(countsOf(decideRoute(ask(1000), first)).unevaluated).toBe(1);
    // Eight more views route with the same book: the first is no longer told when loads fall.
    for (let k = 0; k < 8; k += 1) decideRoute(ask(1000), context(nodes(), { reservations }));
    reservations.release((held[0] as (typeof held)[number]).id);
    expect(placedOn(decideRoute(ask(1000), first))).toBe('cheap');
  });

  it('kept under one reservation book are not trusted under another', () => {
    const loaded = book();
    const ctx = context(nodes(), { reservations: loaded, latency: FLAT_LATENCY });
    loaded.reserve('cheap', 'm', '', 0, 0);
    loaded.reserve('cheap', 'm', '', 0, 0);
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('dear');
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('dear');
    // The same registry view, another book in which `cheap` holds nothing.
    expect(placedOn(decideRoute(ask(1000), { ...ctx, reservations: book() }))).toBe('cheap');
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('dear');
  });

  it('hold when reservations were stamped out of order', () => {
    // A session's hold stamps the time it read before awaiting its store write, so stamps can
    // reach the book out of order: those before the report (900) are in it, the rest count.
    const reservations = book();
    const records = nodes({ statusAtMs: 900 });
    const ctx = context(records, { reservations, nowMs: 1000 });
    const without = () =>
      decideRoute(ask(1000), context(records, { reservations: plain(reservations), nowMs: 1000 }));
    const held = [1000, 800, 950, 800, 920].map((atMs) => reservations.reserve('cheap', 'm', '', atMs, 0));
    // Three count (1000, 950, 920): the queue is past the budget.
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('dear');
    // Released in turn: 1000 (two count), 800 (in the report: still two), 950 (one).
    for (const i of [0, 1, 2]) {
      reservations.release((held[i] as (typeof held)[number]).id);
      // Decided first: a decision without floors reads the node, and may tell the book more.
      const withFloors = decideRoute(ask(1000), ctx);
      expect(placedOn(withFloors)).toBe(placedOn(without()));
    }
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('cheap');
  });

  it('hold for a view whose reservations another view saw covered by a newer report', () => {
    const reservations = book();
    const stale = nodes({ statusAtMs: 0 });
    const lagging = context(stale, { reservations, nowMs: 1000 });
    const current = context(nodes({ statusAtMs: 500 }), { reservations, nowMs: 1000 });
    for (let k = 0; k < 3; k += 1) reservations.reserve('cheap', 'm', '', 100, 0);
    expect(placedOn(decideRoute(ask(1000), lagging))).toBe('dear');
    // This view's report covers all three: they stop counting for every view.
    expect(placedOn(decideRoute(ask(1000), current))).toBe('cheap');
    expect(placedOn(decideRoute(ask(1000), lagging))).toBe('cheap');
    expect(
      placedOn(decideRoute(ask(1000), context(stale, { reservations: plain(reservations), nowMs: 1000 }))),
    ).toBe('cheap');
  });

  it('cost no more of the work cap than reading the nodes would: a sampled full node', () => {
    // `cheap` is full and has a measured RTT: it is read up front, and its slot in the walk is
    // passed over for free, as without floors, leaving the cap's second visit for `dear`.
    const reservations = book();
    const records = nodes({ rate: 20_000 });
    const samples = { 'CN-GD|cheap': { rttMs: 1, updatedAtMs: 0, count: 3 } };
    const ctx = context(records, { reservations, maxVisits: 2, samples });
    for (let k = 0; k < 6; k += 1) reservations.reserve('cheap', 'm', '', 0, 0);
    for (let k = 0; k < 3; k += 1) expect(placedOn(decideRoute(ask(1000), ctx))).toBe('dear');
    const withoutFloors = context(records, { reservations: plain(reservations), maxVisits: 2, samples });
    expect(placedOn(decideRoute(ask(1000), withoutFloors))).toBe('dear');
  });

  it('cost no more of the work cap than reading the nodes would: the price walk handing over', () => {
    // Two full nodes (the cheapest) and a free one, leaves of one node, a price walk that gives up
    // after 2 cells: a node it passed over is not charged again by the mixed walk that takes over.
    const full = (i: number) =>
      record({
        id: `full${i}`,
        km: i * 50,
        offers: [offer({ maxConcurrency: 1, price: { inputPerMtok: 1 + i / 100 } })],
      });
    const records = [
      full(0),
      full(1),
      record({ id: 'free', km: 10, offers: [offer({ maxConcurrency: 1, price: { inputPerMtok: 3 } })] }),
    ];
    const late = record({
      id: 'late',
      km: 5,
      offers: [offer({ maxConcurrency: 1, price: { inputPerMtok: 5 } })],
    });
    const reservations = book();
    for (const id of ['full0', 'full1', 'late']) reservations.reserve(id, 'm', '', 0, 0);
    const searchTuning = {
      ...DEFAULT_SEARCH_TUNING,
      priceTreeReach: 0,
      priceTreeMaxCells: 2,
      priceTreeRetryAfter: 0,
    };
    const loose = request({ latencyBudgetMs: 1e5, explain: false, maxFallbacks: 0 });
    const setUp = (pending: PendingReservations): RouteContext => {
      const index = new CandidateIndex(undefined, [1, 1, 1]);
      for (const node of records) index.put(node);
      const ctx: RouteContext = {
        ...context(records, { reservations: pending }),
        view: {
          candidates: (model) => index.candidates(model),
          allNodes: () => [...records, late],
          nodeCount: () => 4,
          samplesFrom: () => undefined,
        },
        searchTuning,
      };
      for (let k = 0; k < 2; k += 1) decideRoute({ ...loose, maxFallbacks: 3 }, ctx);
      // A node registered since the trees were built: every search reads it.
      index.put(late);
      return { ...ctx, maxVisits: 4 };
    };
    expect(placedOn(decideRoute(loose, setUp(plain(reservations))))).toBe('free');
    expect(placedOn(decideRoute(loose, setUp(reservations)))).toBe('free');
  });

  it('spare a degraded pick the nodes known to have no free slot, until one is released', () => {
    const reservations = book();
    const ctx = context(nodes(), { reservations });
    const held = [0, 1, 2, 3, 4, 5].map(() => reservations.reserve('cheap', 'm', '', 0, 0));
    // Nothing meets 1 ms: the nearest node with a free slot is taken, degraded.
    const degraded = { ...ask(1), allowDegraded: true };
    expect(placedOn(decideRoute(degraded, ctx))).toBe('dear');
    const reads = vi.spyOn(reservations, 'pending');
    const readsOfCheap = () => reads.mock.calls.filter(([nodeId]) => nodeId === 'cheap').length;
    expect(placedOn(decideRoute(degraded, ctx))).toBe('dear');
    expect(readsOfCheap()).toBe(0);
    reservations.release((held[0] as (typeof held)[number]).id);
    expect(placedOn(decideRoute(degraded, ctx))).toBe('dear');
    expect(readsOfCheap()).toBeGreaterThan(0);
  });

  it('are not read by walks once the only node with a floor is removed', () => {
    const index = new CandidateIndex();
    const [cheap, dear] = nodes({ active: 6 }) as [NodeRecord, NodeRecord];
    index.put(cheap);
    index.put(dear);
    const ctx: RouteContext = {
      ...context([cheap, dear]),
      view: {
        candidates: (model) => index.candidates(model),
        allNodes: () => [cheap, dear],
        nodeCount: () => 2,
        samplesFrom: () => undefined,
      },
    };
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('dear');
    expect(index.candidates('m')?.anyLoadFloor).toBe(true);
    index.remove('cheap');
    expect(index.candidates('m')?.anyLoadFloor).toBe(false);
  });
});
