// Load floors: what a decision saw of a node's load lets later ones pass over a node whose queue
// alone puts it past their budget, unread, until its load may have fallen (see LoadFloors).

import { describe, expect, it } from 'vitest';
import type { NodeRecord } from '../../src/core/model.js';
import {
  CandidateIndex,
  type DecisionCounts,
  decideRoute,
  type RouteContext,
  type RouteDecision,
  type RouteRequest,
} from '../../src/core/routing/index.js';
import { book, context, FLAT_LATENCY, offer, record, request } from '../helpers/fixtures.js';

/** Two nodes in one place: `cheap` (2 slots, 4 queued at most) and `dear` at twice its price. */
function nodes(cheapActive = 0): NodeRecord[] {
  return [
    record({
      id: 'cheap',
      offers: [offer({ maxConcurrency: 2, maxQueue: 4, price: { inputPerMtok: 1 } })],
      status: {
        load: [{ model: 'm', active: cheapActive, queued: 0 }],
        gpuUtilization: 0,
        kvCacheUtilization: 0,
        healthy: true,
      },
    }),
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
    const [busy, dear] = nodes(2) as [NodeRecord, NodeRecord];
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
    index.put(nodes(0)[0] as NodeRecord);
    expect(placedOn(decideRoute(ask(1000), ctx))).toBe('cheap');

    index.put(nodes(0)[0] as NodeRecord);
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
});
