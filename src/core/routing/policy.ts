// Routing policies: how feasible nodes are ranked and one is picked. Feasibility is the checks
// list (checks.ts) and is the same for every policy, so the simulator's baselines differ from
// the production rule only in ranking, never in which nodes they may use.

import type { ModelOffer } from '../model.js';
import type { Rng } from '../rng.js';
import { CHECKS, type Checks, type EstimatedCandidate } from './checks.js';

/** Lower bounds that hold for every node of an index cell, for one request. */
export interface CellBounds {
  readonly costLowerBound: number;
  readonly rttLowerBoundMs: number;
}

export interface RoutingPolicy {
  readonly name: PolicyName;
  readonly checks: Checks;
  /** Orders feasible nodes, best first; a total order (the node id settles ties). */
  compare(a: EstimatedCandidate, b: EstimatedCandidate): number;
  /**
   * The first key of `compare`, and a lower bound of it for a cell. With both, the search visits
   * cells in bound order and stops once no cell can beat the ranked nodes it holds. Without,
   * every node within reach of the budget is evaluated.
   */
  readonly score?: (candidate: EstimatedCandidate) => number;
  readonly lowerBound?: (bounds: CellBounds) => number;
  /**
   * The second key of `compare`, and a lower bound of it for a cell: where many nodes share one
   * score (a price tier), a cell whose first bound only ties the ranked nodes can still be cut.
   */
  readonly tieScore?: (candidate: EstimatedCandidate) => number;
  /**
   * The first key of `compare` from a node's load alone (before its estimate), for a policy whose
   * `compare` settles equal keys by the node id: a node that already ranks after the worst ranked
   * node is passed over without an estimate.
   */
  readonly loadScore?: (load: number, offer: ModelOffer) => number;
  /**
   * The least `loadScore` can be (a node carrying nothing). Once every ranked node is at it, met
   * in ascending id order, no node met after them can rank: the search stops there.
   */
  readonly loadScoreFloor?: number;
  /**
   * The first key is the node's network RTT (`score` is the estimate's networkRttMs, `lowerBound`
   * its RTT bound). For a client placed by its region alone, every request from the region sees
   * the nodes in one RTT order, and a small model is read from that order (ModelCandidates.rttOrder).
   */
  readonly scoreIsRtt?: boolean;
  readonly tieLowerBound?: (bounds: CellBounds & { readonly ttftLowerBoundMs: number }) => number;
  /**
   * 'ranked': the best 1 + max_fallbacks, in `compare` order. 'all': every feasible node goes to
   * `pick` in the order the search met them — fixed by the registry's history, not by chance.
   */
  readonly collect: 'ranked' | 'all';
  /**
   * 'cost': the first key is a price, so when the budget reaches most nodes the search walks the
   * index's price tree; 'place' (the default): it always walks the place tree. Work, not answers.
   */
  readonly searchBy?: 'cost' | 'place';
  /** Chooses from the feasible nodes, in `compare` order; the rest of the top become fallbacks. */
  readonly pick?: (ranked: readonly EstimatedCandidate[]) => number;
  /**
   * For a policy that picks uniformly among the feasible nodes: an index below `count`, uniform.
   * Without fallbacks or explain, the search draws nodes with it and takes the first feasible
   * one (the same distribution), and only looks at every node when a few draws fail.
   */
  readonly draw?: (count: number) => number;
}

export const POLICY_NAMES = ['cheapest-feasible', 'nearest', 'least-loaded', 'random'] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The routing rule (DESIGN §3): lowest cost, then lower TTFT, then the smaller node id. */
export const CHEAPEST_FEASIBLE: RoutingPolicy = {
  name: 'cheapest-feasible',
  checks: CHECKS,
  compare: (a, b) =>
    a.estimate.cost - b.estimate.cost ||
    a.estimate.ttftMs - b.estimate.ttftMs ||
    compareIds(a.node.spec.id, b.node.spec.id),
  score: (c) => c.estimate.cost,
  lowerBound: (bounds) => bounds.costLowerBound,
  tieScore: (c) => c.estimate.ttftMs,
  tieLowerBound: (bounds) => bounds.ttftLowerBoundMs,
  collect: 'ranked',
  searchBy: 'cost',
};

/** Lowest network RTT among feasible nodes. */
export const NEAREST: RoutingPolicy = {
  name: 'nearest',
  checks: CHECKS,
  compare: (a, b) =>
    a.estimate.networkRttMs - b.estimate.networkRttMs || compareIds(a.node.spec.id, b.node.spec.id),
  score: (c) => c.estimate.networkRttMs,
  lowerBound: (bounds) => bounds.rttLowerBoundMs,
  scoreIsRtt: true,
  collect: 'ranked',
};

const shareOf = (load: number, offer: ModelOffer): number => load / (offer.maxConcurrency + offer.maxQueue);
const loadShare = (c: EstimatedCandidate): number => shareOf(c.load, c.offer);

/** Lowest share of capacity in use among feasible nodes. */
export const LEAST_LOADED: RoutingPolicy = {
  name: 'least-loaded',
  checks: CHECKS,
  compare: (a, b) => loadShare(a) - loadShare(b) || compareIds(a.node.spec.id, b.node.spec.id),
  score: loadShare,
  loadScore: shareOf,
  loadScoreFloor: 0,
  collect: 'ranked',
};

/**
 * Any feasible node, uniformly at random from `rng`: nodes drawn at random until one is feasible,
 * or a draw among every feasible node in the order the search met them. Both follow from the
 * registry's history and the seed, so a seeded run is reproducible.
 */
export function randomPolicy(rng: Rng): RoutingPolicy {
  return {
    name: 'random',
    checks: CHECKS,
    compare: (a, b) => compareIds(a.node.spec.id, b.node.spec.id),
    collect: 'all',
    pick: (ranked) => Math.floor(rng.next() * ranked.length),
    draw: (count) => Math.floor(rng.next() * count),
  };
}
