// The routing decision as a declared pipeline:
//
//   admission → candidates (index) → checks → estimate → rank → pick → decision with its trace
//
// Admission rules may refuse a request before any node is looked at. Candidates come from the
// candidate index, visited best-first by the policy's lower bound (cheapest first for the
// production rule) and only within reach of the budget; each node goes through the checks list
// in order, is estimated once it has passed the checks that need no estimate, and the feasible
// ones are ranked by the policy. The search stops once no unvisited cell can beat the ranked
// nodes, so a decision's work follows what it must look at, not the size of the registry.
//
// Infeasible and degraded answers are bounded the same way: counts come from what was visited
// plus what the index counts per group (see DecisionCounts), and the best TTFT and the degraded
// pick come from a nearest-first search. Explain evaluates every node, up to a cap.
//
// Pure: time, registry, reservations, prices and the policy's randomness come in through the
// context.

import { costAt, type PriceMultiplier, prefillMs, prefillMsAt, queueMs, requestCost } from '../cost.js';
import {
  EARTH_RADIUS_KM,
  estimateRttFor,
  freshSample,
  isFresh,
  type LatencyModel,
  type LatencySource,
  locatedRttMs,
  locatedRttMsAt,
  locationVector,
  type PreparedClient,
  prepareClient,
  type SamplesFrom,
  unitVector,
  unsampledRttMs,
  unsampledSource,
  type Vec3,
} from '../latency.js';
import {
  findOffer,
  isLive,
  type LatLon,
  LEVELS,
  type Level,
  type ModelOffer,
  type NodeRecord,
  type NodeSpec,
  type NodeState,
  nodeState,
  reportedLoad,
} from '../model.js';
import type { AdmissionRule } from './admission.js';
import {
  ANGLE_SLACK_RAD,
  angleBetween,
  C,
  CELL_STRIDE,
  cellGroupCount,
  cellGroupStart,
  cellItemStart,
  cellLevelMask,
  cellMixBound,
  cellSize,
  F,
  FACT_STRIDE,
  type FlatTree,
  type GroupFactors,
  type GroupScratch,
  type IndexedNode,
  type IndexGroup,
  LEVEL_BIT,
  type LoadFloors,
  type LoadWatched,
  leftChild,
  MIXED_TREE,
  type MixWeights,
  type ModelCandidates,
  mixWeights,
  type NodeMarks,
  noMix,
  P,
  PLACE_SLACK_RAD,
  PLACE_STRIDE,
  PLACE_TREE,
  PRICE_TREE,
  queueFloorMs,
  REACH_KINDS,
  REQUEST_KINDS,
  regionBitFor,
  S,
  SLOT_STRIDE,
  type TreePricing,
  unlocatedCell,
} from './candidate-index.js';
import {
  type Candidate,
  CHECKS,
  type Check,
  type CheckScope,
  type Checks,
  type EstimatedCandidate,
  type EstimatedCheck,
  estimatedChecks,
  type GroupCheck,
  groupChecks,
  type ListedCheck,
  listedChecks,
  VERDICT_RANK,
  VERDICT_WORDS,
} from './checks.js';
import { MinHeap } from './heap.js';
import { CHEAPEST_FEASIBLE, compareIds, type RoutingPolicy } from './policy.js';
import {
  type DecisionCounts,
  type Estimate,
  type ExplainEntry,
  type InfeasibleReason,
  MAX_FALLBACKS,
  type Placement,
  type Refusal,
  type RejectionVerdict,
  type RouteDecision,
  type RouteRequest,
  type Verdict,
} from './types.js';

/** Explain evaluates at most this many nodes unless the context says otherwise. */
export const DEFAULT_MAX_EXPLAIN_NODES = 5_000;
/**
 * A decision examines at most this many nodes (searches and liveness together) unless the context
 * says otherwise: a few milliseconds, whatever the registry and however full it is.
 */
export const DEFAULT_MAX_VISITS = 8_192;
/** Random draws a uniform policy tries before it looks at every node (RoutingPolicy.draw). */
const UNIFORM_DRAWS = 16;

/** What the core reads from a registry. Stores serve it from memory. */
export interface RoutingView {
  /** The nodes that offer `model` (in any state), indexed; undefined when none does. */
  candidates(model: string): ModelCandidates | undefined;
  /** Every registered node; read only for explain. */
  allNodes(): Iterable<NodeRecord>;
  /** How many nodes allNodes() yields. */
  nodeCount(): number;
  readonly samplesFrom: SamplesFrom;
}

/**
 * Reservations not yet covered by the node's last status report (see ReservationBook.pending). A
 * book that can also tell when loads fall (watchLoad) lets decisions keep load floors.
 */
export interface PendingReservations extends LoadWatched {
  pending(nodeId: string, model: string, statusAtMs: number | undefined): number;
}

export interface RouteContext {
  readonly view: RoutingView;
  readonly reservations: PendingReservations;
  readonly latency: LatencyModel;
  readonly priceMultiplier: PriceMultiplier;
  readonly nowMs: number;
  /** Cheapest-feasible unless given. */
  readonly policy?: RoutingPolicy;
  readonly admission?: readonly AdmissionRule[];
  readonly maxExplainNodes?: number;
  /** Work cap of one decision, in nodes examined (DEFAULT_MAX_VISITS). */
  readonly maxVisits?: number;
  /** Which index tree a cost search walks (tests and benchmarks); DEFAULT_SEARCH_TUNING unless given. */
  readonly searchTuning?: SearchTuning;
}

/**
 * A cost search walks the price tree when about `priceTreeReach` of the model's nodes or more
 * could meet the budget (judged from coordinates on the place tree's top cells and the model's
 * spread of prefill rates; a smaller share in models of more than 6,000 nodes), and goes on in
 * the mixed tree after `priceTreeMaxCells` cells.
 */
export interface SearchTuning {
  readonly priceTreeReach: number;
  readonly priceTreeMaxCells: number;
  /**
   * After the price tree gives up on a request, the next this many requests of its kind (client
   * region, budget, prompt and answer length, each on a log scale) go straight to the mixed
   * tree, then the price tree is tried again (0: always as judged; at most 255). The share of
   * nodes within reach does not tell where the cheap ones are: a night discount far away sends
   * requests that look alike into the price tree, which gives up on all of them.
   */
  readonly priceTreeRetryAfter?: number;
  /**
   * A policy without a cell bound (least-loaded, random) reads a model of at most this many
   * nodes straight through instead of walking a tree: the walk's heap and cell bounds cost more
   * than they save when nearly every node is within reach anyway.
   */
  readonly flatScanNodes?: number;
  /**
   * false: the common walk bounds its cells and a leaf's nodes through the general calls (bound,
   * keyed, placeAngle, rttFromPlace, slotBounds) rather than in one pass each (cellKeyedFast and
   * the leaf loop), which must work out the same numbers. For tests that hold the two paths equal.
   */
  readonly onePassBounds?: boolean;
}

/**
 * Measured on `npm run bench` (BENCHMARKS.md): loose budgets find their answer in 10–30 cells.
 * With leaves of 16, a price walk that will finish does so within about 96 cells at 10⁴ nodes;
 * giving up at 48 sent time-of-use requests to the mixed tree after wasting the 48 (cells popped
 * at the p99, 10⁴ nodes, time of use: 98 → 82 at 80 ms, 108 → 92 at 30 ms; 10⁵, distinct
 * prices, 80 ms: 77 → 65; nothing else moved; 192 was worse at 10⁵).
 * The flat scan: national-day's least-loaded lane (225 nodes) on the simulator bench.
 */
export const DEFAULT_SEARCH_TUNING: SearchTuning = {
  priceTreeReach: 0.25,
  priceTreeMaxCells: 96,
  priceTreeRetryAfter: 16,
  flatScanNodes: 1024,
};

/** Per-request state shared by the stages. */
interface Prepared {
  readonly request: RouteRequest;
  readonly ctx: RouteContext;
  readonly policy: RoutingPolicy;
  readonly scope: CheckScope;
  readonly client: PreparedClient;
  readonly clientVector: Vec3 | undefined;
  readonly groupChecks: readonly GroupCheck[];
  readonly listedChecks: readonly ListedCheck[];
  readonly estimatedChecks: readonly EstimatedCheck[];
  /**
   * Whether the checks reject a node with no free slot and one whose queue puts it over the
   * budget, as the built-in checks do: then a node's load floor may pass it over (see LoadFloors).
   */
  readonly checksLoad: boolean;
  /** Milliseconds of round trip per radian of great circle. */
  readonly msPerRad: number;
  /** The multipliers this decision prices by, now: price and mixed trees are keyed by them. */
  readonly pricing: TreePricing;
}

/** Decides where `request` goes. Never throws for expected outcomes; see RouteDecision. */
export function decideRoute(request: RouteRequest, ctx: RouteContext): RouteDecision {
  for (const rule of ctx.admission ?? []) {
    const refusal = rule(request, ctx.nowMs);
    if (refusal !== undefined) return refusedDecision(request, refusal);
  }
  const p = prepare(request, ctx);
  const candidates = ctx.view.candidates(request.model);
  let search = new Search(p, candidates);
  // A policy that takes any feasible node uniformly may draw nodes at random and take the first
  // feasible one (the same distribution); when none of a few draws is, it looks at every node,
  // counting afresh.
  const draw = p.policy.draw;
  let drawn: EstimatedCandidate | undefined;
  if (draw !== undefined && request.maxFallbacks === 0 && !request.explain) {
    drawn = search.drawFeasible(draw, UNIFORM_DRAWS);
    if (drawn === undefined) search = new Search(p, candidates, search.visitsLeft());
  }
  if (drawn === undefined) {
    search.feasible();
    if (search.ranked.sorted().length === 0 && search.passedByLoad > 0 && !search.settledByLoad()) {
      // Nothing ranked, and some nodes went unread for their load: the reason must be a full
      // scan's, so the search is done again reading every node it reaches.
      search = new Search(p, candidates, undefined, false);
      search.feasible();
    }
  }

  const ranked = drawn === undefined ? search.ranked.sorted() : [drawn];
  let chosenIndex = -1;
  if (ranked.length > 0)
    chosenIndex = p.policy.pick === undefined || drawn !== undefined ? 0 : p.policy.pick(ranked);
  const chosen = ranked[chosenIndex];
  let degraded: EstimatedCandidate | undefined;
  if (chosen === undefined && request.allowDegraded && candidates !== undefined)
    degraded = search.nearest((c) => c.hasSlot, true);

  let fallbacks: readonly EstimatedCandidate[] = NO_CANDIDATES;
  const k = Math.min(request.maxFallbacks, MAX_FALLBACKS);
  if (chosen !== undefined && k > 0 && ranked.length > 1)
    fallbacks = ranked.filter((_, index) => index !== chosenIndex).slice(0, k);

  let counts = search.counts(candidates?.size ?? 0);
  let live = search.live > 0;
  let explain: readonly ExplainEntry[] = NO_EXPLAIN;
  let explainOmitted = 0;
  let bestTtftMs: number | undefined;
  if (request.explain) {
    const marks = new Map<string, Verdict>();
    if (chosen !== undefined) marks.set(chosen.node.spec.id, 'SELECTED');
    for (const fallback of fallbacks) marks.set(fallback.node.spec.id, 'FALLBACK');
    if (degraded !== undefined) marks.set(degraded.node.spec.id, 'DEGRADED_SELECTED');
    const full = explainAll(p, marks, candidates);
    explain = full.entries;
    explainOmitted = full.omitted;
    if (full.omitted === 0) {
      // Every node was evaluated: the counts are exact.
      counts = full.counts;
      live = full.live;
      bestTtftMs = full.bestTtftMs;
    }
  }

  const placed = chosen ?? degraded;
  if (placed !== undefined) {
    return new PlacedDecision(
      request,
      placementOf(placed, request.model),
      fallbacks.length === 0 ? NO_PLACEMENTS : fallbacks.map((entry) => placementOf(entry, request.model)),
      chosen === undefined,
      counts,
      explain,
      explainOmitted,
    );
  }

  if (!live && candidates !== undefined) {
    const found = candidates.hasLiveNode((node) => isLive(nodeState(node, ctx.nowMs)), search.visitsLeft());
    live = found.live;
    if (!found.checkedAll) counts = { ...counts, truncated: true };
  }
  if (bestTtftMs === undefined && candidates !== undefined)
    bestTtftMs = search.nearest(() => true)?.estimate.ttftMs;
  return new InfeasibleDecision(
    request,
    infeasibleReason(live, counts.rejected),
    bestTtftMs,
    counts,
    explain,
    explainOmitted,
  );
}

/**
 * The decisions as values whose summary is written on first read: most callers (the simulator)
 * never read it, and formatting it costs as much as a small decision.
 */
class PlacedDecision {
  readonly kind = 'placed';
  #request: RouteRequest;
  #summary: string | undefined;

  constructor(
    request: RouteRequest,
    readonly placement: Placement,
    readonly fallbacks: readonly Placement[],
    readonly degraded: boolean,
    readonly counts: DecisionCounts,
    readonly explain: readonly ExplainEntry[],
    readonly explainOmitted: number,
  ) {
    this.#request = request;
  }

  get summary(): string {
    this.#summary ??= placedSummary(
      this.#request,
      this.placement,
      this.counts,
      this.degraded,
      this.explainOmitted,
    );
    return this.#summary;
  }
}

class InfeasibleDecision {
  readonly kind = 'infeasible';
  #request: RouteRequest;
  #summary: string | undefined;

  constructor(
    request: RouteRequest,
    readonly reason: InfeasibleReason,
    readonly bestTtftMs: number | undefined,
    readonly counts: DecisionCounts,
    readonly explain: readonly ExplainEntry[],
    readonly explainOmitted: number,
  ) {
    this.#request = request;
  }

