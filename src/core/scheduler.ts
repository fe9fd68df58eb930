// The routing rule (DESIGN.md §3): among the nodes that can take the request within its latency
// budget, choose the cheapest; ties go to the lower TTFT, then the smaller node id.
//
// Pure: the caller passes the registry view, pending reservations, the latency model, the price
// hook and the time. The decision comes back with its trace (verdict counts, explain entries) so
// that shells can record metrics and logs without the core doing I/O. Reserving the chosen slot is
// the caller's next step (see ReservationBook), so that a cancelled call can skip it.

import { type PriceMultiplier, prefillMs, queueMs, type RequestSize, requestCost } from './cost.js';
import type { GeoGrid } from './geo-grid.js';
import {
  type ClientPosition,
  estimateRttFor,
  type LatencyModel,
  type LatencySource,
  type PreparedClient,
  prepareClient,
  type SamplesFrom,
} from './latency.js';
import {
  findOffer,
  type Level,
  type ModelOffer,
  type NodeRecord,
  nodeState,
  type Price,
  reportedLoad,
} from './model.js';

export const MAX_FALLBACKS = 16;

export interface RouteRequest extends RequestSize {
  readonly requestId: string;
  readonly tenant: string;
  readonly model: string;
  readonly client: ClientPosition;
  readonly latencyBudgetMs: number;
  /** Empty: any level. */
  readonly allowedLevels: readonly Level[];
  /** Empty: any region. */
  readonly allowedRegions: readonly string[];
  readonly allowDegraded: boolean;
  readonly explain: boolean;
  /** 0..MAX_FALLBACKS */
  readonly maxFallbacks: number;
}

export interface Estimate {
  readonly networkRttMs: number;
  readonly queueMs: number;
  readonly prefillMs: number;
  readonly ttftMs: number;
  readonly cost: number;
  readonly latencySource: LatencySource;
}

/** Why a node was or was not chosen. Checks run in this order; the first failure is the verdict. */
export type Verdict =
  | 'SELECTED'
  | 'FALLBACK'
  | 'FEASIBLE'
  | 'DEGRADED_SELECTED'
  | 'MODEL_NOT_SERVED'
  | 'LEVEL_EXCLUDED'
  | 'REGION_EXCLUDED'
  | 'DOWN'
  | 'UNHEALTHY'
  | 'DRAINING'
  | 'OVER_BUDGET'
  | 'AT_CAPACITY'
  | 'QUEUE_OVER_BUDGET';

export type RejectionVerdict = Exclude<Verdict, 'SELECTED' | 'FALLBACK' | 'FEASIBLE' | 'DEGRADED_SELECTED'>;

export interface Placement {
  readonly nodeId: string;
  readonly endpoint: string;
  readonly level: Level;
  readonly region: string;
  readonly model: string;
  readonly estimate: Estimate;
}

export interface ExplainEntry {
  readonly nodeId: string;
  readonly level: Level;
  readonly region: string;
  readonly verdict: Verdict;
  /** Absent for nodes rejected before estimation. */
  readonly estimate: Estimate | undefined;
}

/** Rejections per verdict, and how many nodes serve the model at all. */
export interface DecisionCounts {
  readonly serving: number;
  /** Nodes actually evaluated; fewer than `serving` when dearer price tiers were skipped. */
  readonly evaluated: number;
  readonly feasible: number;
  readonly rejected: Readonly<Partial<Record<RejectionVerdict, number>>>;
}

/**
 * - NO_LIVE_NODE: no node that serves the model is up and healthy (→ NOT_FOUND);
 * - NO_NODE_WITHIN_CONSTRAINTS: live nodes serve it but none meets budget and constraints even
 *   idle (→ FAILED_PRECONDITION);
 * - ALL_FULL: some would meet budget and constraints but have no usable slot (→ RESOURCE_EXHAUSTED).
 */
export type InfeasibleReason = 'NO_LIVE_NODE' | 'NO_NODE_WITHIN_CONSTRAINTS' | 'ALL_FULL';

