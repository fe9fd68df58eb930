// The placement policies a scenario compares. `cheapest-feasible` is the production rule (the
// core's decideRoute through the ControlPlane, exactly as `cpn serve` runs it); the others are the
// usual baselines, which ignore price and budget and only need a free slot.

import { type ClientPosition, estimateRtt, type LatencyModel } from '../core/latency.js';
import { findOffer, type Level, type NodeRecord, nodeState, reportedLoad } from '../core/model.js';
import type { Rng } from '../core/rng.js';
import type { InfeasibleReason, PendingReservations, RoutingView } from '../core/scheduler.js';

export interface BaselineRequest {
  readonly model: string;
  readonly client: ClientPosition;
  readonly allowedLevels: readonly Level[];
}

export type BaselineChoice =
  | { readonly kind: 'placed'; readonly node: NodeRecord }
  | { readonly kind: 'infeasible'; readonly reason: InfeasibleReason };

export interface BaselineContext {
  readonly view: RoutingView;
  readonly reservations: PendingReservations;
  readonly latency: LatencyModel;
  readonly nowMs: number;
}

type Score = (node: NodeRecord, load: number, capacity: number) => number;

function choose(
  request: BaselineRequest,
  ctx: BaselineContext,
  score: Score | 'random',
  rng: Rng,
): BaselineChoice {
  const levels = request.allowedLevels.length > 0 ? new Set(request.allowedLevels) : undefined;
  let live = 0;
  const open: { node: NodeRecord; load: number; capacity: number }[] = [];
  for (const tier of ctx.view.priceTiers(request.model)) {
    for (const node of tier.nodes.values()) {
      const offer = findOffer(node.spec, request.model);
      if (offer === undefined || nodeState(node, ctx.nowMs) !== 'READY') continue;
      if (levels !== undefined && !levels.has(node.spec.level)) continue;
      live += 1;
      const load =
        reportedLoad(node, request.model) +
        ctx.reservations.pending(node.spec.id, request.model, node.statusAtMs);
      const capacity = offer.maxConcurrency + offer.maxQueue;
      if (load < capacity) open.push({ node, load, capacity });
    }
  }
  if (open.length === 0) return { kind: 'infeasible', reason: live === 0 ? 'NO_LIVE_NODE' : 'ALL_FULL' };
  if (score === 'random') {
    // Sort first so the pick depends on the seed only, not on map iteration order.
    open.sort((a, b) => (a.node.spec.id < b.node.spec.id ? -1 : 1));
    return {
      kind: 'placed',
      node: (open[Math.floor(rng.next() * open.length)] as (typeof open)[number]).node,
    };
  }
  let best = open[0] as (typeof open)[number];
  let bestScore = score(best.node, best.load, best.capacity);
  for (const candidate of open) {
    const value = score(candidate.node, candidate.load, candidate.capacity);
    if (value < bestScore || (value === bestScore && candidate.node.spec.id < best.node.spec.id)) {
      best = candidate;
      bestScore = value;
    }
  }
  return { kind: 'placed', node: best.node };
}

/** Lowest estimated RTT among nodes with a free slot. */
export function nearest(request: BaselineRequest, ctx: BaselineContext, rng: Rng): BaselineChoice {
  const rtt: Score = (node) =>
    estimateRtt(request.client, node.spec, ctx.latency, ctx.view.samplesFrom, ctx.nowMs).rttMs;
  return choose(request, ctx, rtt, rng);
}

/** Lowest share of capacity in use among nodes with a free slot. */
export function leastLoaded(request: BaselineRequest, ctx: BaselineContext, rng: Rng): BaselineChoice {
  return choose(request, ctx, (_node, load, capacity) => load / capacity, rng);
}

/** Any node with a free slot, uniformly at random. */
export function randomNode(request: BaselineRequest, ctx: BaselineContext, rng: Rng): BaselineChoice {
  return choose(request, ctx, 'random', rng);
}