  get summary(): string {
    this.#summary ??= infeasibleSummary(this.#request, this.counts, this.bestTtftMs, this.explainOmitted);
    return this.#summary;
  }
}

type Phases = Pick<Prepared, 'groupChecks' | 'listedChecks' | 'estimatedChecks' | 'checksLoad'>;
const phasesOf = new WeakMap<Checks, Phases>();
/** The verdicts of a node rejected for its load: an infeasible decision with any is ALL_FULL. */
const LOAD_VERDICTS: readonly RejectionVerdict[] = ['AT_CAPACITY', 'QUEUE_OVER_BUDGET'];
const LOAD_CHECKS: readonly Check[] = CHECKS.filter((check) => LOAD_VERDICTS.includes(check.verdict));

/** Why nothing was placed, from whether a live node was met and the rejections counted. */
function infeasibleReason(
  live: boolean,
  rejected: Partial<Record<RejectionVerdict, number>>,
): InfeasibleReason {
  if (!live) return 'NO_LIVE_NODE';
  return LOAD_VERDICTS.some((verdict) => (rejected[verdict] ?? 0) > 0)
    ? 'ALL_FULL'
    : 'NO_NODE_WITHIN_CONSTRAINTS';
}

/** A policy's checks split by phase, once per checks list. */
function checksByPhase(checks: Checks): Phases {
  let phases = phasesOf.get(checks);
  if (phases === undefined) {
    phases = {
      groupChecks: groupChecks(checks),
      listedChecks: listedChecks(checks),
      estimatedChecks: estimatedChecks(checks),
      checksLoad: LOAD_CHECKS.every((check) => checks.includes(check)),
    };
    phasesOf.set(checks, phases);
  }
  return phases;
}

/** Tells one decision's per-group scratch values from the previous decision's. */
let decisionStamp = 0;

function prepare(request: RouteRequest, ctx: RouteContext): Prepared {
  const policy = ctx.policy ?? CHEAPEST_FEASIBLE;
  const phases = checksByPhase(policy.checks);
  const client = prepareClient(request.client, ctx.latency, ctx.view.samplesFrom);
  return {
    request,
    ctx,
    policy,
    scope: {
      request,
      levels: request.allowedLevels.length > 0 ? new Set(request.allowedLevels) : undefined,
      regions: request.allowedRegions.length > 0 ? new Set(request.allowedRegions) : undefined,
      packageLevels:
        request.packageLevels !== undefined && request.packageLevels.length > 0
          ? new Set(request.packageLevels)
          : undefined,
    },
    client,
    // The client's own place is new with each request; a region's centroid is kept, and so is
    // its vector.
    clientVector:
      client.location === undefined
        ? undefined
        : client.location === request.client.location
          ? unitVector(client.location)
          : locationVector(client.location),
    groupChecks: phases.groupChecks,
    listedChecks: phases.listedChecks,
    estimatedChecks: phases.estimatedChecks,
    checksLoad: phases.checksLoad,
    msPerRad: ((EARTH_RADIUS_KM * 2) / ctx.latency.fiberKmPerMs) * ctx.latency.routeStretch,
    pricing: { multiplier: ctx.priceMultiplier, nowMs: ctx.nowMs },
  };
}

/** A fresh measured sample from the client's access point or region, as estimateRttFor takes it. */
function isSampled(p: Prepared, nodeId: string): boolean {
  return freshSample(p.client, nodeId, p.ctx.latency, p.ctx.nowMs) !== undefined;
}

interface ScratchBounds {
  rttLowerBoundMs: number;
  costLowerBound: number;
  ttftLowerBoundMs: number;
}

/**
 * What a mix bound (Search.bound) is taken down by, for rounding: a share (normal numbers round
 * by about 1e-16 per step) and an amount (subnormal ones, of prices or factors below 2.2e-308,
 * round by up to 5e-324 each, which no share covers).
 */
const MIX_SLACK = 1 - 1e-9;
const MIX_SLACK_ABSOLUTE = 1e-300;
/**
 * Scratch shared by all decisions: they run one at a time, synchronously, to completion, so one
 * frontier and one bounds record serve them all and a decision allocates neither.
 */
const SCRATCH_BOUNDS: ScratchBounds = { rttLowerBoundMs: 0, costLowerBound: 0, ttftLowerBoundMs: 0 };
/** One node's bounds, as a search's visit works them out. */
const NODE_BOUNDS: ScratchBounds = { rttLowerBoundMs: 0, costLowerBound: 0, ttftLowerBoundMs: 0 };
const FRONTIER = new MinHeap<number>();
/** The marks of a search with no model to search (it reads none). */
const NO_MARKS: NodeMarks = { removed: new Uint8Array(0), triedBy: new Float64Array(0) };
const NO_FACTS = new Float64Array(0);

/**
 * What a walk keys cells and nodes by. BY_POLICY: the policy's lower bound and tie bound, held to
 * the budget and to the worst ranked node (Search.feasible). BY_TTFT: the TTFT bound alone, held
 * to the best TTFT found (Search.nearest).
 */
const BY_POLICY = 0;
const BY_TTFT = 1;
type WalkKey = typeof BY_POLICY | typeof BY_TTFT;

/**
 * The key, tie and RTT bound of the cell or node a walk has in hand (see Search.keyed): read from
 * here by the frontier and the leaf queue, so that no bound is boxed on its way between them.
 */
const WALK_KEY = new Float64Array(3);
const KEY = 0;
const TIE = 1;
const RTT = 2;

/** How Search.walk reads a tree beyond its keys (see there). */
interface WalkOptions {
  /** Cells popped at most: past them the walk gives up (returns false). */
  readonly maxPops?: number;
  /** The TTFT a node must fit (its RTT and prefill bounds, and its load floor, are held to it). */
  readonly leafReachMs?: number;
  /** Whether cells' cost bounds are priced (false: a walk keyed by TTFT alone). */
  readonly costed?: boolean;
  /** Whether a node whose load floor says it has no free slot is passed over unread. */
  readonly passFull?: boolean;
}

/** Longest leaf queue read by selection rather than sorted (see LeafQueue.start). */
const SELECTED_QUEUE = 32;

/**
 * The nodes of one leaf that a walk will visit, gathered before any is visited so that they are
 * visited best bound first (see Search.walk). One set per process: decisions run one at a time
 * and a walk never runs inside another; grown when a leaf holds more nodes than it has room for.
 */
class LeafQueue {
  /** Queued nodes, at positions [0, size) of the arrays below. */
  size = 0;
  /** Whether every queued node has the first one's key and tie: then they go in leaf order. */
  private alike = true;
  /** When sorted (see start): the positions in order, read from `cursor`. */
  private order: Int32Array | undefined;
  private cursor = 0;
  /** By position: the node's slot in its tree, its RTT bound, and its key and tie bounds. */
  slots = new Int32Array(32);
  rtts = new Float64Array(32);
  keys = new Float64Array(32);
  ties = new Float64Array(32);

  clear(): void {
    this.size = 0;
    this.alike = true;
    this.order = undefined;
  }

  /** Queues node slot `slot` with the key, tie and RTT bound in `keyed` (see WALK_KEY). */
  add(slot: number, keyed: Float64Array): void {
    if (this.size === this.slots.length) this.grow();
    const at = this.size;
    const key = keyed[KEY] as number;
    const tie = keyed[TIE] as number;
    if (at > 0 && (key !== this.keys[0] || tie !== this.ties[0])) this.alike = false;
    this.slots[at] = slot;
    this.rtts[at] = keyed[RTT] as number;
    this.keys[at] = key;
    this.ties[at] = tie;
    this.size = at + 1;
  }

  /**
   * Starts reading the queue in (key, tie, slot) order (see next). Equal bounds keep the leaf's
   * order, which a policy that collects every feasible node in the order met (random) picks by.
   * Nodes whose bounds are all alike (a policy without bounds keys every node 0) are read in
   * the order queued. Otherwise up to SELECTED_QUEUE nodes are selected one per visit (a leaf
   * usually visits a few and stops); a longer queue (a leaf of nodes alike in place, price and
   * rate, which no split divides) is sorted once, so that reading it stays n log n.
   */
  start(): void {
    this.cursor = 0;
    this.order = undefined;
    if (this.alike || this.size <= SELECTED_QUEUE) return;
    const { keys, ties, slots } = this;
    const order = new Int32Array(this.size);
    for (let i = 0; i < order.length; i += 1) order[i] = i;
    order.sort((a, b) => {
      const ka = keys[a] as number;
      const kb = keys[b] as number;
      if (ka !== kb) return ka < kb ? -1 : 1;
      const ta = ties[a] as number;
      const tb = ties[b] as number;
      if (ta !== tb) return ta < tb ? -1 : 1;
      return (slots[a] as number) - (slots[b] as number);
    });
    this.order = order;
  }

  /** The position of the next queued node in order (started by start), or -1 when none is left. */
  next(): number {
    const order = this.order;
    if (order !== undefined) return this.cursor < order.length ? (order[this.cursor++] as number) : -1;
    if (this.alike) return this.cursor < this.size ? this.cursor++ : -1;
    return this.size > 0 ? this.takeBest() : -1;
  }

  /**
   * Takes the node of least (key, tie, slot) out of the queue: it is moved to the queue's last
   * place, which is returned, and the queue ends before it.
   */
  private takeBest(): number {
    const { keys, ties, slots } = this;
    let best = 0;
    for (let i = 1; i < this.size; i += 1) {
      const key = keys[i] as number;
      const bestKey = keys[best] as number;
      if (key > bestKey) continue;
      if (key < bestKey) {
        best = i;
        continue;
      }
      const tie = ties[i] as number;
      const bestTie = ties[best] as number;
      if (tie < bestTie || (tie === bestTie && (slots[i] as number) < (slots[best] as number))) best = i;
    }
    const last = this.size - 1;
    if (best !== last) {
      this.swap(this.slots, best, last);
      this.swap(this.rtts, best, last);
      this.swap(keys, best, last);
      this.swap(ties, best, last);
    }
    this.size = last;
    return last;
  }

  private swap(values: Int32Array | Float64Array, a: number, b: number): void {
    const held = values[a] as number;
    values[a] = values[b] as number;
    values[b] = held;
  }

  private grow(): void {
    const length = this.slots.length * 2;
    const slots = new Int32Array(length);
    const rtts = new Float64Array(length);
    const keys = new Float64Array(length);
    const ties = new Float64Array(length);
    slots.set(this.slots);
    rtts.set(this.rtts);
    keys.set(this.keys);
    ties.set(this.ties);
    this.slots = slots;
    this.rtts = rtts;
    this.keys = keys;
    this.ties = ties;
  }
}
const LEAF_QUEUE = new LeafQueue();
/** Search.tried: the price-tree walk marks the nodes it visits; the walk taking over skips them. */
const MARK = 1;
const SKIP = 2;
/** The record every node is checked through before its estimate: the checks read it and keep nothing. */
const LISTED: { stage: 'listed'; node: NodeRecord; offer: ModelOffer; state: NodeState } = {
  stage: 'listed',
  node: undefined as unknown as NodeRecord,
  offer: undefined as unknown as ModelOffer,
  state: 'READY',
};
const NO_NODES: readonly IndexedNode[] = [];
/** Shared empty lists: most decisions have no fallbacks and no explain. */
const NO_CANDIDATES: readonly EstimatedCandidate[] = Object.freeze([]);
const NO_PLACEMENTS: readonly Placement[] = Object.freeze([]);
const NO_EXPLAIN: readonly ExplainEntry[] = Object.freeze([]);
/** The model size at which reachesMost takes the tuned share as it is (smaller shares above it). */
const REACH_REFERENCE_NODES = 6_000;
/** reachesMost's work list (cell, depth pairs) and how deep it looks. */
const REACH_STACK: number[] = [];
const REACH_DEPTH = 4;
/**
 * Margins of the walk's leaf thresholds (see Search.leafThresholds): a share far beyond the
 * rounding of the few operations between a threshold and the exact check, and a chord (in
 * radians) for where the reach left is near zero.
 */
const THRESHOLD_MARGIN = 1e-9;
const CHORD_MARGIN = 1e-12;
/**
 * The least share of the reach (its size) that the room a threshold is relative to must be: far
 * above the rounding of a sum at the reach's scale (2^-52 of it a step), so that THRESHOLD_MARGIN
 * of the room covers it.
 */
const ROOM_SHARE = 1e-6;
/** The far threshold's margin, as a share of the reach: far above the rounding at its scale. */
const REACH_MARGIN = 1e-12;
/** What Search.cellKeyedFast says of a cell: worth a place, not, or not keyed there. */
const KEPT = 1;
const DROPPED = 0;
const UNKEYED = -1;
/** ReachMemo answers, and how many requests of a kind take one before it is worked out again. */
const REACHES_FEW = 1;
const REACHES_MOST = 2;
const REACH_REUSES = 15;

/**
 * Which half power of two `value + 1` lies in (value ≥ 0; fractions count down to the whole):
 * twice its binary logarithm, rounded down (from 2^31 on, all alike). A bucket for request kinds.
 */
function halfLog2(value: number): number {
  const whole = Math.min(0x7fffffff, Math.floor(value) + 1);
  const log = 31 - Math.clz32(whole);
  return 2 * log + (whole >= (1 << log) * Math.SQRT2 ? 1 : 0);
}

/** Four small integers that describe a kind of request, mixed into 32 bits. */
function kindHash(a: number, b: number, c: number, d: number): number {
  let h = Math.imul(a, 0x9e3779b1);
  h = Math.imul(h ^ b, 0x85ebca6b);
  h = Math.imul(h ^ c, 0xc2b2ae35);
  h = Math.imul(h ^ d, 0x27d4eb2f);
  return h ^ (h >>> 15);
}