export type RouteDecision =
  | {
      readonly kind: 'placed';
      readonly placement: Placement;
      /** Ordered feasible alternatives; not reserved. Empty when degraded. */
      readonly fallbacks: readonly Placement[];
      readonly degraded: boolean;
      readonly counts: DecisionCounts;
      readonly explain: readonly ExplainEntry[];
      readonly summary: string;
    }
  | {
      readonly kind: 'infeasible';
      readonly reason: InfeasibleReason;
      /** Lowest TTFT among the nodes that were estimated; undefined if none was. */
      readonly bestTtftMs: number | undefined;
      readonly counts: DecisionCounts;
      readonly explain: readonly ExplainEntry[];
      readonly summary: string;
    };

/** Nodes whose offer of one model has exactly this price, by node id. */
export interface PriceTier {
  readonly price: Price;
  readonly nodes: ReadonlyMap<string, NodeRecord>;
  /** The same nodes by location; lets a tight budget visit only nodes near enough to meet it. */
  readonly grid?: GeoGrid<NodeRecord>;
}

/** What the core needs to read from a registry. Implementations serve it from memory. */
export interface RoutingView {
  /**
   * Every registered node (in any state) that offers `model`, grouped by the price of that offer.
   * Operators price in tiers, so there are few tiers and the scheduler can visit them cheapest
   * first and stop early instead of scanning every node.
   */
  priceTiers(model: string): Iterable<PriceTier>;
  /** Every registered node; read only when explain is requested. */
  allNodes(): Iterable<NodeRecord>;
  readonly samplesFrom: SamplesFrom;
}

/** Reservations not yet covered by the node's last status report (see ReservationBook.pending). */
export interface PendingReservations {
  pending(nodeId: string, model: string, statusAtMs: number | undefined): number;
}

export interface RouteContext {
  readonly view: RoutingView;
  readonly reservations: PendingReservations;
  readonly latency: LatencyModel;
  readonly priceMultiplier: PriceMultiplier;
  readonly nowMs: number;
}

interface Evaluated {
  readonly node: NodeRecord;
  readonly offer: ModelOffer;
  verdict: Verdict;
  readonly estimate: Estimate | undefined;
  readonly hasSlot: boolean;
}

/**
 * Decides where `request` goes. Never throws for expected outcomes; see RouteDecision.
 *
 * Price tiers are visited cheapest first. Once the best 1 + max_fallbacks feasible nodes are
 * known and the next tier cannot beat the worst of them even at the multiplier floor, the rest
 * is skipped (counts then cover the evaluated nodes only). Explain, degraded and infeasible
 * decisions see every node, so their counts are complete.
 */
export function decideRoute(request: RouteRequest, ctx: RouteContext): RouteDecision {
  const client = prepareClient(request.client, ctx.latency, ctx.view.samplesFrom);
  // A node farther than this cannot meet the budget on distance alone (unless measured closer):
  // visit only nodes within it. If that finds nothing feasible, decide again over every node so
  // that the reasons and counts of the answer are exact.
  const radiusKm =
    client.location === undefined || request.explain
      ? undefined
      : (request.latencyBudgetMs * ctx.latency.fiberKmPerMs) / (2 * ctx.latency.routeStretch);
  if (radiusKm !== undefined) {
    const near = decide(request, ctx, client, radiusKm);
    if (near.kind === 'placed' && !near.degraded) return near;
  }
  return decide(request, ctx, client, undefined);
}

/** Nodes of `tier` that may meet the budget: within `radiusKm`, or measured close enough. */
function nearbyNodes(
  tier: PriceTier,
  client: PreparedClient,
  radiusKm: number,
  budgetMs: number,
): Iterable<NodeRecord> {
  const center = client.location;
  if (tier.grid === undefined || center === undefined) return tier.nodes.values();
  const near = tier.grid.near(center, radiusKm);
  if (near === undefined) return tier.nodes.values();
  const seen = new Set<string>();
  for (const samples of client.sampleMaps) {
    for (const [nodeId, sample] of samples) {
      if (sample.rttMs > budgetMs || seen.has(nodeId)) continue;
      const node = tier.nodes.get(nodeId);
      if (node === undefined || tier.grid.covers(nodeId, center, radiusKm)) continue;
      seen.add(nodeId);
      near.push(node);
    }
  }
  return near;
}

function decide(
  request: RouteRequest,
  ctx: RouteContext,
  client: PreparedClient,
  radiusKm: number | undefined,
): RouteDecision {
  const levels = request.allowedLevels.length > 0 ? new Set(request.allowedLevels) : undefined;
  const regions = request.allowedRegions.length > 0 ? new Set(request.allowedRegions) : undefined;
  const rejected: Partial<Record<RejectionVerdict, number>> = {};
  const reject = (entry: Evaluated, verdict: RejectionVerdict): void => {
    entry.verdict = verdict;
    rejected[verdict] = (rejected[verdict] ?? 0) + 1;
  };

  const tiers = [...ctx.view.priceTiers(request.model)]
    .map((tier) => ({ tier, floorCost: requestCost(request, tier.price, ctx.priceMultiplier.floor) }))
    .sort((a, b) => a.floorCost - b.floorCost);
  const evaluated: Evaluated[] = [];
  const best = new TopK<Evaluated>(1 + Math.min(request.maxFallbacks, MAX_FALLBACKS), byCostThenTtftThenId);
  let serving = 0;
  let visited = 0;
  let live = 0;
  let feasible = 0;
  let bestTtftMs: number | undefined;

  for (const { tier } of tiers) serving += tier.nodes.size;
  for (const { tier, floorCost } of tiers) {
    const worst = best.worst();
    if (!request.explain && worst !== undefined && floorCost > (worst.estimate as Estimate).cost) break;
    const candidates =
      radiusKm === undefined
        ? tier.nodes.values()
        : nearbyNodes(tier, client, radiusKm, request.latencyBudgetMs);
    for (const node of candidates) {
      const offer = findOffer(node.spec, request.model);
      if (offer === undefined) continue;
      visited += 1;
      const state = nodeState(node, ctx.nowMs);
      if (state === 'READY' || state === 'DRAINING') live += 1;
      const precheck = precheckVerdict(node, state, levels, regions);
      if (precheck !== undefined) {
        const entry: Evaluated = { node, offer, verdict: precheck, estimate: undefined, hasSlot: false };
        reject(entry, precheck);
        if (request.explain) evaluated.push(entry);
        continue;
      }
      const load =
        reportedLoad(node, request.model) +
        ctx.reservations.pending(node.spec.id, request.model, node.statusAtMs);
      const estimate = estimateFor(request, client, node, offer, load, ctx);
      const hasSlot = load < offer.maxConcurrency + offer.maxQueue;
      const entry: Evaluated = { node, offer, verdict: 'FEASIBLE', estimate, hasSlot };
      bestTtftMs = bestTtftMs === undefined ? estimate.ttftMs : Math.min(bestTtftMs, estimate.ttftMs);
      if (estimate.ttftMs - estimate.queueMs > request.latencyBudgetMs) reject(entry, 'OVER_BUDGET');
      else if (!hasSlot) reject(entry, 'AT_CAPACITY');
      else if (estimate.ttftMs > request.latencyBudgetMs) reject(entry, 'QUEUE_OVER_BUDGET');
      else {
        feasible += 1;
        best.offer(entry);
      }
      // Degraded mode needs the rejected-but-usable nodes too.
      if (request.explain || request.allowDegraded) evaluated.push(entry);
    }
  }

  const counts: DecisionCounts = { serving, evaluated: visited, feasible, rejected };
  const chosen = best.sorted();
  const [first, ...rest] = chosen;
  if (first !== undefined) {
    first.verdict = 'SELECTED';
    for (const fallback of rest) fallback.verdict = 'FALLBACK';
    const placement = placementOf(first, request.model);
    return {
      kind: 'placed',
      placement,
      fallbacks: rest.map((entry) => placementOf(entry, request.model)),
      degraded: false,
      counts,
      explain: request.explain ? explainEntries(evaluated, request.model, ctx.view) : [],
      summary: placedSummary(request, placement, counts, false),
    };
  }

  if (request.allowDegraded) {
    const degraded = pickDegraded(evaluated);
    if (degraded !== undefined) {
      degraded.verdict = 'DEGRADED_SELECTED';
      const placement = placementOf(degraded, request.model);
      return {
        kind: 'placed',
        placement,
        fallbacks: [],
        degraded: true,
        counts,
        explain: request.explain ? explainEntries(evaluated, request.model, ctx.view) : [],
        summary: placedSummary(request, placement, counts, true),
      };
    }
  }

  const reason: InfeasibleReason =
    live === 0
      ? 'NO_LIVE_NODE'
      : (rejected.AT_CAPACITY ?? 0) + (rejected.QUEUE_OVER_BUDGET ?? 0) > 0
        ? 'ALL_FULL'
        : 'NO_NODE_WITHIN_CONSTRAINTS';
  return {
    kind: 'infeasible',
    reason,
    bestTtftMs,
    counts,
    explain: request.explain ? explainEntries(evaluated, request.model, ctx.view) : [],
    summary: infeasibleSummary(request, counts, bestTtftMs),
  };
}