const overheadTables = new WeakMap<Readonly<Record<Level, number>>, Float64Array>();

/** By LEVEL_BIT mask (0..15): the smallest access overhead of the levels in it (+∞ for none). */
function overheadTable(overheads: Readonly<Record<Level, number>>): Float64Array {
  let table = overheadTables.get(overheads);
  if (table === undefined) {
    table = new Float64Array(16).fill(Number.POSITIVE_INFINITY);
    for (let mask = 0; mask < 16; mask += 1)
      for (const level of LEVELS)
        if ((mask & LEVEL_BIT[level]) !== 0) table[mask] = Math.min(table[mask] as number, overheads[level]);
    overheadTables.set(overheads, table);
  }
  return table;
}

/**
 * The chord between unit vector `v` and the nearest point of the box of the cell at offset `at`
 * (see C.loX): never longer than the chord to any of its nodes, so a lower bound of the angle.
 */
function boxChordTo(v: Vec3, cells: Float64Array, at: number): number {
  const loX = cells[at + C.loX] as number;
  const hiX = cells[at + C.hiX] as number;
  const loY = cells[at + C.loY] as number;
  const hiY = cells[at + C.hiY] as number;
  const loZ = cells[at + C.loZ] as number;
  const hiZ = cells[at + C.hiZ] as number;
  const dx = v.x < loX ? loX - v.x : v.x > hiX ? v.x - hiX : 0;
  const dy = v.y < loY ? loY - v.y : v.y > hiY ? v.y - hiY : 0;
  const dz = v.z < loZ ? loZ - v.z : v.z > hiZ ? v.z - hiZ : 0;
  return Math.sqrt(dx * dx + dy * dy + dz * dz);
}

/** The chord between unit vector `v` and the farthest corner of the box of the cell at offset `at`. */
function farChordTo(v: Vec3, cells: Float64Array, at: number): number {
  const dx = Math.max(
    Math.abs(v.x - (cells[at + C.loX] as number)),
    Math.abs(v.x - (cells[at + C.hiX] as number)),
  );
  const dy = Math.max(
    Math.abs(v.y - (cells[at + C.loY] as number)),
    Math.abs(v.y - (cells[at + C.hiY] as number)),
  );
  const dz = Math.max(
    Math.abs(v.z - (cells[at + C.loZ] as number)),
    Math.abs(v.z - (cells[at + C.hiZ] as number)),
  );
  return Math.sqrt(dx * dx + dy * dy + dz * dz);
}

/** One decision's searches over the index, and what they counted. */
class Search {
  readonly ranked: Ranked;
  live = 0;
  private evaluated = 0;
  private feasibleCount = 0;
  private readonly rejected: Partial<Record<RejectionVerdict, number>> = {};
  /** By group id: 1 when a group check rejects the group (its nodes are counted, never visited). */
  private readonly excluded: Uint8Array | undefined;
  /** Levels the request allows, as LEVEL_BIT bits (all when unconstrained). */
  private readonly allowedLevelMask: number;
  /** The model's groups, by id, and their per-decision values. */
  private readonly groups: readonly IndexGroup[];
  private readonly scratch: GroupScratch | undefined;
  /** This decision's mark on the groups' scratch values. */
  private readonly stamp = ++decisionStamp;
  private floors: Float64Array | undefined;
  /** Whether heldFactors looked for the model's kept group factors yet, and what it found. */
  private factorsLooked = false;
  private factorsFound: GroupFactors | undefined;
  private readonly cellBounds = SCRATCH_BOUNDS;
  /** The best-first frontier: cell indices keyed by a lower bound. */
  private readonly frontier = FRONTIER;
  private readonly leafQueue = LEAF_QUEUE;
  private readonly listed = LISTED;
  /**
   * While a walk of the price tree may still give up, the nodes it visits are marked with this
   * decision's stamp (NodeMarks.triedBy); a walk that takes over skips them.
   */
  private tried: typeof MARK | typeof SKIP | undefined;
  /**
   * The (key, tie) past which nothing is worth reading (see pastBar): in the feasible search, the
   * worst ranked node's score and tie score once the ranking is full, for a policy that bounds
   * cells (kept by judge); in the nearest search, the best TTFT found (and an infinite tie).
   * +Infinity until then: nothing is past it. Read for every cell.
   */
  private barKey = Number.POSITIVE_INFINITY;
  private barTie = Number.POSITIVE_INFINITY;
  /** The walk under way: what it keys by, its reach and whether its cost bounds are priced. */
  private walkBy: WalkKey = BY_POLICY;
  private walkReachMs = Number.POSITIVE_INFINITY;
  private walkCosted = true;
  /** What placeAngle and rttFromPlace worked out last. */
  private placeAngleMs = 0;
  private placeRttMs = 0;
  /**
   * Whether the walk under way bounds its cells (cellKeyedFast) and a leaf's nodes (the leaf loop)
   * in one pass; set by walk. Both copy the general calls' arithmetic by hand, for speed: calling a
   * shared angle function and costAt there read 0–8 % slower at the p50 (both builds in one
   * process). The property test that runs both with SearchTuning.onePassBounds false and true
   * holds them equal.
   */
  private fastKeys = false;
  /** The request's numbers, as the one-pass bounds read them (set by walk with fastKeys). */
  private msPerRad = 0;
  private uncachedTokens = 0;
  private cachedTokens = 0;
  private outputTokens = 0;
  /** The request's token mix in the tree being walked (see MIX_STEPS); step -1 in an uncosted walk. */
  private readonly mix: MixWeights = noMix();
  /** Nodes this decision may still examine (see DEFAULT_MAX_VISITS). */
  private budget: number;
  private truncated = false;
  /** Nodes with a fresh measured RTT from the client (see sampledNodes). */
  private readonly sampled: readonly IndexedNode[];
  /** The model's node marks (see NodeMarks), as they are for this decision. */
  private readonly marks: NodeMarks;
  /** The model's node facts (see F), as they are for this decision. */
  private readonly facts: Float64Array;
  /**
   * The ordinal and group of the node visitSlot is visiting, whose facts stand for its offer and
   * place (see F); -1 while a node met otherwise (sampled, recent, listed) is.
   */
  private slotOrdinal = -1;
  private slotGroup: IndexGroup | undefined;
  /** Whether some node was removed since the trees were built (else no slot's mark need be read). */
  private readonly anyRemoved: boolean;
  /** By a cell's level mask: the smallest access overhead of its levels (one table per latency model). */
  private readonly minOverheads: Float64Array;
  /** The client's region as the model indexes regions (-1: none of its nodes is there). */
  private readonly clientRegionIndex: number;
  /** The bit of the client's region in a cell's regionBits (0: no cell holds it). */
  private readonly clientRegionBit: number;
  /** What a node outside the client's region adds to its coordinate RTT (0 for a client with no region). */
  private readonly crossRegionPenaltyMs: number;
  /** The loads nodes are known to carry at least (see LoadFloors), when this search may use them. */
  private readonly loadFloors: LoadFloors | undefined;
  /** Whether the walk passes nodes over by them (some floor was kept when the search began). */
  private readonly readsFloors: boolean;
  /**
   * Nodes passed over by their load floor: unevaluated, so a search that ranks nothing after
   * passing some may not know the decision's reason (see settledByLoad; else decideRoute searches
   * again without floors).
   */
  passedByLoad = 0;
  /** The first node passed over by its load floor (see settledByLoad). */
  private firstPassedByLoad: IndexedNode | undefined;

  /** `floors`: whether the walk may pass nodes over by their load floors (see LoadFloors). */
  constructor(
    private readonly p: Prepared,
    private readonly candidates: ModelCandidates | undefined,
    budget = p.ctx.maxVisits ?? DEFAULT_MAX_VISITS,
    floors = true,
  ) {
    const capacity =
      p.policy.collect === 'all'
        ? Number.POSITIVE_INFINITY
        : 1 + Math.min(p.request.maxFallbacks, MAX_FALLBACKS);
    this.ranked = new Ranked(capacity, p.policy);
    this.budget = budget;
    const groups = candidates?.groups() ?? [];
    this.groups = groups;
    this.scratch = candidates?.scratch;
    let allowedLevelMask = 15;
    if (p.scope.levels !== undefined) {
      allowedLevelMask = 0;
      for (const level of p.scope.levels) allowedLevelMask |= LEVEL_BIT[level];
    }
    this.allowedLevelMask = allowedLevelMask;
    const active = p.groupChecks.filter((check) => check.active(p.scope));
    if (active.length > 0) {
      this.excluded = new Uint8Array(groups.length);
      for (const group of groups) {
        const failed = active.find((check) => check.rejects(group, p.scope));
        if (failed === undefined) continue;
        this.excluded[group.id] = 1;
        if (group.size > 0) this.reject(failed.verdict, group.size);
      }
    }
    this.minOverheads = overheadTable(p.ctx.latency.accessOverheadMs);
    this.clientRegionIndex = candidates === undefined ? -1 : candidates.regionIndexOf(p.client.region);
    this.clientRegionBit = regionBitFor(this.clientRegionIndex);
    this.crossRegionPenaltyMs = p.client.region === '' ? 0 : p.ctx.latency.crossRegionPenaltyMs;
    this.sampled = candidates === undefined ? [] : this.sampledNodes(candidates);
    this.marks = candidates?.marks ?? NO_MARKS;
    this.facts = candidates?.facts ?? NO_FACTS;
    this.anyRemoved = candidates?.anyRemoved ?? false;
    this.loadFloors =
      floors && p.checksLoad && candidates !== undefined
        ? candidates.loadFloors(p.ctx.reservations)
        : undefined;
    // An idle registry keeps no floors: its walks do not read them.
    this.readsFloors = this.loadFloors !== undefined && candidates?.anyLoadFloor === true;
  }

  visitsLeft(): number {
    return Math.max(0, this.budget);
  }

  /** Spends one node of the work cap; false (and the decision marked truncated) when none is left. */
  private spend(): boolean {
    if (this.budget > 0) {
      this.budget -= 1;
      return true;
    }
    this.truncated = true;
    return false;
  }

  counts(serving: number): DecisionCounts {
    let rejectedTotal = 0;
    for (const verdict in this.rejected) rejectedTotal += this.rejected[verdict as RejectionVerdict] ?? 0;
    return {
      serving,
      evaluated: this.evaluated,
      unevaluated: serving - this.feasibleCount - rejectedTotal,
      feasible: this.feasibleCount,
      rejected: { ...this.rejected },
      truncated: this.truncated,
    };
  }

  private reject(verdict: RejectionVerdict, count: number): void {
    this.rejected[verdict] = (this.rejected[verdict] ?? 0) + count;
  }

  private isExcluded(group: IndexGroup): boolean {
    return this.excluded !== undefined && this.excluded[group.id] === 1;
  }

  /**
   * Nodes with a fresh measured RTT from the client: their distance says nothing about their
   * latency, so the searches evaluate them one by one, and skip them inside cells.
   */
  private sampledNodes(candidates: ModelCandidates): readonly IndexedNode[] {
    const { p } = this;
    if (p.client.sampleMaps.length === 0) return NO_NODES;
    const found: IndexedNode[] = [];
    const seen = new Set<string>();
    for (const samples of p.client.sampleMaps) {
      for (const [nodeId, sample] of samples) {
        if (seen.has(nodeId) || !isFresh(sample, p.ctx.latency, p.ctx.nowMs)) continue;
        seen.add(nodeId);
        const indexed = candidates.byId.get(nodeId);
        if (indexed !== undefined && !this.isExcluded(indexed.group)) found.push(indexed.entry);
      }
    }
    return found;
  }

  /** Fills group `g`'s RTT bases for this decision (its multiplier is worked out on demand). */
  private fill(g: number): void {
    const scratch = this.scratch as GroupScratch;
    if (scratch.stamp[g] === this.stamp) return;
    const latency = this.p.ctx.latency;
    // A one-level mask: that level's own overhead.
    const overheadMs = this.minOverheads[scratch.levelBit[g] as number] as number;
    const sameRegion = scratch.regionIndex[g] === this.clientRegionIndex;
    scratch.stamp[g] = this.stamp;
    scratch.coordinateBaseMs[g] = overheadMs + (sameRegion ? 0 : this.crossRegionPenaltyMs);
    scratch.regionDefaultMs[g] =
      overheadMs + (sameRegion ? latency.sameRegionRttMs : latency.crossRegionRttMs);
  }

  private multiplierOf(group: IndexGroup): number {
    const scratch = this.scratch as GroupScratch;
    const g = group.id;
    if (scratch.multiplierStamp[g] !== this.stamp) {
      scratch.multiplierStamp[g] = this.stamp;
      // Kept per model while the factors hold (see ModelCandidates.groupFactors): a time-of-use
      // policy's rules are otherwise matched again for each group of each decision. A multiplier
      // that cannot say how long its factors hold, or says not past now, is asked each time.
      const held = this.heldFactors();
      scratch.multiplier[g] =
        held !== undefined
          ? (held.factors[g] as number)
          : this.p.ctx.priceMultiplier.at(group, this.p.request.model, this.p.ctx.nowMs);
    }
    return scratch.multiplier[g] as number;
  }

  /** By LEVEL_BIT mask: the lowest multiplier of any group of the model at those levels now. */
  private floorsByLevels(): Float64Array {
    if (this.floors === undefined) {
      const { priceMultiplier, nowMs } = this.p.ctx;
      this.floors = (
        this.heldFactors() ?? (this.candidates as ModelCandidates).groupFactors(priceMultiplier, nowMs)
      ).floors;
    }
    return this.floors;
  }

  /** ModelCandidates.heldFactors for this decision, looked up once. */
  private heldFactors(): GroupFactors | undefined {
    if (!this.factorsLooked) {
      this.factorsLooked = true;
      this.factorsFound = this.candidates?.heldFactors(this.p.ctx.priceMultiplier, this.p.ctx.nowMs);
    }
    return this.factorsFound;
  }

  /**
   * Lower bounds of RTT, TTFT and cost over every node of cell `c`, written into
   * `this.cellBounds` (no allocation: this runs for every cell a search touches).
   */
  private bound(tree: FlatTree, c: number, costed: boolean): ScratchBounds {
    const { p } = this;
    const cells = tree.cells;
    const at = c * CELL_STRIDE;
    // A priced tree's minimum prices already include this decision's multipliers.
    // Uncosted (a walk keyed by TTFT alone), the cost bound is left unpriced.
    const rttLowerBoundMs = this.cellRttLowerBound(tree, at);
    const maxPrefill = cells[at + C.maxPrefill] as number;
    const prefillLowerBoundMs = maxPrefill > 0 ? prefillMsAt(p.request, maxPrefill) : 0;
    const out = this.cellBounds;
    out.rttLowerBoundMs = rttLowerBoundMs;
    out.ttftLowerBoundMs = rttLowerBoundMs + prefillLowerBoundMs;
    // Past the reach of a walk keyed by the policy, a cell is not worth a place whatever it
    // costs (see keyed): its cost bound is not worked out.
    if (this.walkBy === BY_POLICY && out.ttftLowerBoundMs > this.walkReachMs) {
      out.costLowerBound = Number.POSITIVE_INFINITY;
      return out;
    }
    const multiplier = tree.priced || !costed ? 1 : this.cellMultiplier(tree, at);
    out.costLowerBound = costAt(
      p.request,
      cells[at + C.minInput] as number,
      cells[at + C.minOutput] as number,
      cells[at + C.minCached] as number,
      multiplier,
    );
    if (this.mix.step >= 0) {
      // Tighter where nodes price input and output apart (see MIX_STEPS); less a hair for
      // rounding, so that it never passes the cell's cheapest node.
      const mixed =
        ((cellMixBound(tree, c, this.mix) +
          p.request.cachedInputTokens * (cells[at + C.minCached] as number)) *
          multiplier *
          MIX_SLACK) /
          1e6 -
        MIX_SLACK_ABSOLUTE;
      // Not past any finite cost (an overflow bounds nothing).
      if (mixed > out.costLowerBound && mixed < Number.POSITIVE_INFINITY) out.costLowerBound = mixed;
    }
    return out;
  }

  /** A lower bound of the RTT to every node of the cell at `at` (part of its bound). */
  private cellRttLowerBound(tree: FlatTree, at: number): number {
    const cells = tree.cells;
    const vector = this.p.clientVector;
    if (vector === undefined || unlocatedCell(cells, at)) return this.cellRegionDefaultMs(tree, at);
    // The smallest overhead of the cell's levels, and the cross-region penalty unless the cell
    // may hold a node in the client's region.
    const angle = boxChordTo(vector, cells, at) - ANGLE_SLACK_RAD;
    return (angle > 0 ? angle * this.p.msPerRad : 0) + this.cellCoordinateBaseMs(cells, at);
  }

  /**
   * What every located node of the cell at `at` adds to the RTT of its distance at least: the
   * smallest overhead of the cell's levels, and the cross-region penalty unless the cell may hold
   * a node in the client's region.
   */
  private cellCoordinateBaseMs(cells: Float64Array, at: number): number {
    return (
      (this.minOverheads[cellLevelMask(cells, at)] as number) +
      (((cells[at + C.regionBits] as number) & this.clientRegionBit) === 0 ? this.crossRegionPenaltyMs : 0)
    );
  }

  /** The lowest multiplier of cell `at`'s groups (of its levels' groups when it lists none). */
  private cellMultiplier(tree: FlatTree, at: number): number {
    const count = cellGroupCount(tree.cells, at);
    if (count < 0) return this.floorsByLevels()[cellLevelMask(tree.cells, at)] as number;
    let multiplier = Number.POSITIVE_INFINITY;
    const start = cellGroupStart(tree.cells, at);
    for (let i = start; i < start + count; i += 1)
      multiplier = Math.min(
        multiplier,
        this.multiplierOf(this.groups[tree.cellGroups[i] as number] as IndexGroup),
      );
    return multiplier;
  }

  /** The lowest region-default RTT of cell `at`'s groups (of any group at its levels when it lists none). */
  private cellRegionDefaultMs(tree: FlatTree, at: number): number {
    const cells = tree.cells;
    const count = cellGroupCount(cells, at);
    if (count < 0) {
      const latency = this.p.ctx.latency;
      return (
        (this.minOverheads[cellLevelMask(cells, at)] as number) +
        Math.min(latency.sameRegionRttMs, latency.crossRegionRttMs)
      );
    }
    const scratch = this.scratch as GroupScratch;
    let regionDefaultMs = Number.POSITIVE_INFINITY;
    const start = cellGroupStart(cells, at);
    for (let i = start; i < start + count; i += 1) {
      const g = tree.cellGroups[i] as number;
      this.fill(g);
      regionDefaultMs = Math.min(regionDefaultMs, scratch.regionDefaultMs[g] as number);
    }
    return regionDefaultMs;
  }

  /**
   * A cheap lower bound of the RTT of node slot `i` when no sample applies: the chord between the
   * unit vectors (never longer than the arc; less a hair for rounding) instead of the arc itself.
   */
  private slotRttLowerBound(tree: FlatTree, i: number): number {
    this.placeAngle(tree, i);
    this.rttFromPlace(tree, i);
    return this.placeRttMs;
  }

  /**
   * The part of slot `i`'s RTT bound its place gives, from the place alone: the angle to it, in
   * ms, into placeAngleMs; NaN when the client or the node has no coordinates.
   */
  private placeAngle(tree: FlatTree, i: number): void {
    const client = this.p.clientVector;
    const at = i * PLACE_STRIDE;
    const places = tree.places;
    const x = places[at + P.x] as number;
    if (client === undefined || Number.isNaN(x)) {
      this.placeAngleMs = Number.NaN;
      return;
    }
    const dx = client.x - x;
    const dy = client.y - (places[at + P.y] as number);
    const dz = client.z - (places[at + P.z] as number);
    // The chord: never longer than the arc it spans, a lower bound of the angle for a square root.
    const angle = Math.sqrt(dx * dx + dy * dy + dz * dz) - PLACE_SLACK_RAD - ANGLE_SLACK_RAD;
    this.placeAngleMs = angle > 0 ? angle * this.p.msPerRad : 0;
  }

  /**
   * slotRttLowerBound, its place's part already in placeAngleMs (see placeAngle), into
   * placeRttMs (a field, not a return: a number returned from a call not inlined is boxed).
   */
  private rttFromPlace(tree: FlatTree, i: number): void {
    const g = tree.slots[i * SLOT_STRIDE + S.group] as number;
    this.fill(g);
    const scratch = this.scratch as GroupScratch;
    const angleMs = this.placeAngleMs;
    this.placeRttMs = Number.isNaN(angleMs)
      ? (scratch.regionDefaultMs[g] as number)
      : angleMs + (scratch.coordinateBaseMs[g] as number);
  }

  /**
   * Lower bounds of node slot `i` alone, in the cells' scratch bounds, its RTT bound the one
   * rttFromPlace left in placeRttMs (a field: see there).
   */
  private slotBounds(tree: FlatTree, i: number, costed: boolean): ScratchBounds {
    const slots = tree.slots;
    const at = i * SLOT_STRIDE;
    const out = this.cellBounds;
    const rttLowerBoundMs = this.placeRttMs;
    out.rttLowerBoundMs = rttLowerBoundMs;
    out.costLowerBound = costAt(
      this.p.request,
      slots[at + S.input] as number,
      slots[at + S.output] as number,
      slots[at + S.cached] as number,
      tree.priced || !costed
        ? 1
        : this.multiplierOf(this.groups[slots[at + S.group] as number] as IndexGroup),
    );
    out.ttftLowerBoundMs =
      rttLowerBoundMs + prefillMsAt(this.p.request, tree.places[i * PLACE_STRIDE + P.rate] as number);
    return out;
  }

  /** The same bound for a node not in the tree (a recent insertion). */
  private entryRttLowerBound(entry: IndexedNode): number {
    const g = entry.group.id;
    this.fill(g);
    const scratch = this.scratch as GroupScratch;
    const client = this.p.clientVector;
    const position = entry.position;
    if (client === undefined || position === undefined) return scratch.regionDefaultMs[g] as number;
    const angle = angleBetween(client, position) - ANGLE_SLACK_RAD;
    return (angle > 0 ? angle * this.p.msPerRad : 0) + (scratch.coordinateBaseMs[g] as number);
  }

  /** Whether every node of cell `c` is in an excluded group. */
  private cellExcluded(tree: FlatTree, c: number): boolean {
    if (this.excluded === undefined) return false;
    const at = c * CELL_STRIDE;
    if ((cellLevelMask(tree.cells, at) & this.allowedLevelMask) === 0) return true;
    const count = cellGroupCount(tree.cells, at);
    if (count < 0) return false;
    const start = cellGroupStart(tree.cells, at);
    for (let i = start; i < start + count; i += 1)
      if (this.excluded[tree.cellGroups[i] as number] !== 1) return false;
    return true;
  }

  /** visits for the node at slot `i` of `tree` (ordinal `n`), read from the slot and the marks. */
  private slotVisits(tree: FlatTree, i: number, n: number): boolean {
    if (this.anyRemoved && this.marks.removed[n] === 1) return false;
    if (this.excluded !== undefined && this.excluded[tree.slots[i * SLOT_STRIDE + S.group] as number] === 1)
      return false;
    // Only a node in `sampled` has a fresh sample (a sampled node of an excluded group is excluded).
    return this.sampled.length === 0 || !isSampled(this.p, (tree.items[i] as IndexedNode).id);
  }

  /**
   * unsampledRttMs of the node of `entry`: for a located client and node, from the vectors and
   * the node's group alone (a node ranked is often the first read of its record, its spec and its
   * location: three objects apart, each a cache miss, and about a fifth of a tight decision).
   */
  private entryRttMs(entry: IndexedNode): number {
    const { p } = this;
    const vector = p.clientVector;
    const n = this.slotOrdinal;
    const group = this.slotGroup;
    if (n >= 0 && group !== undefined && vector !== undefined) {
      // From the slot's facts: the entry is not read.
      const at = n * FACT_STRIDE;
      const x = this.facts[at + F.x] as number;
      if (!Number.isNaN(x))
        return locatedRttMsAt(
          p.client.region,
          group,
          p.ctx.latency,
          vector,
          x,
          this.facts[at + F.y] as number,
          this.facts[at + F.z] as number,
        );
    }
    const position = entry.position;
    if (vector !== undefined && position !== undefined)
      return locatedRttMs(p.client.region, entry.group, p.ctx.latency, vector, position);
    return unsampledRttMs(p.client, entry.record.spec, p.ctx.latency, vector, position);
  }

  /** prefillMs of the request on the node of `entry`, from the slot's facts when visitSlot is visiting it. */
  private entryPrefillMs(entry: IndexedNode): number {
    const n = this.slotOrdinal;
    if (n >= 0) {
      const rate = this.facts[n * FACT_STRIDE + F.rate] as number;
      if (!Number.isNaN(rate)) return prefillMsAt(this.p.request, rate);
    }
    return prefillMs(this.p.request, entry.offer);
  }

  /** requestCost of the request on the node of `entry`, from the slot's facts when visitSlot is visiting it. */
  private entryCost(entry: IndexedNode): number {
    const n = this.slotOrdinal;
    const group = this.slotGroup;
    if (n >= 0 && group !== undefined) {
      const at = n * FACT_STRIDE;
      return costAt(
        this.p.request,
        this.facts[at + F.input] as number,
        this.facts[at + F.output] as number,
        this.facts[at + F.cached] as number,
        this.multiplierOf(group),
      );
    }
    return requestCost(this.p.request, entry.offer.price, this.multiplierOf(entry.group));
  }

  /** unsampledSource of the node of `entry`, as entryRttMs knows it. */
  private entrySource(entry: IndexedNode): LatencySource {
    return this.p.clientVector !== undefined && entry.position !== undefined
      ? 'COORDINATES'
      : unsampledSource(this.p.client, entry.record.spec);
  }

  /** Whether a search should look at `entry` (the rest is counted or evaluated elsewhere). */
  private visits(entry: IndexedNode): boolean {
    return !entry.removed && !this.isExcluded(entry.group) && !isSampled(this.p, entry.id);
  }

  /**
   * Checks a node; returns it estimated if it passed every check before the estimate. `rttMs`,
   * `prefill`, `load` and `cost`, when given, are what the estimate would work out (see
   * estimateCandidate).
   */
  private evaluate(
    entry: IndexedNode,
    count: boolean,
    rttMs?: number,
    prefill?: number,
    load?: number,
    cost?: number,
  ): EstimatedCandidate | undefined {
    const { p } = this;
    const node = entry.record;
    const state = nodeState(node, p.ctx.nowMs);
    if (count) {
      this.evaluated += 1;
      if (isLive(state)) this.live += 1;
    }
    // One record reused for every node: the checks read it and keep nothing.
    const listed = this.listed;
    listed.node = node;
    listed.offer = entry.offer;
    listed.state = state;
    for (const check of p.listedChecks) {
      if (check.rejects(listed, p.scope)) {
        if (count) this.reject(check.verdict, 1);
        return undefined;
      }
    }
    // For a node visitSlot is visiting, the cost and whether a load leaves room come from its
    // facts (see F): a ranked node's offer and prices are not read.
    const n = this.slotOrdinal;
    const candidate = estimateCandidate(
      p,
      listed,
      this.multiplierOf(entry.group),
      rttMs,
      rttMs === undefined ? undefined : this.entrySource(entry),
      prefill,
      load ?? offerLoad(node, p.request.model, p.ctx.reservations, entry.id),
      cost ?? (n >= 0 ? this.entryCost(entry) : undefined),
      n >= 0 ? (this.facts[n * FACT_STRIDE + F.free] as number) : Number.NaN,
    );
    // What later decisions may know of the node's load without reading it (see LoadFloors).
    if (this.loadFloors !== undefined) this.candidates?.noteLoad(entry, candidate.load);
    return candidate;
  }