function precheckVerdict(
  node: NodeRecord,
  state: ReturnType<typeof nodeState>,
  levels: ReadonlySet<Level> | undefined,
  regions: ReadonlySet<string> | undefined,
): RejectionVerdict | undefined {
  if (levels !== undefined && !levels.has(node.spec.level)) return 'LEVEL_EXCLUDED';
  if (regions !== undefined && !regions.has(node.spec.region)) return 'REGION_EXCLUDED';
  if (state !== 'READY') return state;
  return undefined;
}

/** TTFT and cost of `request` on `offer` of `node` carrying `load` requests. */
export function estimateOn(
  request: RouteRequest,
  node: NodeRecord,
  offer: ModelOffer,
  load: number,
  ctx: Pick<RouteContext, 'view' | 'latency' | 'priceMultiplier' | 'nowMs'>,
): Estimate {
  const client = prepareClient(request.client, ctx.latency, ctx.view.samplesFrom);
  return estimateFor(request, client, node, offer, load, ctx);
}

function estimateFor(
  request: RouteRequest,
  client: PreparedClient,
  node: NodeRecord,
  offer: ModelOffer,
  load: number,
  ctx: Pick<RouteContext, 'latency' | 'priceMultiplier' | 'nowMs'>,
): Estimate {
  const rtt = estimateRttFor(client, node.spec, ctx.latency, ctx.nowMs);
  const prefill = prefillMs(request, offer);
  const queue = queueMs(request, offer, load);
  return {
    networkRttMs: rtt.rttMs,
    queueMs: queue,
    prefillMs: prefill,
    ttftMs: rtt.rttMs + queue + prefill,
    cost: requestCost(request, offer.price, ctx.priceMultiplier.at(node.spec, request.model, ctx.nowMs)),
    latencySource: rtt.source,
  };
}

function byCostThenTtftThenId(a: Evaluated, b: Evaluated): number {
  const ea = a.estimate as Estimate;
  const eb = b.estimate as Estimate;
  return ea.cost - eb.cost || ea.ttftMs - eb.ttftMs || compareIds(a.node.spec.id, b.node.spec.id);
}