  /**
   * After a search that ranked nothing but passed nodes over by their load floors: whether the
   * decision's reason is settled all the same. The first such node is read and checked (counted
   * like any other); once some node read was rejected for its load and some node read is live,
   * a full scan answers ALL_FULL too, whatever the nodes passed over would say.
   */
  settledByLoad(): boolean {
    const entry = this.firstPassedByLoad;
    if (entry === undefined) return false;
    // A node passed over is never read in the same search (it is passed over after the visits
    // and SKIP checks, and marked tried), so this read counts it once. It was charged to the work
    // cap when passed over, as a search without floors charges the nodes it reads.
    if (this.visits(entry)) {
      const candidate = this.evaluate(entry, true);
      if (candidate !== undefined) this.judge(candidate);
    }
    return this.ranked.sorted().length === 0 && infeasibleReason(this.live > 0, this.rejected) === 'ALL_FULL';
  }

  /** Passes an estimated node through the remaining checks and ranks it if it is feasible. */
  private judge(candidate: EstimatedCandidate): void {
    if (!this.passes(candidate)) return;
    this.ranked.offer(candidate);
    const { score, lowerBound, tieScore, tieLowerBound } = this.p.policy;
    if (score === undefined || lowerBound === undefined) return;
    const worst = this.ranked.worst();
    if (worst === undefined) return;
    this.barKey = score(worst);
    this.barTie =
      tieScore !== undefined && tieLowerBound !== undefined ? tieScore(worst) : Number.POSITIVE_INFINITY;
  }

  /** Whether an estimated node passes the remaining checks (counted either way). */
  private passes(candidate: EstimatedCandidate): boolean {
    const { p } = this;
    for (const check of p.estimatedChecks) {
      if (check.rejects(candidate, p.scope)) {
        this.reject(check.verdict, 1);
        return false;
      }
    }
    this.feasibleCount += 1;
    return true;
  }

  /**
   * Up to `attempts` nodes of the model drawn uniformly at random (`draw(n)`: an index below n);
   * the first feasible one, or undefined. Conditioned on success, uniform over the feasible nodes.
   */
  drawFeasible(draw: (count: number) => number, attempts: number): EstimatedCandidate | undefined {
    const candidates = this.candidates;
    if (candidates === undefined) return undefined;
    const count = candidates.entryCount();
    if (count === 0) return undefined;
    for (let attempt = 0; attempt < attempts; attempt += 1) {
      const entry = candidates.entryAt(draw(count));
      // A removed node or one in an excluded group is a failed draw like any other; so is a node
      // drawn again (it failed before and was counted then: each node is counted once).
      if (entry === undefined || entry.removed || this.isExcluded(entry.group)) continue;
      if (this.marks.triedBy[entry.ordinal] === this.stamp) continue;
      this.marks.triedBy[entry.ordinal] = this.stamp;
      if (!this.spend()) return undefined;
      const candidate = this.evaluate(entry, true);
      if (candidate !== undefined && this.passes(candidate)) return candidate;
    }
    return undefined;
  }

  /**
   * The feasible nodes the policy ranks best: cells in order of the policy's lower bound, skipping
   * cells that cannot meet the budget, until no cell left can beat the ranked nodes.
   */
  feasible(): void {
    const candidates = this.candidates;
    if (candidates === undefined) return;
    const { p } = this;
    const budgetMs = p.request.latencyBudgetMs;
    // The OVER_BUDGET check sums RTT and prefill exactly as the node bound below does, so the
    // budget itself is the reach.
    const reachMs = budgetMs;
    const lowerBound = p.policy.lowerBound;
    const score = p.policy.score;
    const tieLowerBound = p.policy.tieLowerBound;
    const loadScore = p.policy.loadScore;
    const nodeBounds = NODE_BOUNDS;
    /**
     * Whether every node ranked so far was met before, in ascending id order: then a node that
     * only ties the worst on the load key comes after it by id too (see the list scan below).
     */
    let idAscending = false;
    /** The node's own bounds first, from its place and price alone; then the checks. */
    const visit = (entry: IndexedNode, rttLowerBoundMs: number, knownRttMs?: number) => {
      // A node that cannot rank whatever its estimate (its load alone says so) is passed first.
      let load: number | undefined;
      if (loadScore !== undefined && score !== undefined) {
        const worst = this.ranked.worst();
        if (worst !== undefined) {
          load = offerLoad(entry.record, p.request.model, p.ctx.reservations, entry.id);
          const key = loadScore(load, entry.offer);
          const worstScore = score(worst);
          // Equal keys are settled by the node id (see RoutingPolicy.loadScore).
          if (
            key > worstScore ||
            (key === worstScore && (idAscending || compareIds(entry.id, worst.node.spec.id) > 0))
          )
            return;
        }
      }
      const prefill = this.entryPrefillMs(entry);
      if (rttLowerBoundMs + prefill > reachMs) return;
      const rttMs = knownRttMs ?? this.entryRttMs(entry);
      if (rttMs + prefill > reachMs) return;
      let cost: number | undefined;
      if (lowerBound !== undefined && this.ranked.worst() !== undefined) {
        cost = this.entryCost(entry);
        nodeBounds.costLowerBound = cost;
        nodeBounds.rttLowerBoundMs = rttMs;
        nodeBounds.ttftLowerBoundMs = rttMs + prefill;
        // Equal on the first key (one price tier), it must beat the worst on the second.
        const tie = tieLowerBound === undefined ? 0 : tieLowerBound(nodeBounds);
        if (this.pastBar(lowerBound(nodeBounds), tie)) return;
      }
      const candidate = this.evaluate(entry, true, rttMs, prefill, load, cost);
      if (candidate !== undefined) this.judge(candidate);
    };
    for (const entry of this.sampled) {
      if (!this.spend()) return;
      const candidate = this.evaluate(entry, true);
      if (candidate !== undefined) this.judge(candidate);
    }
    // First, as it folds the nodes added since the last build into the trees if they are many.
    const placeTree = candidates.tree(PLACE_TREE);
    for (const entry of candidates.recent()) {
      if (!this.visits(entry)) continue;
      if (!this.spend()) return;
      visit(entry, this.entryRttLowerBound(entry));
    }
    const byCost = p.policy.searchBy === 'cost';
    const tuning = p.ctx.searchTuning ?? DEFAULT_SEARCH_TUNING;
    const minRate = this.rateNeeded(reachMs, 0);
    let byPrice =
      byCost && this.reachesMostOfKind(candidates, placeTree, reachMs, minRate, tuning.priceTreeReach);
    const retryAfter = Math.min(255, Math.max(0, Math.floor(tuning.priceTreeRetryAfter ?? 0)));
    const kind = byPrice && retryAfter > 0 ? this.requestKind() : -1;
    if (kind >= 0 && (candidates.priceTreeSkips[kind] as number) > 0) {
      candidates.priceTreeSkips[kind] = (candidates.priceTreeSkips[kind] as number) - 1;
      byPrice = false;
    }
    if (lowerBound === undefined && candidates.size <= Math.min(tuning.flatScanNodes ?? 0, this.budget)) {
      // Nothing bounds a cell for this policy: a small model is read as a list (when the work
      // cap covers it: the list spends a visit on every node, the walk not on unreachable cells).
      // 0 is a lower bound of any RTT; each node's own is worked out in visit. A policy that
      // passes over nodes by their load reads the list by id: with nothing ranked before it (no
      // sampled or recent node), a node whose load key only ties the worst then ranks after it.
      const byId = loadScore !== undefined && this.sampled.length === 0 && candidates.recent().length === 0;
      idAscending = byId;
      // Read by id, a ranking full of nodes at the policy's least load key (idle nodes) is final:
      // every node after them has a key at least as high and a larger id.
      const floor = byId ? p.policy.loadScoreFloor : undefined;
      for (const entry of byId ? candidates.builtEntriesById() : candidates.builtEntries()) {
        if (!this.visits(entry)) continue;
        if (!this.spend()) return;
        visit(entry, 0);
        if (floor !== undefined && score !== undefined) {
          const worst = this.ranked.worst();
          if (worst !== undefined && score(worst) <= floor) return;
        }
      }
      return;
    }
    if (
      p.policy.scoreIsRtt === true &&
      p.request.client.location === undefined &&
      candidates.size <= Math.min(tuning.flatScanNodes ?? 0, this.budget)
    ) {
      // A client placed by its region alone sees every node at one RTT, the same for each of its
      // requests: a small model is read in that order from a list kept per region, up to the
      // first node past the worst ranked one (its RTT is its score) or past the budget (TTFT is
      // at least the RTT).
      const latency = p.ctx.latency;
      const order = candidates.rttOrder(latency, p.client.region, (entry) =>
        unsampledRttMs(p.client, entry.record.spec, latency, p.clientVector, entry.position),
      );
      const { entries, rtts } = order;
      for (let i = 0; i < entries.length; i += 1) {
        const rttMs = rtts[i] as number;
        if (rttMs > reachMs || this.pastBar(rttMs, 0)) return;
        const entry = entries[i] as IndexedNode;
        if (!this.visits(entry)) continue;
        if (!this.spend()) return;
        visit(entry, rttMs, rttMs);
      }
      return;
    }
    if (!byPrice) {
      const tree = candidates.tree(byCost ? MIXED_TREE : PLACE_TREE, p.pricing, minRate);
      // Among cells that tie on the first bound (one price tier), the likeliest winners first.
      this.walk(tree, BY_POLICY, visit, { leafReachMs: reachMs });
      return;
    }
    // The price tree finds the cheapest nodes wherever they are, in a few cells when the budget
    // reaches most of them. When it has not within its cells, the reach was narrower than it
    // looked: the walk goes on in the mixed tree, keeping what it ranked and counted, and skipping
    // the nodes it already examined.
    this.tried = MARK;
    const priceTree = candidates.tree(PRICE_TREE, p.pricing, minRate);
    const finished = this.walk(priceTree, BY_POLICY, visit, {
      maxPops: tuning.priceTreeMaxCells,
      leafReachMs: reachMs,
    });
    if (!finished) {
      if (kind >= 0) candidates.priceTreeSkips[kind] = retryAfter;
      this.tried = SKIP;
      const mixedTree = candidates.tree(MIXED_TREE, p.pricing, minRate);
      this.walk(mixedTree, BY_POLICY, visit, { leafReachMs: reachMs });
    }
    this.tried = undefined;
  }

  /**
   * The request's kind for SearchTuning.priceTreeRetryAfter: its client region, budget, uncached
   * prompt and answer length (the last three in half or whole powers of two: halfLog2), hashed to
   * one of REQUEST_KINDS (kinds that collide share what they remember: work, never answers).
   */
  private requestKind(): number {
    const r = this.p.request;
    const tokens = Math.max(0, r.inputTokens - r.cachedInputTokens);
    const kind = kindHash(
      this.clientRegionIndex + 2,
      halfLog2(r.latencyBudgetMs),
      halfLog2(tokens),
      31 - Math.clz32(r.maxOutputTokens + 1),
    );
    return kind & (REQUEST_KINDS - 1);
  }

  /**
   * The request's kind for reachesMostOfKind: where the client is (on a grid of whole degrees),
   * its budget and its uncached prompt (in half powers of two), hashed to 32 bits.
   */
  private reachKind(location: LatLon): number {
    const r = this.p.request;
    const tokens = Math.max(0, r.inputTokens - r.cachedInputTokens);
    return kindHash(
      Math.floor(location.lat) + 1000,
      Math.floor(location.lon) + 1000,
      halfLog2(r.latencyBudgetMs),
      halfLog2(tokens),
    );
  }

  /**
   * A prefill rate below which no node can meet `reachMs` when `rttMs` of it go to the network
   * (on top of the smallest access overhead), a hair low for rounding; 0 when any rate might.
   * At `rttMs` 0: the slowest rate any node of a tree needs.
   */
  private rateNeeded(reachMs: number, rttMs: number): number {
    const tokens = this.p.request.inputTokens - this.p.request.cachedInputTokens;
    if (tokens <= 0) return 0;
    const slackMs = reachMs - (this.minOverheads[15] as number) - rttMs;
    if (slackMs <= 0) return Number.POSITIVE_INFINITY;
    return ((tokens * 1000) / slackMs) * (1 - 1e-9);
  }

  /**
   * reachesMost, as last answered for a request of kind `kind` (see requestKind), for the next
   * REACH_REUSES requests of the kind: requests alike reach alike, and the estimate walks the
   * place tree's top cells (about a tenth of a tight decision). Which tree a search walks changes
   * its work, never its answer.
   */
  private reachesMostOfKind(
    candidates: ModelCandidates,
    placeTree: FlatTree,
    reachMs: number,
    minRate: number,
    share: number,
  ): boolean {
    // Located (the client's own place or its region's centroid) exactly when it has a vector.
    const location = this.p.client.location;
    if (share <= 0 || location === undefined)
      return this.reachesMost(candidates, placeTree, reachMs, minRate, share);
    const memo = candidates.reachMemo(placeTree, share);
    const kind = this.reachKind(location);
    const slot = kind & (REACH_KINDS - 1);
    const uses = memo.uses[slot] as number;
    if (uses > 0 && memo.kinds[slot] === kind) {
      memo.uses[slot] = uses - 1;
      return memo.answers[slot] === REACHES_MOST;
    }
    const answer = this.reachesMost(candidates, placeTree, reachMs, minRate, share);
    memo.kinds[slot] = kind;
    memo.answers[slot] = answer ? REACHES_MOST : REACHES_FEW;
    memo.uses[slot] = REACH_REUSES;
    return answer;
  }

  /**
   * Whether at least about `share` of the model's nodes could meet the budget, judged on the place
   * tree's top cells (each by its nearest point) and the model's spread of prefill rates: then the
   * cheapest nodes are best found by price wherever they are; otherwise the search stays near the
   * client. A long prompt on a tight budget reaches far only on the fastest nodes: counting the
   * whole cell for them sent such requests through the price tree, which gave up on them.
   */
  private reachesMost(
    candidates: ModelCandidates,
    placeTree: FlatTree,
    reachMs: number,
    minRate: number,
    share: number,
  ): boolean {
    if (share <= 0) return true;
    const vector = this.p.clientVector;
    if (vector === undefined) return share <= 1;
    const { cells } = placeTree;
    // RTT within reach: the budget less the smallest overhead (and each node's own prefill).
    const rttReachMs = reachMs - (this.minOverheads[15] as number);
    const { roots } = placeTree;
    let total = 0;
    for (let r = 0; r < roots.length; r += 1) total += cellSize(cells, (roots[r] as number) * CELL_STRIDE);
    // The price tree gives up after a fixed number of cells; how likely it is to meet enough
    // nodes that fit within them grows with how many fit (share × size), so a larger model needs
    // a smaller share (tuned on `npm run bench` at 10⁴ and 10⁵ nodes).
    const need = share * Math.min(1, Math.sqrt(REACH_REFERENCE_NODES / total)) * total;
    // What the cells judged so far count, and what they and the rest could count at most: the
    // answer is known once the one reaches `need` or the other falls below it.
    let reached = 0;
    let possible = total;
    // A work list of (cell, depth) pairs; `top` marks its end (the array keeps its capacity).
    const stack = REACH_STACK;
    let top = 0;
    for (let r = 0; r < roots.length; r += 1) {
      const root = roots[r] as number;
      const at = root * CELL_STRIDE;
      if (unlocatedCell(cells, at)) {
        const size = cellSize(cells, at);
        const counted = size * candidates.fastShare(minRate);
        reached += counted;
        possible -= size - counted;
      } else {
        stack[top] = root;
        stack[top + 1] = 0;
        top += 2;
      }
    }
    while (top > 0 && reached < need && possible >= need) {
      top -= 2;
      const c = stack[top] as number;
      const depth = stack[top + 1] as number;
      const at = c * CELL_STRIDE;
      const maxPrefill = cells[at + C.maxPrefill] as number;
      const reachRad =
        (rttReachMs - (maxPrefill > 0 ? prefillMsAt(this.p.request, maxPrefill) : 0)) / this.p.msPerRad;
      // Chords: a lower bound of the angle to the nearest node, and roughly the farthest.
      const near = boxChordTo(vector, cells, at);
      if (near > reachRad) {
        possible -= cellSize(cells, at);
        continue;
      }
      const far = farChordTo(vector, cells, at);
      const left = leftChild(cells, c);
      if (far <= reachRad || left < 0 || depth >= REACH_DEPTH) {
        // The nodes fast enough to meet the budget from the cell's nearest point; half of them
        // where the reach cuts a cell this search does not split.
        const nearestMs = near * this.p.msPerRad;
        const within = far <= reachRad || left < 0 ? 1 : 0.5;
        const size = cellSize(cells, at);
        const counted = size * within * candidates.fastShare(this.rateNeeded(reachMs, nearestMs));
        reached += counted;
        possible -= size - counted;
      } else {
        stack[top] = left;
        stack[top + 1] = depth + 1;
        stack[top + 2] = left + 1;
        stack[top + 3] = depth + 1;
        top += 4;
      }
    }
    return reached >= need;
  }

  /** pastBar for the least (key, tie) on the (non-empty) frontier, read where it lies. */
  private frontierPastBar(): boolean {
    const key = this.frontier.keys[0] as number;
    return key > this.barKey || (key === this.barKey && (this.frontier.ties[0] as number) > this.barTie);
  }

  /**
   * Whether anything whose first key is at least `key` and second at least `tie` is past the bar
   * (see barKey): then it cannot enter the ranking, or beat the best TTFT found.
   */
  private pastBar(key: number, tie: number): boolean {
    return key > this.barKey || (key === this.barKey && tie > this.barTie);
  }

  /**
   * The key and tie of `bounds` in the walk under way, into WALK_KEY; false when whatever they
   * bound is not worth a place: past the walk's reach or past the bar.
   */
  private keyed(bounds: ScratchBounds): boolean {
    let key = bounds.ttftLowerBoundMs;
    let tie = 0;
    if (this.walkBy === BY_POLICY) {
      if (key > this.walkReachMs) return false;
      const { lowerBound, tieLowerBound } = this.p.policy;
      key = lowerBound === undefined ? 0 : lowerBound(bounds);
      if (tieLowerBound !== undefined) tie = tieLowerBound(bounds);
    }
    WALK_KEY[KEY] = key;
    WALK_KEY[TIE] = tie;
    return !this.pastBar(key, tie);
  }

  /** Whether cell `c` of the walk's tree is worth a place (not excluded, see keyed); its key in WALK_KEY. */
  private cellKeyed(tree: FlatTree, c: number): boolean {
    if (this.fastKeys) {
      const keyed = this.cellKeyedFast(tree.cells, c * CELL_STRIDE);
      if (keyed !== UNKEYED) return keyed === KEPT;
    }
    return !this.cellExcluded(tree, c) && this.keyed(this.bound(tree, c, this.walkCosted));
  }

  /**
   * cellKeyed for the common walk, in one pass over the cell with the request's numbers at hand:
   * a cost search by the routing rule's bounds (cost, then TTFT) over a priced tree, for a
   * located client, nothing excluded (see fastKeys). The same bounds, worked out exactly as
   * bound() and keyed() work them out; UNKEYED for a cell with no coordinates (keyed the long way).
   */
  private cellKeyedFast(cells: Float64Array, at: number): number {
    if (unlocatedCell(cells, at)) return UNKEYED;
    // As cellRttLowerBound works it out for a located cell.
    const angle = boxChordTo(this.p.clientVector as Vec3, cells, at) - ANGLE_SLACK_RAD;
    const rttLowerBoundMs = (angle > 0 ? angle * this.msPerRad : 0) + this.cellCoordinateBaseMs(cells, at);
    const maxPrefill = cells[at + C.maxPrefill] as number;
    const ttftLowerBoundMs =
      rttLowerBoundMs + (maxPrefill > 0 ? (this.uncachedTokens / maxPrefill) * 1000 : 0);
    if (ttftLowerBoundMs > this.walkReachMs) return DROPPED;
    // As costAt and bound's mix bound work them out at a multiplier of 1 (a priced tree's).
    const minCached = cells[at + C.minCached] as number;
    let cost =
      (this.uncachedTokens * (cells[at + C.minInput] as number) +
        this.cachedTokens * minCached +
        this.outputTokens * (cells[at + C.minOutput] as number)) /
      1e6;
    const mix = this.mix;
    if (mix.step >= 0) {
      const mixed =
        ((mix.lowWeight * (cells[at + mix.lowField] as number) +
          mix.highWeight * (cells[at + mix.highField] as number) +
          this.cachedTokens * minCached) *
          MIX_SLACK) /
          1e6 -
        MIX_SLACK_ABSOLUTE;
      if (mixed > cost && mixed < Number.POSITIVE_INFINITY) cost = mixed;
    }
    WALK_KEY[KEY] = cost;
    WALK_KEY[TIE] = ttftLowerBoundMs;
    return cost > this.barKey || (cost === this.barKey && ttftLowerBoundMs > this.barTie) ? DROPPED : KEPT;
  }

  /** Puts cell `c` of the walk's tree on the frontier, if it is worth a place. */
  private pushCell(tree: FlatTree, c: number): void {
    if (this.cellKeyed(tree, c)) this.frontier.pushKeyed(c, WALK_KEY);
  }

  /**
   * Visits node slot `i` of the walk's tree, marked as visited first: a node passed over unvisited
   * is looked at again by a walk that takes over, as one passed over by its slot bounds is.
   */
  private visitSlot(
    tree: FlatTree,
    i: number,
    rttLowerBoundMs: number,
    visit: (entry: IndexedNode, rttLowerBoundMs: number) => void,
  ): void {
    const n = tree.ordinals[i] as number;
    if (this.tried === MARK) this.marks.triedBy[n] = this.stamp;
    this.slotOrdinal = n;
    this.slotGroup = this.groups[tree.slots[i * SLOT_STRIDE + S.group] as number];
    visit(tree.items[i] as IndexedNode, rttLowerBoundMs);
    this.slotOrdinal = -1;
    this.slotGroup = undefined;
  }

  /**
   * Puts the children of a cell on the frontier (those worth a place), except one whose key is
   * the least left, anywhere: that one is returned, for the walk to take next without a push and
   * a pop. -1 when there is none.
   */
  private pushChildren(tree: FlatTree, left: number, right: number): number {
    const frontier = this.frontier;
    const leftKept = this.cellKeyed(tree, left);
    const leftKey = WALK_KEY[KEY] as number;
    const leftTie = WALK_KEY[TIE] as number;
    const rightKept = this.cellKeyed(tree, right);
    const rightKey = WALK_KEY[KEY] as number;
    const rightTie = WALK_KEY[TIE] as number;
    let best = -1;
    let bestKey = Number.POSITIVE_INFINITY;
    let bestTie = Number.POSITIVE_INFINITY;
    if (leftKept) {
      best = left;
      bestKey = leftKey;
      bestTie = leftTie;
    }
    if (rightKept) {
      if (best < 0 || rightKey < bestKey || (rightKey === bestKey && rightTie < bestTie)) {
        if (best >= 0) {
          WALK_KEY[KEY] = bestKey;
          WALK_KEY[TIE] = bestTie;
          frontier.pushKeyed(best, WALK_KEY);
        }
        best = right;
        bestKey = rightKey;
        bestTie = rightTie;
      } else {
        WALK_KEY[KEY] = rightKey;
        WALK_KEY[TIE] = rightTie;
        frontier.pushKeyed(right, WALK_KEY);
      }
    }
    if (best < 0) return -1;
    if (frontier.size === 0) return best;
    const topKey = frontier.keys[0] as number;
    if (bestKey < topKey || (bestKey === topKey && bestTie <= (frontier.ties[0] as number))) return best;
    WALK_KEY[KEY] = bestKey;
    WALK_KEY[TIE] = bestTie;
    frontier.pushKeyed(best, WALK_KEY);
    return -1;
  }