function byTtftThenCostThenId(a: Evaluated, b: Evaluated): number {
  const ea = a.estimate as Estimate;
  const eb = b.estimate as Estimate;
  return ea.ttftMs - eb.ttftMs || ea.cost - eb.cost || compareIds(a.node.spec.id, b.node.spec.id);
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Degraded mode: the lowest-TTFT node that is ready, within constraints and has a slot. */
function pickDegraded(evaluated: readonly Evaluated[]): Evaluated | undefined {
  let pick: Evaluated | undefined;
  for (const entry of evaluated) {
    if (entry.estimate === undefined || !entry.hasSlot) continue;
    if (pick === undefined || byTtftThenCostThenId(entry, pick) < 0) pick = entry;
  }
  return pick;
}

function placementOf(entry: Evaluated, model: string): Placement {
  const { spec } = entry.node;
  return {
    nodeId: spec.id,
    endpoint: spec.endpoint,
    level: spec.level,
    region: spec.region,
    model,
    estimate: entry.estimate as Estimate,
  };
}

const VERDICT_ORDER: readonly Verdict[] = [
  'SELECTED',
  'DEGRADED_SELECTED',
  'FALLBACK',
  'FEASIBLE',
  'QUEUE_OVER_BUDGET',
  'AT_CAPACITY',
  'OVER_BUDGET',
  'DRAINING',
  'UNHEALTHY',
  'DOWN',
  'REGION_EXCLUDED',
  'LEVEL_EXCLUDED',
  'MODEL_NOT_SERVED',
];
const VERDICT_RANK = new Map(VERDICT_ORDER.map((verdict, index) => [verdict, index]));

/** Every node with its verdict: chosen first, then the closest misses, then the rest. */
function explainEntries(evaluated: readonly Evaluated[], model: string, view: RoutingView): ExplainEntry[] {
  const entries: ExplainEntry[] = evaluated.map((entry) => ({
    nodeId: entry.node.spec.id,
    level: entry.node.spec.level,
    region: entry.node.spec.region,
    verdict: entry.verdict,
    estimate: entry.estimate,
  }));
  for (const node of view.allNodes()) {
    if (findOffer(node.spec, model) !== undefined) continue;
    entries.push({
      nodeId: node.spec.id,
      level: node.spec.level,
      region: node.spec.region,
      verdict: 'MODEL_NOT_SERVED',
      estimate: undefined,
    });
  }
  return entries.sort(
    (a, b) =>
      (VERDICT_RANK.get(a.verdict) ?? 0) - (VERDICT_RANK.get(b.verdict) ?? 0) ||
      (a.estimate?.cost ?? 0) - (b.estimate?.cost ?? 0) ||
      (a.estimate?.ttftMs ?? 0) - (b.estimate?.ttftMs ?? 0) ||
      compareIds(a.nodeId, b.nodeId),
  );
}

const VERDICT_WORDS: Readonly<Record<RejectionVerdict, string>> = {
  MODEL_NOT_SERVED: 'do not serve the model',
  LEVEL_EXCLUDED: 'at an excluded level',
  REGION_EXCLUDED: 'in an excluded region',
  DOWN: 'down',
  UNHEALTHY: 'unhealthy',
  DRAINING: 'draining',
  OVER_BUDGET: 'over budget',
  AT_CAPACITY: 'at capacity',
  QUEUE_OVER_BUDGET: 'over budget because of their queue',
};

function formatMs(ms: number): string {
  return `${ms.toFixed(1)} ms`;
}

function describeCounts(counts: DecisionCounts, bestTtftMs: number | undefined): string {
  const parts: string[] = [];
  if (counts.feasible > 0) parts.push(`${counts.feasible} feasible`);
  for (const verdict of Object.keys(VERDICT_WORDS) as RejectionVerdict[]) {
    const count = counts.rejected[verdict];
    if (count === undefined) continue;
    const best =
      verdict === 'OVER_BUDGET' && bestTtftMs !== undefined ? ` (best ${formatMs(bestTtftMs)})` : '';
    parts.push(`${count} ${VERDICT_WORDS[verdict]}${best}`);
  }
  const skipped = counts.serving - counts.evaluated;
  const scope =
    skipped > 0 ? `; ${counts.evaluated} evaluated cheapest first (${skipped} dearer skipped)` : '';
  return `${counts.serving} node${counts.serving === 1 ? ' serves' : 's serve'} it${scope}, ${parts.join(', ')}`;
}

function requestScope(request: RouteRequest): string {
  const from = request.client.accessPoint || request.client.region;
  return `model ${request.model} within ${request.latencyBudgetMs} ms${from ? ` from ${from}` : ''}`;
}

function infeasibleSummary(
  request: RouteRequest,
  counts: DecisionCounts,
  bestTtftMs: number | undefined,
): string {
  if (counts.serving === 0) return `${requestScope(request)}: no registered node serves this model`;
  return `${requestScope(request)}: ${describeCounts(counts, bestTtftMs)}`;
}

function placedSummary(
  request: RouteRequest,
  placement: Placement,
  counts: DecisionCounts,
  degraded: boolean,
): string {
  const how = degraded ? 'DEGRADED placement on' : 'placed on';
  return `${requestScope(request)}: ${how} ${placement.nodeId} (${placement.level}, ${placement.region}), TTFT ${formatMs(
    placement.estimate.ttftMs,
  )}, cost ${placement.estimate.cost.toPrecision(3)}; ${describeCounts(counts, undefined)}`;
}

/** Keeps the k smallest items under `compare`, in order; O(n·k) with k ≤ 17. */
class TopK<T> {
  private readonly items: T[] = [];
  constructor(
    private readonly k: number,
    private readonly compare: (a: T, b: T) => number,
  ) {}

  offer(item: T): void {
    const { items, compare } = this;
    if (items.length === this.k && compare(item, items[items.length - 1] as T) >= 0) return;
    let index = items.length;
    while (index > 0 && compare(item, items[index - 1] as T) < 0) index -= 1;
    items.splice(index, 0, item);
    if (items.length > this.k) items.pop();
  }

  /** The k-th item once k are held; undefined before. */
  worst(): T | undefined {
    return this.items.length === this.k ? this.items[this.items.length - 1] : undefined;
  }

  sorted(): T[] {
    return this.items;
  }
}