  /**
   * Walks `tree` best-first, keyed `by` (see WalkKey): a cell goes on the frontier with its key
   * unless it is not worth a place (see keyed), the walk ends when the smallest key left is past
   * the bar, and each node of a leaf reached that may rank goes to `visit`, with a lower bound of
   * its RTT, when its turn comes (see below; WalkOptions for the rest). Ends early when the work
   * cap is spent; false when it gave up after `maxPops` cells. Keys and bounds travel through
   * typed arrays and fields, never as numbers passed between calls: a number passed to or
   * returned from a call not inlined is boxed, and a decision allocated several kilobytes of them.
   */
  private walk(
    tree: FlatTree,
    by: WalkKey,
    visit: (entry: IndexedNode, rttLowerBoundMs: number) => void,
    options: WalkOptions = {},
  ): boolean {
    const {
      maxPops = Number.POSITIVE_INFINITY,
      leafReachMs = Number.POSITIVE_INFINITY,
      costed = true,
    } = options;
    this.walkBy = by;
    this.walkReachMs = leafReachMs;
    this.walkCosted = costed;
    const frontier = this.frontier;
    frontier.clear();
    const request = this.p.request;
    if (costed)
      mixWeights(tree, request.inputTokens - request.cachedInputTokens, request.maxOutputTokens, this.mix);
    else this.mix.step = -1;
    const vector = this.p.clientVector;
    this.fastKeys =
      (this.p.ctx.searchTuning ?? DEFAULT_SEARCH_TUNING).onePassBounds !== false &&
      by === BY_POLICY &&
      costed &&
      tree.priced &&
      vector !== undefined &&
      this.excluded === undefined &&
      this.p.policy.lowerBound === CHEAPEST_FEASIBLE.lowerBound &&
      this.p.policy.tieLowerBound === CHEAPEST_FEASIBLE.tieLowerBound;
    if (this.fastKeys) {
      this.msPerRad = this.p.msPerRad;
      this.uncachedTokens = request.inputTokens - request.cachedInputTokens;
      this.cachedTokens = request.cachedInputTokens;
      this.outputTokens = request.maxOutputTokens;
    }
    // The nodes worth a visit wait on the frontier beside the cells, keyed by their own bounds,
    // and are visited when theirs is the least left: a node visited is a record read and an
    // estimate made, and one that cannot beat the nodes ranked by then is never read (in leaf
    // order, about half of a loose decision's visits were to nodes a cheaper one then beat; in
    // bound order within a leaf, a tight decision still read twice the nodes it ranked). That
    // takes a policy that ranks by its bounds in a total order; a policy without bounds visits
    // each leaf's nodes in leaf order (see LeafQueue), which a policy that collects every node in
    // the order met picks by.
    const { policy } = this.p;
    const deferred =
      this.walkBy === BY_TTFT || (policy.lowerBound !== undefined && policy.collect === 'ranked');
    let pops = 0;
    let capped = false;
    let gaveUp = false;
    for (const root of tree.roots) this.pushCell(tree, root);
    // A child whose key is the least left, taken without the frontier (see pushChildren).
    let next = -1;
    while (next >= 0 || (frontier.size > 0 && !this.frontierPastBar())) {
      let top = next;
      if (top >= 0) next = -1;
      else top = frontier.pop() as number;
      if (top < 0) {
        // A node, its slot i as -1 - i.
        const i = -1 - top;
        this.visitSlot(tree, i, this.slotRttLowerBound(tree, i), visit);
        continue;
      }
      // Once the work cap is spent (or the walk gives up), only the nodes already charged to the
      // cap are visited: each node is charged once, and a walk that takes over skips them as read.
      if (capped) continue;
      if (++pops > maxPops) {
        if (!deferred) {
          frontier.clear();
          return false;
        }
        gaveUp = true;
        capped = true;
        continue;
      }
      const c = top;
      const at = c * CELL_STRIDE;
      const left = leftChild(tree.cells, c);
      if (left >= 0) {
        next = this.pushChildren(tree, left, left + 1);
        continue;
      }
      const start = cellItemStart(tree.cells, at);
      const end = start + cellSize(tree.cells, at);
      // A leaf lists its nodes fastest prefill first: past the first that cannot fit the reach
      // even at the leaf's nearest, none can. (Summed as the budget check sums, so that rounding
      // never drops a node that fits exactly.)
      const bounded = leafReachMs !== Number.POSITIVE_INFINITY;
      const queue = this.leafQueue;
      queue.clear();
      const floors = this.readsFloors ? this.loadFloors : undefined;
      // Most nodes of a leaf a tight budget reaches are too far or too slow: both are told first
      // from the place alone, by thresholds worked out once for the leaf (a rate, a squared
      // chord), so that such a node costs no division and no square root. Each threshold leaves a
      // margin, and a node between a threshold and its margin is judged exactly, below: the
      // thresholds pass over and stop at exactly the nodes the exact checks would.
      this.leafThresholds(tree, at, start, end, bounded);
      const { leafRttMs, leafBaseMs, slowRate, fastRate, farChord2 } = this;
      const places = tree.places;
      const client = this.p.clientVector;
      const clientX = client?.x ?? 0;
      const clientY = client?.y ?? 0;
      const clientZ = client?.z ?? 0;
      const fastSlots = this.fastKeys && bounded;
      const slots = tree.slots;
      const scratch = this.scratch as GroupScratch;
      const msPerRad = this.msPerRad;
      const uncached = this.uncachedTokens;
      const cachedTokens = this.cachedTokens;
      const outputTokens = this.outputTokens;
      for (let i = start; i < end; i += 1) {
        const place = i * PLACE_STRIDE;
        const rate = places[place + P.rate] as number;
        if (rate < slowRate) break;
        if (rate >= fastRate) {
          const dx = clientX - (places[place + P.x] as number);
          const dy = clientY - (places[place + P.y] as number);
          const dz = clientZ - (places[place + P.z] as number);
          if (dx * dx + dy * dy + dz * dz > farChord2) {
            if (this.spend()) continue;
            capped = true;
            break;
          }
        }
        // From the place and slot alone (contiguous memory): the node's record is not touched
        // unless it might fit. A node passed over still counts against the work cap.
        const prefillLowerBoundMs = bounded ? prefillMsAt(this.p.request, rate) : 0;
        if (leafRttMs + prefillLowerBoundMs > leafReachMs) break;
        let rttLowerBoundMs: number;
        if (fastSlots) {
          // The common walk (see fastKeys), in one pass with the request's numbers at hand: the
          // same bounds placeAngle, rttFromPlace, slotBounds and keyed work out, in the same
          // order and by the same operations (so the same numbers to the bit), without the calls.
          // A change to any of them changes this too (the onePassBounds property test tells).
          const x = places[place + P.x] as number;
          let angleMs = Number.NaN;
          if (!Number.isNaN(x)) {
            const dx = clientX - x;
            const dy = clientY - (places[place + P.y] as number);
            const dz = clientZ - (places[place + P.z] as number);
            const angle = Math.sqrt(dx * dx + dy * dy + dz * dz) - PLACE_SLACK_RAD - ANGLE_SLACK_RAD;
            angleMs = angle > 0 ? angle * msPerRad : 0;
            if (angleMs + leafBaseMs + prefillLowerBoundMs > leafReachMs) {
              if (this.spend()) continue;
              capped = true;
              break;
            }
          }
          const slot = i * SLOT_STRIDE;
          const g = slots[slot + S.group] as number;
          if (scratch.stamp[g] !== this.stamp) this.fill(g);
          rttLowerBoundMs = Number.isNaN(angleMs)
            ? (scratch.regionDefaultMs[g] as number)
            : angleMs + (scratch.coordinateBaseMs[g] as number);
          const ttftLowerBoundMs = rttLowerBoundMs + prefillLowerBoundMs;
          const cost =
            (uncached * (slots[slot + S.input] as number) +
              cachedTokens * (slots[slot + S.cached] as number) +
              outputTokens * (slots[slot + S.output] as number)) /
            1e6;
          if (
            ttftLowerBoundMs > leafReachMs ||
            cost > this.barKey ||
            (cost === this.barKey && ttftLowerBoundMs > this.barTie)
          ) {
            if (this.spend()) continue;
            capped = true;
            break;
          }
          WALK_KEY[KEY] = cost;
          WALK_KEY[TIE] = ttftLowerBoundMs;
        } else {
          this.placeAngle(tree, i);
          // First by its place and the leaf's least base: a node too far even so is passed over
          // before its slot is read (most nodes of the leaves a tight budget reaches; NaN, for a
          // node or client with no coordinates, passes nothing over).
          if (bounded && this.placeAngleMs + leafBaseMs + prefillLowerBoundMs > leafReachMs) {
            if (this.spend()) continue;
            capped = true;
            break;
          }
          this.rttFromPlace(tree, i);
          rttLowerBoundMs = this.placeRttMs;
          // The slot's own bounds, cost included, from the slot alone: a node that cannot rank is
          // passed over before its record is read (as the cells above it were).
          if (
            rttLowerBoundMs + prefillLowerBoundMs > leafReachMs ||
            !this.keyed(this.slotBounds(tree, i, costed))
          ) {
            if (this.spend()) continue;
            capped = true;
            break;
          }
        }
        // From the slot and the marks: the node itself is read only when it is visited.
        const n = tree.ordinals[i] as number;
        if (!this.slotVisits(tree, i, n)) continue;
        if (this.tried === SKIP && this.marks.triedBy[n] === this.stamp) continue;
        if (!this.spend()) {
          capped = true;
          break;
        }
        if (
          floors !== undefined &&
          this.passesByLoad(floors, n, rttLowerBoundMs, prefillLowerBoundMs, options)
        ) {
          // Charged as a visit, and marked as one: a walk that takes over skips it as it skips
          // the nodes read (it would pass it over again, charged again).
          if (this.tried === MARK) this.marks.triedBy[n] = this.stamp;
          this.passedByLoad += 1;
          this.firstPassedByLoad ??= tree.items[i] as IndexedNode;
          continue;
        }
        if (deferred) {
          frontier.pushKeyed(-1 - i, WALK_KEY);
          continue;
        }
        WALK_KEY[RTT] = rttLowerBoundMs;
        queue.add(i, WALK_KEY);
      }
      if (deferred) continue;
      // In (key, tie) order, and the ranked nodes only get better: past the first node that
      // cannot rank, none can.
      queue.start();
      for (let q = queue.next(); q >= 0; q = queue.next()) {
        if (this.pastBar(queue.keys[q] as number, queue.ties[q] as number)) break;
        this.visitSlot(tree, queue.slots[q] as number, queue.rtts[q] as number, visit);
      }
      if (capped) {
        frontier.clear();
        return true;
      }
    }
    frontier.clear();
    return !gaveUp;
  }

  /**
   * The leaf at offset `at` of `tree` (node slots `[start, end)`) as the walk reads it, into
   * fields (numbers passed to or returned from a call not inlined are boxed): its RTT bound and
   * coordinate base (leafRttMs, leafBaseMs; 0 unless `bounded` by the walk's reach), and the
   * thresholds slowRate, fastRate and farChord2 its nodes are first read by.
   *
   * A node slower than slowRate fails the leaf's reach on its prefill alone (the walk stops
   * there: the leaf lists its nodes fastest first); one at least fastRate fast does not, and when
   * it is farther than farChord2 (a squared chord from the client) it fails the reach on its place
   * and the fastest prefill of the leaf. Each is worked out with a margin, so that it only ever
   * decides what the exact check would; where the margins cannot be trusted (no reach, no prompt,
   * too little room left for the rounding at the reach's scale, no coordinates, a rate that is
   * not a number) nothing is decided by them.
   */
  private leafThresholds(tree: FlatTree, at: number, start: number, end: number, bounded: boolean): void {
    const reachMs = bounded ? this.walkReachMs : Number.NaN;
    const leafRttMs = bounded ? this.cellRttLowerBound(tree, at) : 0;
    const leafBaseMs = bounded ? this.cellCoordinateBaseMs(tree.cells, at) : 0;
    this.leafRttMs = leafRttMs;
    this.leafBaseMs = leafBaseMs;
    this.slowRate = 0;
    this.fastRate = Number.POSITIVE_INFINITY;
    this.farChord2 = Number.POSITIVE_INFINITY;
    const tokens = this.p.request.inputTokens - this.p.request.cachedInputTokens;
    // The exact checks sum at the scale of the reach: what is left of it must be far above
    // their rounding for a margin relative to it to cover that rounding.
    const roomMs = reachMs - leafRttMs;
    if (!(tokens > 0 && roomMs > Math.abs(reachMs) * ROOM_SHARE && start < end)) return;
    const rate = (tokens * 1000) / roomMs;
    this.slowRate = rate * (1 - THRESHOLD_MARGIN);
    this.fastRate = rate * (1 + THRESHOLD_MARGIN);
    if (this.p.clientVector === undefined) return;
    // The exact check subtracts the slacks placeAngle takes off; the margin on top is a share of
    // the reach (far above the rounding of the exact sum at its scale), and a chord for a reach
    // near zero.
    const msPerRad = this.p.msPerRad;
    const fastestMs = prefillMsAt(this.p.request, tree.places[start * PLACE_STRIDE + P.rate] as number);
    const chord =
      (reachMs - leafBaseMs - fastestMs + Math.abs(reachMs) * REACH_MARGIN) / msPerRad +
      PLACE_SLACK_RAD +
      ANGLE_SLACK_RAD +
      CHORD_MARGIN;
    // Too far by so much that even at the client no node would fit: every located node is. A
    // rate that is not a number (a programmatic caller's) decides nothing.
    if (Number.isNaN(chord)) return;
    this.farChord2 = chord > 0 ? chord * chord * (1 + THRESHOLD_MARGIN) : -1;
  }
  /** What leafThresholds worked out last. */
  private leafRttMs = 0;
  private leafBaseMs = 0;
  private slowRate = 0;
  private fastRate = Number.POSITIVE_INFINITY;
  private farChord2 = Number.POSITIVE_INFINITY;

  /**
   * Whether node `n`'s load floor passes it over, unread, in a walk with `options` (a node about
   * to be read: it fits the walk's reach on its RTT and prefill bounds). Bounded by a reach: when
   * its queue is known to put it past the reach, or it has no free slot (the margin keeps rounding
   * from passing over a node that fits exactly). Unbounded: only when it has no free slot and the
   * walk takes only nodes with one (WalkOptions.passFull).
   */
  private passesByLoad(
    floors: LoadFloors,
    n: number,
    rttLowerBoundMs: number,
    prefillLowerBoundMs: number,
    options: WalkOptions,
  ): boolean {
    const reachMs = options.leafReachMs ?? Number.POSITIVE_INFINITY;
    if (reachMs === Number.POSITIVE_INFINITY)
      return options.passFull === true && queueFloorMs(floors, n, 0, 0) === Number.POSITIVE_INFINITY;
    const queueFloor = queueFloorMs(floors, n, prefillLowerBoundMs, this.p.request.maxOutputTokens);
    return queueFloor > 0 && rttLowerBoundMs + prefillLowerBoundMs + queueFloor > reachMs * (1 + 1e-9) + 1e-9;
  }

  /**
   * The lowest-TTFT node (then cheapest, then smallest id) that passes the checks before the
   * estimate and `accept`, searched nearest first; undefined if none does. Counts nothing.
   * `needsSlot`: `accept` takes only nodes with a free slot (then load floors pass the full over).
   */
  nearest(
    accept: (candidate: EstimatedCandidate) => boolean,
    needsSlot = false,
  ): EstimatedCandidate | undefined {
    const candidates = this.candidates;
    if (candidates === undefined) return undefined;
    let best: EstimatedCandidate | undefined;
    // TTFT is at least RTT + prefill (the queue only adds): a node that cannot beat the best even
    // idle is passed over before its exact RTT is worked out.
    const visit = (entry: IndexedNode, rttLowerBoundMs: number | undefined) => {
      let rttMs: number | undefined;
      let prefill: number | undefined;
      if (best !== undefined && rttLowerBoundMs !== undefined) {
        prefill = this.entryPrefillMs(entry);
        const bestMs = best.estimate.ttftMs;
        if (rttLowerBoundMs + prefill > bestMs) return;
        rttMs = this.entryRttMs(entry);
        if (rttMs + prefill > bestMs) return;
      } else if (rttLowerBoundMs !== undefined) rttMs = this.entryRttMs(entry);
      const candidate = this.evaluate(entry, false, rttMs, prefill);
      if (candidate === undefined || !accept(candidate)) return;
      if (best === undefined || byTtftThenCostThenId(candidate, best) < 0) {
        best = candidate;
        this.barKey = candidate.estimate.ttftMs;
      }
    };
    // The walk's bar is the best TTFT found (ties never past it); the ranking's is put back after.
    const { barKey, barTie } = this;
    this.barKey = Number.POSITIVE_INFINITY;
    this.barTie = Number.POSITIVE_INFINITY;
    for (const entry of this.sampled) if (this.spend()) visit(entry, undefined);
    const tree = candidates.tree(PLACE_TREE);
    for (const entry of candidates.recent())
      if (this.visits(entry) && this.spend()) visit(entry, this.entryRttLowerBound(entry));
    // Keyed by TTFT alone: the cells' cost bounds are left unpriced. Only nodes with a free slot
    // taken: one known to have none is not worth a read.
    this.walk(tree, BY_TTFT, visit, { costed: false, passFull: needsSlot });
    this.barKey = barKey;
    this.barTie = barTie;
    return best;
  }
}

/**
 * `knownRttMs`, when given, must be what unsampledRttMs says (the caller knows no sample applies),
 * `knownSource` what unsampledSource says, `prefill` what prefillMs would, `load` what offerLoad
 * would and `knownCost` what requestCost would (the caller has worked them out). Below
 * `roomBelow` (F.free of the node's facts) a load queues nothing and leaves room: then the offer
 * is not read for either.
 */
function estimateCandidate(
  p: Prepared,
  listed: Extract<Candidate, { stage: 'listed' }>,
  multiplier: number,
  knownRttMs?: number,
  knownSource?: LatencySource,
  knownPrefillMs?: number,
  knownLoad?: number,
  knownCost?: number,
  roomBelow = Number.NaN,
): EstimatedCandidate {
  const { node, offer } = listed;
  const model = p.request.model;
  const load = knownLoad ?? offerLoad(node, model, p.ctx.reservations);
  let rttMs: number;
  let source: LatencySource;
  if (knownRttMs !== undefined) {
    rttMs = knownRttMs;
    source = knownSource ?? unsampledSource(p.client, node.spec);
  } else {
    const rtt = estimateRttFor(p.client, node.spec, p.ctx.latency, p.ctx.nowMs);
    rttMs = rtt.rttMs;
    source = rtt.source;
  }
  const roomy = load < roomBelow;
  return {
    stage: 'estimated',
    node,
    offer,
    state: listed.state,
    estimate: estimateWith(
      p.request,
      offer,
      load,
      rttMs,
      source,
      multiplier,
      knownPrefillMs,
      roomy ? 0 : undefined,
      knownCost,
    ),
    load,
    hasSlot: roomy || load < offer.maxConcurrency + offer.maxQueue,
  };
}

/** The estimate of DESIGN §3 from its parts: RTT + queue + prefill, and the priced tokens. */
function estimateWith(
  request: RouteRequest,
  offer: ModelOffer,
  load: number,
  rttMs: number,
  source: LatencySource,
  multiplier: number,
  prefill = prefillMs(request, offer),
  queue = queueMs(request, offer, load),
  cost = requestCost(request, offer.price, multiplier),
): Estimate {
  return {
    networkRttMs: rttMs,
    queueMs: queue,
    prefillMs: prefill,
    ttftMs: rttMs + queue + prefill,
    cost,
    latencySource: source,
  };
}

/**
 * Requests on a node's offer of `model`: its last report plus the reservations made since.
 * `nodeId`: the node's id, when the caller holds it elsewhere than in the record's spec (a search
 * reads it from the index: a spec first read is a cache miss).
 */
export function offerLoad(
  node: NodeRecord,
  model: string,
  reservations: PendingReservations,
  nodeId = node.spec.id,
): number {
  return reportedLoad(node, model) + reservations.pending(nodeId, model, node.statusAtMs);
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
  const rtt = estimateRttFor(client, node.spec, ctx.latency, ctx.nowMs);
  const multiplier = ctx.priceMultiplier.at(node.spec, request.model, ctx.nowMs);
  return estimateWith(request, offer, load, rtt.rttMs, rtt.source, multiplier);
}

function byTtftThenCostThenId(a: EstimatedCandidate, b: EstimatedCandidate): number {
  return (
    a.estimate.ttftMs - b.estimate.ttftMs ||
    a.estimate.cost - b.estimate.cost ||
    compareIds(a.node.spec.id, b.node.spec.id)
  );
}

/** The best `capacity` candidates under the policy's order (all of them when unbounded). */
class Ranked {
  private readonly items: EstimatedCandidate[] = [];
  constructor(
    private readonly capacity: number,
    private readonly policy: RoutingPolicy,
  ) {}

  offer(item: EstimatedCandidate): void {
    const { items } = this;
    if (this.capacity === Number.POSITIVE_INFINITY) {
      items.push(item);
      return;
    }
    const compare = this.policy.compare;
    if (items.length === this.capacity && compare(item, items[items.length - 1] as EstimatedCandidate) >= 0)
      return;
    // Insertion by hand: splice would allocate the (empty) list of what it removed, every time.
    let index = items.length;
    items.push(item);
    while (index > 0 && compare(item, items[index - 1] as EstimatedCandidate) < 0) {
      items[index] = items[index - 1] as EstimatedCandidate;
      index -= 1;
    }
    items[index] = item;
    if (items.length > this.capacity) items.pop();
  }

  /** The last ranked item once the ranking is full; undefined before. */
  worst(): EstimatedCandidate | undefined {
    return this.items.length === this.capacity ? this.items[this.items.length - 1] : undefined;
  }

  /** Best first; with unbounded capacity, in the order they were offered (see RoutingPolicy.collect). */
  sorted(): readonly EstimatedCandidate[] {
    return this.items;
  }
}

function placementOf(candidate: EstimatedCandidate, model: string): Placement {
  return placementOn(candidate.node.spec, model, candidate.estimate);
}

/** A placement of `model` on the node of `spec`, with its estimate. */
export function placementOn(spec: NodeSpec, model: string, estimate: Estimate): Placement {
  return {
    nodeId: spec.id,
    endpoint: spec.endpoint,
    level: spec.level,
    region: spec.region,
    model,
    estimate,
  };
}

/** The first check `node` fails (with its estimate when it got that far), or FEASIBLE. */
function verdictOf(
  p: Prepared,
  node: NodeRecord,
): { verdict: Verdict; candidate: EstimatedCandidate | undefined; live: boolean } {
  const offer = findOffer(node.spec, p.request.model);
  if (offer === undefined) return { verdict: 'MODEL_NOT_SERVED', candidate: undefined, live: false };
  const state = nodeState(node, p.ctx.nowMs);
  const live = isLive(state);
  const group = p.groupChecks.find((check) => check.rejects(node.spec, p.scope));
  if (group !== undefined) return { verdict: group.verdict, candidate: undefined, live };
  const listed: Candidate = { stage: 'listed', node, offer, state };
  const before = p.listedChecks.find((check) => check.rejects(listed, p.scope));
  if (before !== undefined) return { verdict: before.verdict, candidate: undefined, live };
  const multiplier = p.ctx.priceMultiplier.at(node.spec, p.request.model, p.ctx.nowMs);
  const candidate = estimateCandidate(p, listed, multiplier);
  const after = p.estimatedChecks.find((check) => check.rejects(candidate, p.scope));
  return { verdict: after?.verdict ?? 'FEASIBLE', candidate, live };
}

/**
 * Every node with its verdict — the chosen first, then the rest in registry order — up to the
 * explain cap; sorted chosen first, then the closest misses. When no node was left out, the
 * counts, liveness and best TTFT it gathered are exact.
 */
function explainAll(
  p: Prepared,
  marks: ReadonlyMap<string, Verdict>,
  candidates: ModelCandidates | undefined,
): {
  entries: ExplainEntry[];
  omitted: number;
  counts: DecisionCounts;
  live: boolean;
  bestTtftMs: number | undefined;
} {
  const cap = Math.max(marks.size, p.ctx.maxExplainNodes ?? DEFAULT_MAX_EXPLAIN_NODES);
  const entries: ExplainEntry[] = [];
  const rejected: Partial<Record<RejectionVerdict, number>> = {};
  let serving = 0;
  let feasible = 0;
  let live = false;
  let bestTtftMs: number | undefined;
  const visit = (node: NodeRecord) => {
    const { verdict, candidate, live: isLive } = verdictOf(p, node);
    live ||= isLive;
    if (verdict !== 'MODEL_NOT_SERVED') serving += 1;
    if (verdict === 'FEASIBLE') feasible += 1;
    else if (verdict !== 'MODEL_NOT_SERVED')
      rejected[verdict as RejectionVerdict] = (rejected[verdict as RejectionVerdict] ?? 0) + 1;
    if (candidate !== undefined)
      bestTtftMs =
        bestTtftMs === undefined
          ? candidate.estimate.ttftMs
          : Math.min(bestTtftMs, candidate.estimate.ttftMs);
    entries.push({
      nodeId: node.spec.id,
      level: node.spec.level,
      region: node.spec.region,
      verdict: marks.get(node.spec.id) ?? verdict,
      estimate: candidate?.estimate,
    });
  };
  for (const nodeId of marks.keys()) {
    const node = candidates?.byId.get(nodeId)?.entry.record;
    if (node !== undefined) visit(node);
  }
  // Nodes that serve the model first, so the cap never spends itself on the others.
  for (const { entry } of candidates?.byId.values() ?? []) {
    if (entries.length >= cap) break;
    if (!marks.has(entry.id)) visit(entry.record);
  }
  for (const node of p.ctx.view.allNodes()) {
    if (entries.length >= cap) break;
    if (findOffer(node.spec, p.request.model) === undefined) visit(node);
  }
  entries.sort(
    (a, b) =>
      (VERDICT_RANK.get(a.verdict) ?? 0) - (VERDICT_RANK.get(b.verdict) ?? 0) ||
      (a.estimate?.cost ?? 0) - (b.estimate?.cost ?? 0) ||
      (a.estimate?.ttftMs ?? 0) - (b.estimate?.ttftMs ?? 0) ||
      compareIds(a.nodeId, b.nodeId),
  );
  return {
    entries,
    omitted: Math.max(0, p.ctx.view.nodeCount() - entries.length),
    counts: { serving, evaluated: serving, unevaluated: 0, feasible, rejected, truncated: false },
    live,
    bestTtftMs,
  };
}

function formatMs(ms: number): string {
  return `${ms.toFixed(1)} ms`;
}

function describeCounts(counts: DecisionCounts, bestTtftMs: number | undefined, placed: boolean): string {
  const parts: string[] = [];
  if (counts.feasible > 0) parts.push(`${counts.feasible} feasible`);
  for (const [verdict, words] of VERDICT_WORDS) {
    const count = counts.rejected[verdict];
    if (count === undefined) continue;
    const best =
      verdict === 'OVER_BUDGET' && bestTtftMs !== undefined ? ` (best ${formatMs(bestTtftMs)})` : '';
    parts.push(`${count} ${words}${best}`);
  }
  if (counts.unevaluated > 0) {
    const best =
      counts.rejected.OVER_BUDGET === undefined && bestTtftMs !== undefined
        ? ` (best ${formatMs(bestTtftMs)})`
        : '';
    parts.push(
      placed
        ? `${counts.unevaluated} not evaluated (dearer than the choice or too far for the budget)`
        : `${counts.unevaluated} too far to meet the budget${best} (not evaluated)`,
    );
  }
  return `${counts.serving} node${counts.serving === 1 ? ' serves' : 's serve'} it, ${parts.join(', ')}`;
}

/** The decision for a request an admission rule (or the quota, after deciding) turned away. */
export function refusedDecision(request: RouteRequest, refusal: Refusal): RouteDecision {
  return {
    kind: 'refused',
    refusal,
    summary: `${requestScope(request)}: refused by ${refusal.rule}: ${refusal.message}`,
  };
}

function requestScope(request: RouteRequest): string {
  const from = request.client.accessPoint || request.client.region;
  return `model ${request.model} within ${request.latencyBudgetMs} ms${from ? ` from ${from}` : ''}`;
}

function truncationNote(counts: DecisionCounts): string {
  return counts.truncated
    ? `; the search stopped at its work cap (${counts.evaluated} nodes evaluated), so this answer is judged from the nodes examined`
    : '';
}

function explainNote(omitted: number): string {
  return omitted > 0 ? `; explain lists the first nodes only (${omitted} left out by the explain cap)` : '';
}

function infeasibleSummary(
  request: RouteRequest,
  counts: DecisionCounts,
  bestTtftMs: number | undefined,
  omitted: number,
): string {
  if (counts.serving === 0) return `${requestScope(request)}: no registered node serves this model`;
  return `${requestScope(request)}: ${describeCounts(counts, bestTtftMs, false)}${truncationNote(counts)}${explainNote(omitted)}`;
}

function placedSummary(
  request: RouteRequest,
  placement: Placement,
  counts: DecisionCounts,
  degraded: boolean,
  omitted: number,
): string {
  const how = degraded ? 'DEGRADED placement on' : 'placed on';
  return `${requestScope(request)}: ${how} ${placement.nodeId} (${placement.level}, ${placement.region}), TTFT ${formatMs(
    placement.estimate.ttftMs,
  )}, cost ${placement.estimate.cost.toPrecision(3)}; ${describeCounts(counts, undefined, true)}${truncationNote(counts)}${explainNote(omitted)}`;
}
