// The candidate index: for each model, the nodes that offer it in bounding trees whose cells
// know the cheapest price of each token kind, the fastest prefill, the box (in unit-vector space)
// holding every node, and which (level, region) groups they hold — the unit at which time-of-use
// multipliers, level/region constraints and access overheads are the same for every node.
//
// Nothing here assumes few prices: a cell's cost bound for a request is its per-kind minimum
// prices weighted by the request's own token mix, so the search (pipeline.ts) can visit cells
// cheapest first and stop as soon as no cell can beat what it has, and can skip cells too far to
// meet the budget, whatever the price list.
//
// Cells also keep their cheapest price along a few mixes of input and output prices, and price
// splits cut by such a mix (see MIX_STEPS): where each node prices the two apart, a cell then
// bounds a request's own mix near its cheapest node, not at the corner of its cheapest input and
// cheapest output price, which no node charges.
//
// Each model has up to three trees over the same nodes, each built on first use from one list.
// The price tree splits by price (and a cell of one price by place and prefill in turn):
// when the budget reaches most of the country, the cheapest nodes are found in a few cells
// wherever they are. The mixed tree alternates place and price: when the budget reaches a small
// part of the country, a cost search stays there. The place tree splits by place only, for the
// nearest-first searches (best TTFT, degraded) and the policies that rank by distance or load.
// Price and mixed trees have a root per level: levels are priced (and discounted) apart, so a
// cell mixing them bounds its dear nodes by the cheap level's prices and its far-reached nodes
// by the near level's overhead; apart, a sparse cheap level is searched without the dense one.
// Price and mixed trees are keyed by the prices decisions pay now (list prices times the
// time-of-use factors in force), and repriced when the factors change (each cell's minima worked
// out again; the splits stay).
//
// Rate tiers: the same trees again over the fastest half, quarter, eighth and sixteenth of a
// model's nodes. A long prompt on a tight budget can only be served by nodes fast enough to
// prefill it within the budget; it searches the smallest tier that holds all of them. Every leaf
// lists its nodes fastest first, so a search stops reading a leaf at the first node too slow.
// Which tree or tier a search uses changes its work, never its answer.
//
// The tree lives in typed arrays (one slot per cell, one per node in leaf order): a search walks
// contiguous memory instead of chasing objects, which is most of its cost at national scale.
// Updates are cheap: a status report swaps the record in place; new nodes wait in a short list
// that every search scans, and removals leave tombstones, until the next lazy rebuild.

import { curveRate, flatPrefillRate, type PriceMultiplier, queueRates, roomBelow } from '../cost.js';
import { coordinatesOf, unitVector, type Vec3 } from '../latency.js';
import type { Level, ModelOffer, NodeRecord, NodeSpec } from '../model.js';
import type { LoadWatcher } from '../reservations.js';
import { compareIds } from './policy.js';

/** A node's offer of one model, as the index holds it. `record` is replaced on every update. */
export interface IndexedNode {
  readonly id: string;
  record: NodeRecord;
  /**
   * Replaced with the record; its prices and bound rate (see boundRate) never change in place (see
   * sameIndexing). Its room and how it prefills may: see F and swap.
   */
  offer: ModelOffer;
  readonly group: IndexGroup;
  /** Unit vector of the node's location; undefined when the node has no coordinates. */
  readonly position: Vec3 | undefined;
  removed: boolean;
  /**
   * Dense per model, from 0, renumbered at each rebuild: where the node's load floor and marks are
   * kept (ModelCandidates.loadFloors and marks) and what FlatTree.ordinals holds for its slots.
   */
  ordinal: number;
}

/**
 * What a search may know of a node from its slot, by ordinal, without reading the node (a walk
 * queues far more nodes than it visits, and each node first read is a cache miss).
 */
export interface NodeMarks {
  /** 1 for a node removed since the trees were built. */
  readonly removed: Uint8Array;
  /** The stamp of the last decision that marked the node tried (see pipeline.ts). */
  readonly triedBy: Float64Array;
}

/**
 * What a decision may read of the loads nodes are known to carry at least, by ordinal: a node
 * whose queue alone puts it past the budget, or that has no free slot, is passed over from its
 * slot, before its record is read. Under load the cheapest nodes fill first, so a cost search
 * meets the full ones first; without this, each is read and estimated only to be rejected.
 *
 * A node's queue on any request is at least `queuePerPrefillMs[n] ×` its prefill `+
 * queuePerOutputToken[n] ×` its output tokens (0 and 0: nothing known; +Infinity: no free
 * slot). Worked out from the load a decision last saw on the node, which stays a floor while
 * load only rises: one fewer each time one of its reservations stops counting (released,
 * expired, or covered by a report another view has seen: the reservation book tells; see
 * LoadWatcher), forgotten when a status report replaces its record.
 */
export interface LoadFloors {
  readonly queuePerPrefillMs: Float64Array;
  readonly queuePerOutputToken: Float64Array;
}

/**
 * The queue node `n` has at least, for a request of `prefillMs` (a lower bound of it) and
 * `outputTokens` (see LoadFloors): 0 when nothing is known, +Infinity when it has no free slot.
 */
export function queueFloorMs(floors: LoadFloors, n: number, prefillMs: number, outputTokens: number): number {
  const perPrefill = floors.queuePerPrefillMs[n] as number;
  if (perPrefill === 0 || perPrefill === Number.POSITIVE_INFINITY) return perPrefill;
  return perPrefill * prefillMs + (floors.queuePerOutputToken[n] as number) * outputTokens;
}

/** A reservation book a routing index can ask to be told when loads fall (see LoadWatcher). */
export interface LoadWatched {
  watchLoad?(watcher: LoadWatcher): void;
}

/**
 * Most nodes per leaf, by tree kind (price, mixed, place); a leaf lists its nodes fastest prefill
 * first (see build). Reading a leaf's node slots costs less than a level of cells: each cell
 * popped is a bound for both children, a heap operation and a cache miss, while a leaf's slots
 * are contiguous and passed over at the first too slow. A tight budget walks the mixed tree to
 * the few nodes near the client that are fast enough, through cells that tell little apart:
 * there leaves of 32 measured about 25 % faster at the p99 than leaves of 8 (BENCHMARKS.md,
 * session 12). A loose budget finds its answer in the price tree's first leaves, where larger
 * leaves only add slots to read: 16 there.
 */
export const DEFAULT_LEAF_SIZES: LeafSizes = [16, 32, 16];

/** Most nodes per leaf, indexed by TreeKind (PRICE_TREE, MIXED_TREE, PLACE_TREE). */
export type LeafSizes = readonly [number, number, number];

export const LEVEL_BIT: Readonly<Record<Level, number>> = { CENTER: 1, PROVINCE: 2, EDGE: 4, TERMINAL: 8 };
/** Absorbs rounding in acos so that a bound from unit vectors never exceeds a true distance. */
export const ANGLE_SLACK_RAD = 1e-7;
/** A cell lists its distinct groups only up to this many; a more mixed cell bounds by the model's. */
const MAX_CELL_GROUPS = 8;

/** Angle between two unit vectors, in radians. */
export function angleBetween(a: Vec3, b: Vec3): number {
  const dot = a.x * b.x + a.y * b.y + a.z * b.z;
  return Math.acos(dot >= 1 ? 1 : dot <= -1 ? -1 : dot);
}

/** Nodes of one model that share a level and a region: one price multiplier, one access overhead. */
export interface IndexGroup {
  /** Dense per model, from 0. */
  readonly id: number;
  readonly level: Level;
  /** LEVEL_BIT of the level. */
  readonly levelBit: number;
  readonly region: string;
  /** The region's dense index in this model (see ModelCandidates.regionIndexOf). */
  readonly regionIndex: number;
  /** Live nodes in the group. */
  size: number;
}

/**
 * What one decision derives per group (multiplier, RTT bases), by group id, valid where `stamp`
 * is that decision's. Decisions run one at a time to completion, so one slot per group suffices
 * and a decision allocates nothing per group.
 */
export interface GroupScratch {
  /**
   * Each group's LEVEL_BIT and region index (IndexGroup.levelBit and regionIndex): what a search
   * reads of a group for every node slot, kept here so that it reads one array, not an object per
   * group. Set when the group is made; these two are not per decision.
   */
  levelBit: Uint8Array;
  regionIndex: Int32Array;
  stamp: Float64Array;
  /** Where `multiplier` is this decision's (it is worked out only when asked for). */
  multiplierStamp: Float64Array;
  multiplier: Float64Array;
  coordinateBaseMs: Float64Array;
  regionDefaultMs: Float64Array;
}

/** Scratch for `size` groups, keeping the groups' levels and regions `previous` holds. */
function scratchFor(size: number, previous?: GroupScratch): GroupScratch {
  const levelBit = new Uint8Array(size);
  const regionIndex = new Int32Array(size);
  if (previous !== undefined) {
    levelBit.set(previous.levelBit);
    regionIndex.set(previous.regionIndex);
  }
  return {
    levelBit,
    regionIndex,
    stamp: new Float64Array(size),
    multiplierStamp: new Float64Array(size),
    multiplier: new Float64Array(size),
    coordinateBaseMs: new Float64Array(size),
    regionDefaultMs: new Float64Array(size),
  };
}

/**
 * Field offsets of a node's facts in `ModelCandidates.facts` (FACT_STRIDE numbers by ordinal, 64
 * bytes together): what a search needs of a node it ranks to work out its prefill, RTT and cost,
 * and whether it has room, exactly as from its offer and place, without reading the node's objects
 * (each a cache miss: a tight decision read about ten for its three winners). Prices and place
 * never change in place (see sameIndexing); the rate (an engine curve may replace a flat rate of the
 * same bound) and the room may, with the record: swap writes them all again.
 */
export const F = {
  /** flatPrefillRate of the offer: NaN when its prefill comes from an engine curve (read the offer). */
  rate: 0,
  input: 1,
  output: 2,
  cached: 3,
  /** The unit vector of the node's place; NaN in x for a node with no coordinates. */
  x: 4,
  y: 5,
  z: 6,
  /** roomBelow of the offer: below it a load queues nothing and leaves room (else read the offer). */
  free: 7,
} as const;
export const FACT_STRIDE = 8;

/** Writes the facts (see F) of `offer` at `position` into `facts` at ordinal `n`. */
function writeFacts(facts: Float64Array, n: number, offer: ModelOffer, position: Vec3 | undefined): void {
  const at = n * FACT_STRIDE;
  facts[at + F.rate] = flatPrefillRate(offer);
  facts[at + F.input] = offer.price.inputPerMtok;
  facts[at + F.output] = offer.price.outputPerMtok;
  facts[at + F.cached] = offer.price.cachedInputPerMtok;
  facts[at + F.x] = position?.x ?? Number.NaN;
  facts[at + F.y] = position?.y ?? Number.NaN;
  facts[at + F.z] = position?.z ?? Number.NaN;
  facts[at + F.free] = roomBelow(offer);
}

/** Spatial kind of a cell: every node has coordinates (a box bounds them), or none has. */
const LOCATED = 0;
const UNLOCATED = 1;

/**
 * Field offsets of a cell in `FlatTree.cells` (CELL_STRIDE numbers a cell, in one run, so that
 * a cell's bounds share one or two cache lines: a search touching 100 cells pays for 100 cells,
 * not for 1,600 scattered reads).
 */
export const C = {
  /**
   * The box (in unit-vector space) of the cell's nodes: least and greatest x, y and z. NaN in
   * loX for nodes with no coordinates (see unlocatedCell). Tighter than a cap round the nodes'
   * centre: a kd cell is a box, and a reach-bound search pops a fifth fewer cells by it.
   */
  loX: 0,
  loY: 1,
  loZ: 2,
  hiX: 3,
  hiY: 4,
  hiZ: 5,
  minInput: 6,
  minOutput: 7,
  minCached: 8,
  /** The least prices along the kept mixes between input alone and output alone (see MIX_STEPS). */
  mix1: 9,
  mix2: 10,
  maxPrefill: 11,
  /** regionBitFor of every region present (its IndexGroup.regionIndex), OR-ed. */
  regionBits: 12,
  /**
   * The cell's distinct group ids are `cellGroups[start .. start + count]`, packed as
   * start × GROUPS_PACK + count + 1 (count -1: too many to list; see cellGroupStart and
   * cellGroupCount).
   */
  groups: 13,
  /**
   * An inner cell's first child (an index): the second is the cell after it, so that a cell's
   * children are read together, from one run of memory (see leftChild). A leaf's nodes are the
   * slots from -1 - child (see cellItemStart).
   */
  child: 14,
  /**
   * How many node slots the cell holds (its subtree's) times LEVELS_PACK, plus the LEVEL_BIT bits
   * of the levels present (see cellSize and cellLevelMask): packed, so that a cell is 16 numbers.
   */
  sizeLevels: 15,
} as const;
export const CELL_STRIDE = 16;
/** Where a cell keeps its least price along kept mix k (see MIX_STEPS; the ends are its least prices). */
const MIX_FIELDS = [C.minInput, C.mix1, C.mix2, C.minOutput] as const;
/** The cell fields priceCells works out from the slots, in the order of its `least`. */
const PRICED_FIELDS = [C.minInput, C.minOutput, C.minCached, C.mix1, C.mix2] as const;

/** The first child of cell `c` (an index, not an offset), or -1 for a leaf; the second is the next cell. */
export function leftChild(cells: Float64Array, c: number): number {
  const child = cells[c * CELL_STRIDE + C.child] as number;
  return child < 0 ? -1 : child;
}

/** The first node slot of the cell at offset `at` (its subtree's first, for an inner cell). */
export function cellItemStart(cells: Float64Array, at: number): number {
  let child = cells[at + C.child] as number;
  while (child >= 0) child = cells[child * CELL_STRIDE + C.child] as number;
  return -1 - child;
}

/** How many node slots the cell at offset `at` holds (its subtree's, for an inner cell). */
export function cellSize(cells: Float64Array, at: number): number {
  return Math.floor((cells[at + C.sizeLevels] as number) / LEVELS_PACK);
}

/** The LEVEL_BIT bits of the levels the cell at offset `at` holds. */
export function cellLevelMask(cells: Float64Array, at: number): number {
  return (cells[at + C.sizeLevels] as number) & (LEVELS_PACK - 1);
}
/** A power of two, so that the level bits are the packed number's low bits. */
const LEVELS_PACK = 16;

/** Whether the cell at offset `at` holds nodes with no coordinates (its box is NaN). */
export function unlocatedCell(cells: Float64Array, at: number): boolean {
  return Number.isNaN(cells[at + C.loX] as number);
}
/** The box a build is working out (see C.loX). */
const BOX = new Float64Array(6);
const GROUPS_PACK = 16;
// A listed count (up to MAX_CELL_GROUPS) plus one must stay below GROUPS_PACK to unpack.
if (MAX_CELL_GROUPS + 1 >= GROUPS_PACK) throw new Error('MAX_CELL_GROUPS must be below GROUPS_PACK - 1');

/** The first index in `cellGroups` of cell `at`'s groups, and how many (-1: too many to list). */
export function cellGroupStart(cells: Float64Array, at: number): number {
  return Math.floor((cells[at + C.groups] as number) / GROUPS_PACK);
}
export function cellGroupCount(cells: Float64Array, at: number): number {
  return ((cells[at + C.groups] as number) % GROUPS_PACK) - 1;
}

/**
 * The bit a region sets in a cell's regionBits: one of its own for the model's first 31 regions,
 * one shared by all the rest (a cell with that bit may hold any of them). 0 for a region the
 * model has no node in.
 */
export function regionBitFor(index: number): number {
  return index < 0 ? 0 : index < 31 ? 1 << index : 1 << 31;
}

/**
 * Field offsets of a node's place in `FlatTree.places`: its unit vector (NaN when unlocated) and
 * prefill rate, in 32-bit floats (the rate rounded up, so that a prefill bound from it stays one;
 * the vector within PLACE_SLACK_RAD of the node's). A search bounding a leaf's nodes by their
 * reach reads their places first and a node's slot only when its place lets it fit: most nodes of
 * a leaf a tight budget reaches are too far, and four places share a cache line.
 */
export const P = { x: 0, y: 1, z: 2, rate: 3 } as const;
export const PLACE_STRIDE = 4;
/** How far a place's 32-bit unit vector may lie from the node's own (2^-24 a component, and some). */
export const PLACE_SLACK_RAD = 2e-7;

/**
 * Field offsets of a node slot in `FlatTree.slots`: group id and per-million token prices (times
 * the tree's factors in a priced tree): with its place, what a search reads of a node to bound it
 * before it touches the node's record.
 */
export const S = { group: 0, input: 1, output: 2, cached: 3 } as const;
export const SLOT_STRIDE = 4;

/** The least 32-bit float at least `value` (a positive finite number, or +Infinity). */
function float32AtLeast(value: number): number {
  const rounded = Math.fround(value);
  if (rounded >= value) return rounded;
  FLOAT32[0] = rounded;
  UINT32[0] = (UINT32[0] as number) + 1;
  return FLOAT32[0] as number;
}
const FLOAT32 = new Float32Array(1);
const UINT32 = new Uint32Array(FLOAT32.buffer);

/**
 * Mixes. Where each node sets its input and output prices apart (distinct prices), a cell's
 * cheapest input and cheapest output price belong to different nodes, and the cost bound made of
 * them lies well below every node's cost. So a cell also keeps its least price along MIX_STEPS + 1
 * mixes of the two: `cos θk × input / scaleInput + sin θk × output / scaleOutput` for θk = k ×
 * 90° / MIX_STEPS (k = 0: input alone; MIX_STEPS: output alone; the scales are the tree's mean
 * prices). The two ends are the cell's least input and output prices; the middle two are cell
 * fields of their own (C.mix1, C.mix2), so a cell bound reads no more memory. A request's
 * uncached prompt and answer are a mix too, between two kept ones. The least price of a cell
 * along a mix is concave in the mix (a least of linear functions), so the line between the two
 * kept least prices bounds the request's mix from below: never above the cell's cheapest node,
 * and near it (Search.bound). Three steps did as well as fifteen (BENCHMARKS.md, session 16).
 */
export const MIX_STEPS = 3;
// Cells keep the middle mixes in two fields (MIX_FIELDS).
if (MIX_STEPS !== 3) throw new Error('a cell keeps two middle mixes: MIX_STEPS must be 3');
/** cos θk and sin θk of the kept mixes (exactly 1 and 0 at the ends). */
const MIX_COS = Float64Array.from({ length: MIX_STEPS + 1 }, (_, k) =>
  k === 0 ? 1 : k === MIX_STEPS ? 0 : Math.cos((k * Math.PI) / 2 / MIX_STEPS),
);
const MIX_SIN = Float64Array.from({ length: MIX_STEPS + 1 }, (_, k) =>
  k === 0 ? 0 : k === MIX_STEPS ? 1 : Math.sin((k * Math.PI) / 2 / MIX_STEPS),
);

/**
 * A request's uncached prompt and answer as a mix in one tree (see MIX_STEPS): a weight on kept
 * mix `step` and one on kept mix `step + 1` (step -1: the request bounds nothing by mixes), with
 * the cell fields that keep them (an end mix is kept as the least price itself: its weight is
 * over the scale).
 */
export interface MixWeights {
  step: number;
  lowField: number;
  lowWeight: number;
  highField: number;
  highWeight: number;
}

/** Mix weights that bound nothing (to be written by mixWeights). */
export function noMix(): MixWeights {
  return { step: -1, lowField: 0, lowWeight: 0, highField: 0, highWeight: 0 };
}

/** Writes into `out` the mix weights of `uncachedTokens` and `outputTokens` in `tree`. */
export function mixWeights(
  tree: FlatTree,
  uncachedTokens: number,
  outputTokens: number,
  out: MixWeights,
): MixWeights {
  const x = uncachedTokens * tree.mixScaleInput;
  const y = outputTokens * tree.mixScaleOutput;
  out.step = -1;
  if (!tree.mixesTighten || !(x >= 0 && y >= 0 && x + y > 0 && x + y < Number.POSITIVE_INFINITY)) return out;
  const step = Math.min(MIX_STEPS - 1, Math.floor(Math.atan2(y, x) / (Math.PI / 2 / MIX_STEPS)));
  const cosLow = MIX_COS[step] as number;
  const sinLow = MIX_SIN[step] as number;
  const cosHigh = MIX_COS[step + 1] as number;
  const sinHigh = MIX_SIN[step + 1] as number;
  // (x, y) = low × (cosLow, sinLow) + high × (cosHigh, sinHigh): both ≥ 0 between the two (a
  // hair below from rounding is taken as 0).
  const det = cosLow * sinHigh - sinLow * cosHigh;
  const low = Math.max(0, (x * sinHigh - y * cosHigh) / det);
  const high = Math.max(0, (y * cosLow - x * sinLow) / det);
  out.step = step;
  out.lowField = MIX_FIELDS[step] as number;
  out.lowWeight = step === 0 ? low / tree.mixScaleInput : low;
  out.highField = MIX_FIELDS[step + 1] as number;
  out.highWeight = step + 1 === MIX_STEPS ? high / tree.mixScaleOutput : high;
  return out;
}

/**
 * A lower bound (but for rounding: take a hair off) of what any node of cell `c` charges per
 * million for the uncached prompt and answer `mix` weighs, at the prices the cells bound: the line
 * between the two kept mixes around the request's (see MIX_STEPS). NaN when `mix` bounds nothing.
 */
export function cellMixBound(tree: FlatTree, c: number, mix: MixWeights): number {
  if (mix.step < 0) return Number.NaN;
  const at = c * CELL_STRIDE;
  return (
    mix.lowWeight * (tree.cells[at + mix.lowField] as number) +
    mix.highWeight * (tree.cells[at + mix.highField] as number)
  );
}

/**
 * How a tree splits its cells: by price only, by place and price in turn, by place only (each
 * falls back to the other kind of split where its own finds no spread).
 */
export const PRICE_TREE = 0;
export const MIXED_TREE = 1;
export const PLACE_TREE = 2;
export type TreeKind = typeof PRICE_TREE | typeof MIXED_TREE | typeof PLACE_TREE;

/**
 * The multipliers a decision prices by, and when. A price or mixed tree is keyed by the prices a
 * decision pays — list prices times the multipliers in force — when the multiplier says how long
 * its factors hold (see PriceMultiplier.stableUntil): a night discount in one province then
 * splits and bounds like any other price, instead of loosening every cell's bound to the
 * cheapest factor anywhere. The tree is repriced when the window ends or the multiplier changes.
 */
export interface TreePricing {
  readonly multiplier: PriceMultiplier;
  readonly nowMs: number;
}

/**
 * Each group's price factor under one multiplier, and their floors, over the window the multiplier
 * says they hold (see ModelCandidates.groupFactors): what priced trees are built from, and what a
 * decision reads a group's factor from rather than match a time-of-use policy's rules again.
 */
export interface GroupFactors {
  readonly multiplier: PriceMultiplier;
  /** How many groups there were: groups are never dropped, so a new one makes these stale. */
  readonly groups: number;
  readonly fromMs: number;
  readonly untilMs: number;
  /** By group id. */
  readonly factors: Float64Array;
  /** By LEVEL_BIT mask (0..15): the lowest factor of any group at those levels (+∞ for none). */
  readonly floors: Float64Array;
}

/** Windows shorter than this are not worth a rebuild: such trees keep list prices. */
const MIN_PRICED_WINDOW_MS = 60_000;

/** Built nodes in ascending RTT from one client region (see ModelCandidates.rttOrder). */
export interface RttOrder {
  readonly entries: readonly IndexedNode[];
  readonly rtts: Float64Array;
}

/** Client regions whose RTT orders a model keeps (regions come from requests: bounded). */
const MAX_RTT_ORDERS = 64;

/** Kinds of request a model remembers the price tree's outcome for (a power of two). */
export const REQUEST_KINDS = 1024;

/** Slots in which a model remembers reach estimates, by the low bits of a request's kind (a power of two). */
export const REACH_KINDS = 4096;

/**
 * A reach estimate's answers by kind of request (see ModelCandidates.reachMemo), each in the slot
 * of the kind's low bits: the kind, its answer (1 few nodes within reach, 2 most) and how many
 * more requests of the kind take it (0: none, whatever the slot held).
 */
export interface ReachMemo {
  /** By slot (a kind's low bits): the whole kind whose answer the slot holds. */
  readonly kinds: Int32Array;
  readonly answers: Uint8Array;
  readonly uses: Uint8Array;
}

/** Steps of a model's rate distribution kept for fastShare. */
const RATE_QUANTILES = 64;

/** Rate tiers per model: all nodes, then the fastest half, quarter, eighth and sixteenth. */
const RATE_TIERS = 5;
const TREE_KINDS = 3;
/** A tier smaller than this is not split out (its tree would save little over the tier above). */
const MIN_TIER_NODES = 256;

/** Which prices a built tree's cells bound, and over which times that holds. */
interface TreeValidity {
  /** undefined: list prices (valid at any time, for any multiplier). */
  readonly multiplier: PriceMultiplier | undefined;
  readonly fromMs: number;
  readonly untilMs: number;
}

/** A built tree: each cell before its children, a cell's two children side by side, nodes in leaf order. */
export interface FlatTree {
  /**
   * Whether the cells' minimum prices already include the multipliers (then a cell's cost bound
   * is its minimum prices alone); else they are list prices, to be multiplied by a floor.
   */
  readonly priced: boolean;
  readonly roots: Int32Array;
  readonly cells: Float64Array;
  readonly cellGroups: Int32Array;
  readonly slots: Float64Array;
  /** Each node slot's place (see P), in slot order. */
  readonly places: Float32Array;
  /** What input and output prices are divided by in a mix (each the nodes' mean, or 1). */
  readonly mixScaleInput: number;
  readonly mixScaleOutput: number;
  /**
   * Whether some cell's mixes bound tighter than its cheapest price of each kind does (else, as
   * where every node prices input and output alike, a search need not read them).
   */
  readonly mixesTighten: boolean;
  readonly items: readonly IndexedNode[];
  /** By node slot: the node's IndexedNode.ordinal (valid until the next rebuild drops the tree). */
  readonly ordinals: Int32Array;
}

/**
 * Every node offering one model, in trees of three kinds and up to five rate tiers (see the
 * header): each cell knows which (level, region) groups it holds, so level/region constraints,
 * multipliers and access overheads bound a whole cell at once.
 */
export class ModelCandidates {
  readonly byId = new Map<string, { entry: IndexedNode; group: IndexGroup }>();
  private readonly groupsByKey = new Map<string, IndexGroup>();
  /** Dense region indices, in the order regions first appeared (never reused: groups stay). */
  private readonly regionIndices = new Map<string, number>();
  private groupList: IndexGroup[] = [];
  /** The nodes the trees hold (some removed since) and their keys, or undefined before the first build. */
  private source: TreeSource | undefined;
  /** source.nodes by id, and the source it was sorted from. */
  private entriesById: readonly IndexedNode[] = [];
  private byIdSource: TreeSource | undefined;
  /**
   * By rate tier t (see rateFloors): the nodes of `source` whose prefill rate is at least
   * `rateFloors[t]` (tier 0: all of them), split out on first use.
   */
  private readonly tiers: (TreeSource | undefined)[] = new Array(RATE_TIERS).fill(undefined);
  /** By tier: the slowest prefill rate among the fastest 1/2^t of the nodes (0 for tier 0). */
  private rateFloors = new Float64Array(RATE_TIERS);
  /** The built nodes' prefill rates, fastest first, sampled at RATE_QUANTILES even steps (see fastShare). */
  private rateQuantiles = new Float64Array(0);
  /** By TREE_KINDS × tier + kind: built on first use from that tier, dropped on a rebuild. */
  private readonly trees: (FlatTree | undefined)[] = new Array(RATE_TIERS * TREE_KINDS).fill(undefined);
  private readonly validity: (TreeValidity | undefined)[] = new Array(RATE_TIERS * TREE_KINDS).fill(
    undefined,
  );
  /** See rttOrder: by latency model, then key; for the build `rttOrderSource`. */
  private rttOrders = new WeakMap<object, Map<string, RttOrder>>();
  private rttOrderSource: TreeSource | undefined;
  /** Nodes added since the last build: every search scans them one by one. */
  private recentEntries: IndexedNode[] = [];
  private tombstones = 0;
  private buildCount = 0;
  /** The next IndexedNode.ordinal to give out (rebuilds renumber from 0). */
  private nextOrdinal = 0;
  /** See LoadFloors: by ordinal, grown with nextOrdinal, cleared when ordinals change. */
  private floorArrays: LoadFloors = {
    queuePerPrefillMs: new Float64Array(64),
    queuePerOutputToken: new Float64Array(64),
  };
  /** By ordinal: the load the floors were worked out from (0: none kept, or below its slots). */
  private floorLoads = new Float64Array(64);
  /** Nodes whose floors are not 0 (while none are, a search need not read them). */
  private floorsKept = 0;
  /** See NodeMarks: by ordinal, grown with nextOrdinal, cleared when ordinals change. */
  private nodeMarks: NodeMarks = { removed: new Uint8Array(64), triedBy: new Float64Array(64) };
  /** See F: by ordinal, grown with nextOrdinal, rewritten when ordinals change. */
  private nodeFacts = new Float64Array(64 * FACT_STRIDE);
  /** The last groupFactors kept (see there). */
  private keptFactors: GroupFactors | undefined;
  /** A node recently found live, checked first by hasLiveNode, and where its scan goes on. */
  private liveHint: IndexedNode | undefined;
  private liveCursor = -1;
  /** Per-decision values by group id (see GroupScratch); replaced, stamps cleared, as groups grow. */
  scratch: GroupScratch = scratchFor(8);
  /**
   * By kind of request (Search.requestKind, one of REQUEST_KINDS): how many more requests of that
   * kind a cost search sends straight to the mixed tree, the price tree having given up on one of
   * them lately. Work, never answers, depends on it.
   */
  readonly priceTreeSkips = new Uint8Array(REQUEST_KINDS);
  /** What reach estimates on `reachMemo`'s place tree remember (see reachMemo). */
  private reachMemoFor: { tree: FlatTree; share: number; memo: ReachMemo } | undefined;

  /**
   * `floors`: whose reservation book the load floors hold for (see LoadFloorKeeper); without it,
   * decisions get no floors.
   */
  constructor(
    readonly model: string,
    private readonly minTierNodes = MIN_TIER_NODES,
    private readonly leafSizes: LeafSizes = DEFAULT_LEAF_SIZES,
    private readonly floors?: LoadFloorKeeper,
  ) {}

  /**
   * By kind of request (Search.requestKind): what the reach estimate on place tree `tree` with
   * share `share` last answered, and for how many more requests of that kind it stands. Work,
   * never answers, depends on it; forgotten when the tree or the share changes.
   */
  reachMemo(tree: FlatTree, share: number): ReachMemo {
    const held = this.reachMemoFor;
    if (held !== undefined && held.tree === tree && held.share === share) return held.memo;
    const memo = {
      kinds: new Int32Array(REACH_KINDS),
      answers: new Uint8Array(REACH_KINDS),
      uses: new Uint8Array(REACH_KINDS),
    };
    this.reachMemoFor = { tree, share, memo };
    return memo;
  }

  get size(): number {
    return this.byId.size;
  }

  /** The region's index (IndexGroup.regionIndex), or -1 when no node of the model ever was in it. */
  regionIndexOf(region: string): number {
    return this.regionIndices.get(region) ?? -1;
  }

  /** Every group that ever held a node of this model (some may be empty now), by id. */
  groups(): readonly IndexGroup[] {
    return this.groupList;
  }

  add(record: NodeRecord, offer: ModelOffer): void {
    const { level, region } = record.spec;
    const key = `${level}/${region}`;
    let group = this.groupsByKey.get(key);
    if (group === undefined) {
      let regionIndex = this.regionIndices.get(region);
      if (regionIndex === undefined) {
        regionIndex = this.regionIndices.size;
        this.regionIndices.set(region, regionIndex);
      }
      group = { id: this.groupList.length, level, levelBit: LEVEL_BIT[level], region, regionIndex, size: 0 };
      this.groupsByKey.set(key, group);
      this.groupList.push(group);
      if (this.scratch.stamp.length < this.groupList.length)
        this.scratch = scratchFor(this.groupList.length * 2, this.scratch);
      this.scratch.levelBit[group.id] = group.levelBit;
      this.scratch.regionIndex[group.id] = group.regionIndex;
    }
    const location = coordinatesOf(record.spec.location);
    const entry: IndexedNode = {
      id: record.spec.id,
      record,
      offer,
      group,
      position: location === undefined ? undefined : unitVector(location),
      removed: false,
      ordinal: this.nextOrdinal,
    };
    this.nextOrdinal += 1;
    if (this.nextOrdinal > this.floorArrays.queuePerPrefillMs.length) {
      const grown = <T extends Float64Array | Uint8Array>(from: T): T => {
        const to = new (from.constructor as new (length: number) => T)(from.length * 2);
        to.set(from);
        return to;
      };
      this.floorArrays = {
        queuePerPrefillMs: grown(this.floorArrays.queuePerPrefillMs),
        queuePerOutputToken: grown(this.floorArrays.queuePerOutputToken),
      };
      this.floorLoads = grown(this.floorLoads);
      this.nodeMarks = { removed: grown(this.nodeMarks.removed), triedBy: grown(this.nodeMarks.triedBy) };
      this.nodeFacts = grown(this.nodeFacts);
    }
    writeFacts(this.nodeFacts, entry.ordinal, offer, entry.position);
    group.size += 1;
    this.byId.set(entry.id, { entry, group });
    this.recentEntries.push(entry);
  }

  /**
   * The load floors decisions that count pending reservations with `reservations` may read and
   * keep (see LoadFloors), or undefined when that book cannot say when loads fall.
   */
  loadFloors(reservations: LoadWatched): LoadFloors | undefined {
    if (this.floors === undefined || !this.floors.holdsFor(reservations)) return undefined;
    return this.floorArrays;
  }

  /** See NodeMarks (the arrays are replaced as nodes are added: read them afresh per decision). */
  get marks(): NodeMarks {
    return this.nodeMarks;
  }

  /** See F (the array is replaced as nodes are added: read it afresh per decision). */
  get facts(): Float64Array {
    return this.nodeFacts;
  }

  /**
   * Puts `record` and its `offer` in place of the entry's (a report or re-registration that moves
   * nothing the index sorts by: see sameIndexing), and its facts with them.
   */
  swap(entry: IndexedNode, record: NodeRecord, offer: ModelOffer): void {
    entry.record = record;
    entry.offer = offer;
    writeFacts(this.nodeFacts, entry.ordinal, offer, entry.position);
  }

  /** Whether any node was removed since the trees were built (else NodeMarks.removed is all 0). */
  get anyRemoved(): boolean {
    return this.tombstones > 0;
  }

  /** Whether any node's floor says more than nothing (else a search need not read them). */
  get anyLoadFloor(): boolean {
    return this.floorsKept > 0;
  }

  /**
   * Keeps what `load` requests on `entry`'s offer mean for every later request's queue (see
   * LoadFloors and queueMs): a floor until the load may fall.
   */
  noteLoad(entry: IndexedNode, load: number): void {
    const n = entry.ordinal;
    const offer = entry.offer;
    // Below its slots a node's load says nothing of its queue: nothing to keep (on an idle
    // registry, nothing to write either).
    // (Below the facts' F.free a load is below maxConcurrency too: the offer is not read.)
    if (
      this.floorLoads[n] === 0 &&
      (load < (this.nodeFacts[n * FACT_STRIDE + F.free] as number) || load < offer.maxConcurrency)
    )
      return;
    let perPrefill = Number.POSITIVE_INFINITY;
    let perOutput = Number.POSITIVE_INFINITY;
    if (load < offer.maxConcurrency + offer.maxQueue) {
      const rates = queueRates(offer, load);
      // NaN or negative from a malformed offer: nothing known.
      const known = rates.perPrefillMs >= 0 && rates.perOutputToken >= 0;
      perPrefill = known ? rates.perPrefillMs : 0;
      perOutput = known ? rates.perOutputToken : 0;
    }
    const kept = this.floorArrays.queuePerPrefillMs;
    this.floorsKept += (perPrefill > 0 ? 1 : 0) - ((kept[n] as number) > 0 ? 1 : 0);
    kept[n] = perPrefill;
    this.floorArrays.queuePerOutputToken[n] = perOutput;
    this.floorLoads[n] = load >= offer.maxConcurrency ? load : 0;
  }

  /** Forgets the node's load floor: its load may have fallen by any amount. */
  forgetLoad(entry: IndexedNode): void {
    this.noteLoad(entry, 0);
  }

  /** One request fewer on the node than its floor says, at least (one reservation stopped counting). */
  lowerLoad(nodeId: string): void {
    const found = this.byId.get(nodeId);
    if (found === undefined) return;
    const load = this.floorLoads[found.entry.ordinal] as number;
    if (load > 0) this.noteLoad(found.entry, load - 1);
  }

  /** Forgets every load floor. */
  forgetLoads(): void {
    this.floorArrays.queuePerPrefillMs.fill(0);
    this.floorArrays.queuePerOutputToken.fill(0);
    this.floorLoads.fill(0);
    this.floorsKept = 0;
  }

  remove(nodeId: string): void {
    const found = this.byId.get(nodeId);
    if (found === undefined) return;
    // Its floor goes with it: one kept for no live node would keep every walk reading floors.
    this.forgetLoad(found.entry);
    found.entry.removed = true;
    this.nodeMarks.removed[found.entry.ordinal] = 1;
    found.group.size -= 1;
    this.byId.delete(nodeId);
    this.tombstones += 1;
  }

  /**
   * The built tree of that kind; all are rebuilt first if updates have piled up. A price or mixed
   * tree is keyed by `pricing`'s prices when it says how long they hold (see TreePricing), and
   * repriced when a decision prices by another multiplier or outside the tree's window.
   *
   * With `minPrefillRate`, the tree may hold only the nodes at least that fast (and some slower):
   * a long prompt on a tight budget then searches the fast nodes alone, not every node near the
   * client. The nodes it leaves out are all slower than `minPrefillRate`.
   */
  tree(kind: TreeKind, pricing?: TreePricing, minPrefillRate = 0): FlatTree {
    const built = this.source?.nodes.length ?? 0;
    if (
      this.source === undefined ||
      this.recentEntries.length > 32 + Math.sqrt(built) ||
      this.tombstones > Math.max(32, built / 4)
    ) {
      this.rebuild();
    }
    let tier = 0;
    for (let t = 1; t < RATE_TIERS; t += 1) if ((this.rateFloors[t] as number) <= minPrefillRate) tier = t;
    const slot = tier * TREE_KINDS + kind;
    let tree = this.trees[slot];
    const held = this.validity[slot];
    // Priced by this multiplier over a window that holds now: the tree as it is (without asking
    // the multiplier how long its factors hold, as every decision would).
    if (
      tree !== undefined &&
      held?.multiplier !== undefined &&
      held.multiplier === pricing?.multiplier &&
      pricing.nowMs >= held.fromMs &&
      pricing.nowMs < held.untilMs
    )
      return tree;
    const want = kind === PLACE_TREE ? undefined : pricedWindow(pricing);
    const validity = want ?? { multiplier: undefined, fromMs: 0, untilMs: Number.POSITIVE_INFINITY };
    if (tree === undefined) {
      tree = buildTree(this.tierSource(tier), kind, this.factors(validity), this.leafSizes[kind]);
      this.buildCount += 1;
    } else if (held !== undefined) {
      // (A priced tree whose window holds was taken above.)
      if (held.multiplier === undefined && want === undefined) return tree;
      // Another window or another multiplier: the same cells, their minimum prices worked out
      // again (one pass over the nodes), instead of a new tree. The splits follow the old prices
      // — looser, never wrong.
      tree = reprice(tree, this.factors(validity));
    }
    this.trees[slot] = tree;
    this.validity[slot] = validity;
    return tree;
  }

  /** The nodes of rate tier `tier`, split out of the source on first use. */
  private tierSource(tier: number): TreeSource {
    const source = this.source as TreeSource;
    if (tier === 0) return source;
    let found = this.tiers[tier];
    if (found === undefined) {
      const floor = this.rateFloors[tier] as number;
      found = treeSource(source.nodes.filter((entry) => boundRate(entry.offer) >= floor));
      this.tiers[tier] = found;
    }
    return found;
  }

  /** By group id: the multiplier in force over `validity`'s window, or undefined for list prices. */
  private factors(validity: TreeValidity): Float64Array | undefined {
    const { multiplier } = validity;
    return multiplier === undefined ? undefined : this.groupFactors(multiplier, validity.fromMs).factors;
  }

  /**
   * Each group's factor under `multiplier` at `nowMs`, and their floors: the ones kept from an
   * earlier call while the multiplier says they hold (and no group has appeared since), else
   * worked out now, and kept when the multiplier says they hold past now.
   */
  groupFactors(multiplier: PriceMultiplier, nowMs: number): GroupFactors {
    return this.heldFactors(multiplier, nowMs) ?? this.workOutFactors(multiplier, nowMs);
  }

  /**
   * groupFactors, only when they are kept or the multiplier says they hold past `nowMs` (else
   * undefined: a decision asks for the few groups it meets, not for every group).
   */
  heldFactors(multiplier: PriceMultiplier, nowMs: number): GroupFactors | undefined {
    const kept = this.keptFactors;
    if (
      kept !== undefined &&
      kept.multiplier === multiplier &&
      kept.groups === this.groupList.length &&
      nowMs >= kept.fromMs &&
      nowMs < kept.untilMs
    )
      return kept;
    const untilMs = multiplier.stableUntil?.(nowMs);
    return untilMs !== undefined && untilMs > nowMs
      ? this.workOutFactors(multiplier, nowMs, untilMs)
      : undefined;
  }

  private workOutFactors(
    multiplier: PriceMultiplier,
    nowMs: number,
    untilMs = multiplier.stableUntil?.(nowMs) ?? nowMs,
  ): GroupFactors {
    const factors = new Float64Array(this.groupList.length);
    const floors = new Float64Array(16).fill(Number.POSITIVE_INFINITY);
    for (const group of this.groupList) {
      const factor = multiplier.at(group, this.model, nowMs);
      factors[group.id] = factor;
      for (let mask = 1; mask < 16; mask += 1)
        if ((mask & group.levelBit) !== 0 && factor < (floors[mask] as number)) floors[mask] = factor;
    }
    const worked = { multiplier, groups: this.groupList.length, fromMs: nowMs, untilMs, factors, floors };
    if (untilMs > nowMs) this.keptFactors = worked;
    return worked;
  }

  /**
   * Builds every tree a decision may search (place, mixed and price, of every rate tier; the last
   * two at `pricing`), so that no decision waits for one until the registry changes.
   */
  warm(pricing: TreePricing): void {
    for (let tier = 0; tier < RATE_TIERS; tier += 1) {
      const floor = tier === 0 ? 0 : (this.rateFloors[tier] as number);
      if (floor === Number.POSITIVE_INFINITY) continue;
      this.tree(PLACE_TREE, undefined, floor);
      this.tree(MIXED_TREE, pricing, floor);
      this.tree(PRICE_TREE, pricing, floor);
    }
  }

  /**
   * About what share of the built nodes prefill at `rate` or faster (to 1/RATE_QUANTILES): an
   * estimate for choosing a search, never for an answer.
   */
  fastShare(rate: number): number {
    const quantiles = this.rateQuantiles;
    // Quantiles descend: the first below `rate` counts how many are at least as fast.
    let lo = 0;
    let hi = quantiles.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((quantiles[mid] as number) >= rate) lo = mid + 1;
      else hi = mid;
    }
    return quantiles.length === 0 ? 0 : lo / quantiles.length;
  }

  /** Trees built (not repriced) since this model was first indexed; for tests and diagnostics. */
  get builds(): number {
    return this.buildCount;
  }

  /** By rate tier, the slowest rate it holds (+Infinity: no such tier); for tests and diagnostics. */
  tierFloors(): readonly number[] {
    return Array.from(this.rateFloors);
  }

  /** The nodes the trees were built from (some removed since), in the source's order. */
  builtEntries(): readonly IndexedNode[] {
    return this.source?.nodes ?? [];
  }

  /**
   * builtEntries in ascending id order (sorted on first use after each build): a scan in this
   * order meets equal keys in the order the routing rule settles them, without comparing ids.
   */
  builtEntriesById(): readonly IndexedNode[] {
    const source = this.source;
    if (source === undefined) return [];
    if (this.byIdSource !== source) {
      this.byIdSource = source;
      this.entriesById = [...source.nodes].sort((a, b) => compareIds(a.id, b.id));
    }
    return this.entriesById;
  }

  /**
   * The built nodes in ascending (`rttOf`, id) order, with their `rttOf`: one list per `key` (a
   * client's region under a latency model), worked out on first use after each build. At most
   * MAX_RTT_ORDERS keys are kept per model; past that the lists are dropped and made again.
   */
  rttOrder(latency: object, key: string, rttOf: (entry: IndexedNode) => number): RttOrder {
    const source = this.source;
    if (this.rttOrderSource !== source) {
      this.rttOrderSource = source;
      this.rttOrders = new WeakMap();
    }
    let lists = this.rttOrders.get(latency);
    if (lists === undefined) {
      lists = new Map();
      this.rttOrders.set(latency, lists);
    }
    let order = lists.get(key);
    if (order === undefined) {
      const nodes = source?.nodes ?? [];
      const rtts = nodes.map(rttOf);
      const at = Array.from(nodes.keys()).sort(
        (a, b) =>
          (rtts[a] as number) - (rtts[b] as number) ||
          compareIds((nodes[a] as IndexedNode).id, (nodes[b] as IndexedNode).id),
      );
      order = {
        entries: at.map((i) => nodes[i] as IndexedNode),
        rtts: Float64Array.from(at, (i) => rtts[i] as number),
      };
      if (lists.size >= MAX_RTT_ORDERS) lists.clear();
      lists.set(key, order);
    }
    return order;
  }

  /** How many entries entryAt numbers: the built nodes, then the recent ones (some removed). */
  entryCount(): number {
    return (this.source?.nodes.length ?? 0) + this.recentEntries.length;
  }

  /** Entry `i` below entryCount(): every node of the model once, and tombstones. */
  entryAt(i: number): IndexedNode | undefined {
    const built = this.source?.nodes ?? [];
    return i < built.length ? built[i] : this.recentEntries[i - built.length];
  }

  /** Nodes added since the tree was built (some may be removed since): scanned by every search. */
  recent(): readonly IndexedNode[] {
    return this.recentEntries;
  }

  /**
   * Whether any node offering the model is live by `isLive`, checking at most `maxChecks` nodes:
   * first the last live node found, then onwards from where the previous call stopped, so that
   * repeated calls cover every node in turn. `checkedAll` says whether the answer is exact.
   */
  hasLiveNode(
    isLive: (record: NodeRecord) => boolean,
    maxChecks: number,
  ): { live: boolean; checkedAll: boolean } {
    const hint = this.liveHint;
    if (hint !== undefined && !hint.removed && isLive(hint.record)) return { live: true, checkedAll: true };
    const total = this.entryCount();
    const checks = Math.min(maxChecks, total);
    for (let k = 0; k < checks; k += 1) {
      this.liveCursor = (this.liveCursor + 1) % total;
      const entry = this.entryAt(this.liveCursor) as IndexedNode;
      if (!entry.removed && isLive(entry.record)) {
        this.liveHint = entry;
        return { live: true, checkedAll: true };
      }
    }
    return { live: false, checkedAll: checks === total };
  }

  private rebuild(): void {
    const live: IndexedNode[] = [];
    for (const entry of this.source?.nodes ?? []) if (!entry.removed) live.push(entry);
    for (const entry of this.recentEntries) if (!entry.removed) live.push(entry);
    // Renumbered densely (removed nodes leave no holes): the floors kept by the old numbers go.
    live.forEach((entry, n) => {
      entry.ordinal = n;
      writeFacts(this.nodeFacts, n, entry.offer, entry.position);
    });
    this.nextOrdinal = live.length;
    this.forgetLoads();
    this.nodeMarks.removed.fill(0);
    this.nodeMarks.triedBy.fill(0);
    this.source = treeSource(live);
    this.trees.fill(undefined);
    this.validity.fill(undefined);
    this.tiers.fill(undefined);
    // Tier t holds the fastest 1/2^t of the nodes (and any as fast as the slowest of them);
    // small models keep one tier, where a search is cheap anyway.
    const rates = live.map((entry) => boundRate(entry.offer)).sort((a, b) => b - a);
    this.rateQuantiles = Float64Array.from(
      { length: rates.length === 0 ? 0 : RATE_QUANTILES },
      (_, q) => rates[Math.floor((q * rates.length) / RATE_QUANTILES)] as number,
    );
    this.rateFloors = new Float64Array(RATE_TIERS);
    // A floor no higher than the last tier's (or than the slowest node) would hold the same nodes
    // as that tier: not a tier of its own.
    let lastFloor = rates[rates.length - 1] ?? 0;
    for (let t = 1; t < RATE_TIERS; t += 1) {
      const keep = Math.ceil(rates.length / 2 ** t);
      const floor = keep >= this.minTierNodes ? (rates[keep - 1] as number) : Number.POSITIVE_INFINITY;
      if (floor > lastFloor && floor !== Number.POSITIVE_INFINITY) {
        this.rateFloors[t] = floor;
        lastFloor = floor;
      } else this.rateFloors[t] = Number.POSITIVE_INFINITY;
    }
    this.recentEntries = [];
    this.tombstones = 0;
  }
}

/** The window a priced tree would hold for, or undefined when list prices serve better. */
function pricedWindow(pricing: TreePricing | undefined): TreeValidity | undefined {
  const until = pricing?.multiplier.stableUntil?.(pricing.nowMs);
  if (pricing === undefined || until === undefined || !(until - pricing.nowMs >= MIN_PRICED_WINDOW_MS))
    return undefined;
  return { multiplier: pricing.multiplier, fromMs: pricing.nowMs, untilMs: until };
}

/**
 * Per node, in one typed array (K numbers a node): what a build splits and bounds by, read once
 * from the records, so that the build reads contiguous numbers instead of object chains.
 */
const K = {
  x: 0,
  y: 1,
  z: 2,
  input: 3,
  output: 4,
  cached: 5,
  negPrefill: 6,
  levelBit: 7,
  group: 8,
  regionBit: 9,
  /** SPLIT_MIXES of the priced input and output prices (filled by TreeBuilder; 0 in a source). */
  mixes: 10,
} as const;
/** Mixes a price split may cut by (see MIX_STEPS): 22.5°, 45° and 67.5°. */
const SPLIT_MIXES = [Math.PI / 8, Math.PI / 4, (3 * Math.PI) / 8];
const SPLIT_COS = SPLIT_MIXES.map(Math.cos);
const SPLIT_SIN = SPLIT_MIXES.map(Math.sin);
const K_STRIDE = 10 + SPLIT_MIXES.length;
const SPATIAL_KEYS: readonly number[] = [K.x, K.y, K.z];
/**
 * Price splits cut by a mix of input and output prices (the one spread widest): a cell then holds
 * nodes alike in what a request of any mix pays, so its mix bounds are tight. Cut by one kind at a
 * time, a cell cheap on input still held every output price. By cached prices only where they
 * spread CACHED_SPLIT_SPREAD times wider than every mix: cached tokens are cheap, a small part
 * of most costs, and splitting by them whenever they spread as wide cost tight decisions a fifth
 * more work (`npm run bench`'s registries, prompts 80 % cached or none).
 */
const MIX_PRICE_KEYS: readonly number[] = SPLIT_MIXES.map((_, m) => K.mixes + m);
const CACHED_PRICE_KEYS: readonly number[] = [K.cached];
const CACHED_SPLIT_SPREAD = 100;

/** What prices are divided by in a mix (see MIX_STEPS): their mean, or 1 when that is 0 or not finite. */
function mixScale(sum: number, count: number): number {
  const mean = sum / count;
  return mean > 0 && mean < Number.POSITIVE_INFINITY ? mean : 1;
}
const PREFILL_KEYS: readonly number[] = [K.negPrefill];

/** What every tree of a model is built from: its live nodes, located first, and their keys. */
interface TreeSource {
  readonly nodes: readonly IndexedNode[];
  readonly keys: Float64Array;
  /** nodes[0, located) have coordinates, the rest none. */
  readonly located: number;
}

/**
 * The prefill rate the index bounds a node by: no prefill it estimates is shorter than the prompt
 * at this rate. A measured curve's fastest rate (what `prefillTokensPerS` holds for an engine
 * offer) is taken a hair high, since `tokens / rate` can round a hair above the curve's own time.
 */
export function boundRate(offer: ModelOffer): number {
  const curve = offer.engine?.curves.prefill;
  const rate =
    curve === undefined
      ? offer.prefillTokensPerS
      : Math.max(offer.prefillTokensPerS, curveRate(curve)) * (1 + 1e-12);
  // A rate that is not a number (the API refuses one; a programmatic caller may not) gives a
  // prefill that is not a number, which no budget check refuses: it bounds as the fastest, so
  // that a leaf's fastest-first order, and a cell's bound, hold for the rest.
  return Number.isNaN(rate) ? Number.POSITIVE_INFINITY : rate;
}

function treeSource(live: readonly IndexedNode[]): TreeSource {
  const located = live.filter((entry) => entry.position !== undefined);
  const nodes = [...located, ...live.filter((entry) => entry.position === undefined)];
  const keys = new Float64Array(nodes.length * K_STRIDE);
  nodes.forEach((node, n) => {
    const at = n * K_STRIDE;
    keys[at + K.x] = node.position?.x ?? 0;
    keys[at + K.y] = node.position?.y ?? 0;
    keys[at + K.z] = node.position?.z ?? 0;
    keys[at + K.input] = node.offer.price.inputPerMtok;
    keys[at + K.output] = node.offer.price.outputPerMtok;
    keys[at + K.cached] = node.offer.price.cachedInputPerMtok;
    keys[at + K.negPrefill] = -boundRate(node.offer);
    keys[at + K.levelBit] = node.group.levelBit;
    keys[at + K.group] = node.group.id;
    keys[at + K.regionBit] = regionBitFor(node.group.regionIndex);
  });
  return { nodes, keys, located: located.length };
}

/** Collects cells and node slots while building; frozen into typed arrays at the end. */
class TreeBuilder {
  private readonly cells: number[] = [];
  private readonly cellGroups: number[] = [];
  private readonly items: IndexedNode[] = [];
  private readonly nodes: readonly IndexedNode[];
  private readonly keys: Float64Array;
  /** Indices into `nodes`, reordered in place as cells are split: a subtree's nodes are one range. */
  private readonly order: Int32Array;

  constructor(
    source: TreeSource,
    factors: Float64Array | undefined,
    private readonly leafSize: number,
  ) {
    this.nodes = source.nodes;
    this.order = Int32Array.from(source.nodes.keys());
    if (factors === undefined) this.keys = source.keys;
    else {
      // Prices as decisions in the window pay them: each node's by its group's factor, the very
      // products costAt forms, so that a cell's bound is exactly its cheapest node's cost.
      const keys = source.keys.slice();
      for (let at = 0; at < keys.length; at += K_STRIDE) {
        const factor = factors[keys[at + K.group] as number] as number;
        keys[at + K.input] = (keys[at + K.input] as number) * factor;
        keys[at + K.output] = (keys[at + K.output] as number) * factor;
        keys[at + K.cached] = (keys[at + K.cached] as number) * factor;
      }
      this.keys = keys;
    }
    // The mixes' scales: the mean prices, so that a mix weighs both kinds alike (see MIX_STEPS).
    const keys = this.keys === source.keys ? source.keys.slice() : this.keys;
    let input = 0;
    let output = 0;
    for (let at = 0; at < keys.length; at += K_STRIDE) {
      input += keys[at + K.input] as number;
      output += keys[at + K.output] as number;
    }
    const count = keys.length / K_STRIDE;
    const scaleInput = mixScale(input, count);
    const scaleOutput = mixScale(output, count);
    for (let at = 0; at < keys.length; at += K_STRIDE) {
      const scaledInput = (keys[at + K.input] as number) / scaleInput;
      const scaledOutput = (keys[at + K.output] as number) / scaleOutput;
      for (let m = 0; m < SPLIT_MIXES.length; m += 1)
        keys[at + K.mixes + m] =
          (SPLIT_COS[m] as number) * scaledInput + (SPLIT_SIN[m] as number) * scaledOutput;
    }
    this.keys = keys;
  }

  private set(c: number, field: number, value: number): void {
    this.cells[c * CELL_STRIDE + field] = value;
  }

  /** Adds an empty cell; returns its index. */
  private alloc(): number {
    const c = this.cells.length / CELL_STRIDE;
    for (let f = 0; f < CELL_STRIDE; f += 1) this.cells.push(0);
    return c;
  }

  /** Makes cell `c` bound the nodes of `order[lo, hi)`. */
  private cell(c: number, lo: number, hi: number, spatial: number): void {
    const { keys, order } = this;
    // Its prices are worked out once the tree is built (priceCells).
    let maxPrefill = 0;
    let levelMask = 0;
    let regionBits = 0;
    let groups: number[] | undefined = [];
    // No coordinates: a NaN box says so (see unlocatedCell).
    const box = BOX.fill(Number.NaN);
    if (spatial === LOCATED) {
      box.fill(Number.POSITIVE_INFINITY, 0, 3);
      box.fill(Number.NEGATIVE_INFINITY, 3, 6);
    }
    for (let i = lo; i < hi; i += 1) {
      const at = (order[i] as number) * K_STRIDE;
      maxPrefill = Math.max(maxPrefill, -(keys[at + K.negPrefill] as number));
      levelMask |= keys[at + K.levelBit] as number;
      regionBits |= keys[at + K.regionBit] as number;
      const group = keys[at + K.group] as number;
      if (groups !== undefined && !groups.includes(group))
        groups = groups.length < MAX_CELL_GROUPS ? [...groups, group] : undefined;
      if (spatial !== LOCATED) continue;
      for (let axis = 0; axis < 3; axis += 1) {
        const value = keys[at + K.x + axis] as number;
        if (value < (box[axis] as number)) box[axis] = value;
        if (value > (box[3 + axis] as number)) box[3 + axis] = value;
      }
    }
    for (let k = 0; k < 6; k += 1) this.set(c, C.loX + k, box[k] as number);
    this.set(c, C.maxPrefill, maxPrefill);
    this.set(c, C.sizeLevels, (hi - lo) * LEVELS_PACK + levelMask);
    this.set(
      c,
      C.groups,
      this.cellGroups.length * GROUPS_PACK + (groups === undefined ? 0 : groups.length + 1),
    );
    this.set(c, C.regionBits, regionBits);
    if (groups !== undefined) this.cellGroups.push(...groups);
  }

  /**
   * A median-split tree over `order[lo, hi)`. A place tree splits by place (the widest axis), a
   * price tree by price (the token price of widest relative spread; where prices tie, by place
   * and prefill rate in turn), a mixed tree by place and price in turn; a kind with no spread
   * (one site, one price) yields to the other, and a cell alike in both splits by prefill rate.
   */
  build(lo: number, hi: number, depth: number, spatial: number, kind: TreeKind): number {
    const c = this.alloc();
    this.grow(c, lo, hi, depth, spatial, kind);
    return c;
  }

  /** Makes cell `c` the root of build's tree over `order[lo, hi)`. */
  private grow(c: number, lo: number, hi: number, depth: number, spatial: number, kind: TreeKind): void {
    this.cell(c, lo, hi, spatial);
    let split: { key: number; spread: number } | undefined;
    if (hi - lo > this.leafSize) {
      const byPlace =
        spatial === LOCATED ? this.widest(lo, hi, SPATIAL_KEYS, false) : { key: K.x, spread: 0 };
      let byPrice = this.widest(lo, hi, MIX_PRICE_KEYS, true);
      // Cached prices where they spread far wider (those of a registry alike in the rest).
      const byCached = this.widest(lo, hi, CACHED_PRICE_KEYS, true);
      if (byCached.spread > CACHED_SPLIT_SPREAD * byPrice.spread) byPrice = byCached;
      if (byPrice.spread <= 1e-9 && depth % 2 === 1) byPrice = this.widest(lo, hi, PREFILL_KEYS, true);
      const preferPlace = kind === PLACE_TREE || (kind === MIXED_TREE && depth % 2 === 0);
      split = preferPlace ? byPlace : byPrice;
      if (split.spread <= 1e-9) split = preferPlace ? byPrice : byPlace;
      if (split.spread <= 1e-9) split = this.widest(lo, hi, PREFILL_KEYS, true);
      if (split.spread <= 1e-9) split = undefined;
    }
    if (split === undefined) {
      // Fastest prefill first: a search stops reading a leaf at the first node too slow to fit.
      this.sortBy(lo, hi, K.negPrefill);
      this.set(c, C.child, -1 - this.items.length);
      for (let i = lo; i < hi; i += 1) this.items.push(this.nodes[this.order[i] as number] as IndexedNode);
      return;
    }
    // The median by the split key, in place: no sort, no copies (a build is O(n log n)).
    const middle = (lo + hi) >> 1;
    this.selectRank(lo, hi, middle, split.key);
    // The two children side by side, each after its parent (see priceCells).
    const left = this.alloc();
    this.alloc();
    this.grow(left, lo, middle, depth + 1, spatial, kind);
    this.grow(left + 1, middle, hi, depth + 1, spatial, kind);
    this.set(c, C.child, left);
  }

  /**
   * Reorders `order[lo, hi)` so that each level's nodes are one range (keeping their order);
   * returns the non-empty ranges, lowest LEVEL_BIT first.
   */
  levelRanges(lo: number, hi: number): (readonly [number, number])[] {
    const { keys, order } = this;
    const byLevel = new Map<number, number[]>();
    for (let i = lo; i < hi; i += 1) {
      const node = order[i] as number;
      const bit = keys[node * K_STRIDE + K.levelBit] as number;
      const list = byLevel.get(bit);
      if (list === undefined) byLevel.set(bit, [node]);
      else list.push(node);
    }
    const ranges: (readonly [number, number])[] = [];
    let at = lo;
    for (const bit of [...byLevel.keys()].sort((a, b) => a - b)) {
      const start = at;
      for (const node of byLevel.get(bit) as number[]) order[at++] = node;
      ranges.push([start, at]);
    }
    return ranges;
  }

  /** Sorts `order[lo, hi)` by `key` ascending (insertion sort: a leaf is small). */
  private sortBy(lo: number, hi: number, key: number): void {
    const order = this.order;
    for (let i = lo + 1; i < hi; i += 1) {
      const moving = order[i] as number;
      const value = this.keys[moving * K_STRIDE + key] as number;
      let j = i - 1;
      while (j >= lo && (this.keys[(order[j] as number) * K_STRIDE + key] as number) > value) {
        order[j + 1] = order[j] as number;
        j -= 1;
      }
      order[j + 1] = moving;
    }
  }

  private key(i: number, key: number): number {
    return this.keys[(this.order[i] as number) * K_STRIDE + key] as number;
  }

  /** The key of `keys` whose values over `order[lo, hi)` spread widest (relative: over their scale). */
  private widest(lo: number, hi: number, keys: readonly number[], relative: boolean) {
    let best = { key: keys[0] as number, spread: -1 };
    for (const key of keys) {
      let min = Number.POSITIVE_INFINITY;
      let max = Number.NEGATIVE_INFINITY;
      for (let i = lo; i < hi; i += 1) {
        const value = this.key(i, key);
        if (value < min) min = value;
        if (value > max) max = value;
      }
      const scale = Math.max(Math.abs(min), Math.abs(max));
      const spread = !relative ? max - min : scale === 0 ? 0 : (max - min) / scale;
      if (spread > best.spread) best = { key, spread };
    }
    return best;
  }

  /**
   * Reorders `order[lo, hi)` so that `order[rank]` holds the node of that rank by `key`, none
   * before it greater and none after it smaller (Hoare's selection, median-of-three pivots).
   */
  private selectRank(lo: number, hi: number, rank: number, key: number): void {
    const order = this.order;
    let left = lo;
    let right = hi - 1;
    while (right > left) {
      const a = this.key(left, key);
      const b = this.key((left + right) >> 1, key);
      const c = this.key(right, key);
      const pivot = Math.max(Math.min(a, b), Math.min(Math.max(a, b), c));
      let i = left;
      let j = right;
      while (i <= j) {
        while (this.key(i, key) < pivot) i += 1;
        while (this.key(j, key) > pivot) j -= 1;
        if (i <= j) {
          const swap = order[i] as number;
          order[i] = order[j] as number;
          order[j] = swap;
          i += 1;
          j -= 1;
        }
      }
      if (rank <= j) right = j;
      else if (rank >= i) left = i;
      else return;
    }
  }

  freeze(roots: readonly number[], factors: Float64Array | undefined): FlatTree {
    const slots = new Float64Array(this.items.length * SLOT_STRIDE);
    const places = new Float32Array(this.items.length * PLACE_STRIDE);
    this.items.forEach((item, i) => {
      places[i * PLACE_STRIDE + P.x] = item.position?.x ?? Number.NaN;
      places[i * PLACE_STRIDE + P.y] = item.position?.y ?? Number.NaN;
      places[i * PLACE_STRIDE + P.z] = item.position?.z ?? Number.NaN;
      places[i * PLACE_STRIDE + P.rate] = float32AtLeast(boundRate(item.offer));
      slots[i * SLOT_STRIDE + S.group] = item.group.id;
    });
    priceSlots(slots, this.items, factors);
    const cells = Float64Array.from(this.cells);
    return {
      priced: factors !== undefined,
      roots: Int32Array.from(roots),
      cells,
      cellGroups: Int32Array.from(this.cellGroups),
      slots,
      places,
      ...priceCells(cells, slots),
      items: this.items,
      ordinals: Int32Array.from(this.items, (item) => item.ordinal),
    };
  }
}

/** Writes each slot's prices: list prices, or times its group's factor (the products costAt forms). */
function priceSlots(
  slots: Float64Array,
  items: readonly IndexedNode[],
  factors: Float64Array | undefined,
): void {
  for (let i = 0; i < items.length; i += 1) {
    const item = items[i] as IndexedNode;
    const factor = factors === undefined ? 1 : (factors[item.group.id] as number);
    const price = item.offer.price;
    slots[i * SLOT_STRIDE + S.input] = price.inputPerMtok * factor;
    slots[i * SLOT_STRIDE + S.output] = price.outputPerMtok * factor;
    slots[i * SLOT_STRIDE + S.cached] = price.cachedInputPerMtok * factor;
  }
}

/**
 * `tree` with every cell's minimum prices worked out again at `factors` (by group id; undefined:
 * list prices), from the leaves up: the nodes, places and splits are unchanged.
 */
function reprice(tree: FlatTree, factors: Float64Array | undefined): FlatTree {
  const cells = tree.cells.slice();
  const slots = tree.slots.slice();
  priceSlots(slots, tree.items, factors);
  return { ...tree, cells, slots, ...priceCells(cells, slots), priced: factors !== undefined };
}

/** What priceCells works out besides the cells' own fields. */
type CellPricing = Pick<FlatTree, 'mixScaleInput' | 'mixScaleOutput' | 'mixesTighten'>;

/**
 * Writes every cell's least prices (of each kind, and along the middle mixes: see MIX_STEPS) from
 * the slots' prices, from the leaves up; returns the mixes' scales (the prices' means now: a tree
 * first priced at a tiny factor and later at a large one would otherwise overflow its mixes) and
 * whether they tighten any cell.
 */
function priceCells(cells: Float64Array, slots: Float64Array): CellPricing {
  const count = slots.length / SLOT_STRIDE;
  let input = 0;
  let output = 0;
  for (let i = 0; i < count; i += 1) {
    input += slots[i * SLOT_STRIDE + S.input] as number;
    output += slots[i * SLOT_STRIDE + S.output] as number;
  }
  const mixScaleInput = mixScale(input, count);
  const mixScaleOutput = mixScale(output, count);
  let tighten = false;
  // By PRICED_FIELDS: the cell's least input, output and cached prices, and its middle mixes.
  const least = new Float64Array(PRICED_FIELDS.length);
  // A parent's children come after it, so from the last cell back every child is done before
  // its parent.
  for (let c = cells.length / CELL_STRIDE - 1; c >= 0; c -= 1) {
    const at = c * CELL_STRIDE;
    const left = leftChild(cells, c);
    least.fill(Number.POSITIVE_INFINITY);
    if (left < 0) {
      const start = cellItemStart(cells, at);
      const end = start + cellSize(cells, at);
      for (let i = start; i < end; i += 1) {
        const slot = i * SLOT_STRIDE;
        least[0] = Math.min(least[0] as number, slots[slot + S.input] as number);
        least[1] = Math.min(least[1] as number, slots[slot + S.output] as number);
        least[2] = Math.min(least[2] as number, slots[slot + S.cached] as number);
        const scaledInput = (slots[slot + S.input] as number) / mixScaleInput;
        const scaledOutput = (slots[slot + S.output] as number) / mixScaleOutput;
        for (let k = 1; k < MIX_STEPS; k += 1)
          least[2 + k] = Math.min(
            least[2 + k] as number,
            (MIX_COS[k] as number) * scaledInput + (MIX_SIN[k] as number) * scaledOutput,
          );
      }
    } else {
      const l = left * CELL_STRIDE;
      const r = l + CELL_STRIDE;
      for (let f = 0; f < PRICED_FIELDS.length; f += 1) {
        const field = PRICED_FIELDS[f] as number;
        least[f] = Math.min(cells[l + field] as number, cells[r + field] as number);
      }
    }
    for (let f = 0; f < PRICED_FIELDS.length; f += 1)
      cells[at + (PRICED_FIELDS[f] as number)] = least[f] as number;
    // Tighter than the line between its least input and output prices along some middle mix?
    const scaledInput = (least[0] as number) / mixScaleInput;
    const scaledOutput = (least[1] as number) / mixScaleOutput;
    for (let k = 1; k < MIX_STEPS && !tighten; k += 1) {
      const corner = (MIX_COS[k] as number) * scaledInput + (MIX_SIN[k] as number) * scaledOutput;
      tighten = (least[2 + k] as number) > corner * (1 + 1e-9);
    }
  }
  return { mixScaleInput, mixScaleOutput, mixesTighten: tighten };
}

function buildTree(
  source: TreeSource,
  kind: TreeKind,
  factors: Float64Array | undefined,
  leafSize: number,
): FlatTree {
  const builder = new TreeBuilder(source, factors, leafSize);
  const { located } = source;
  const roots: number[] = [];
  // A root per level for the cost searches (see the header); the nearest-first searches want the
  // node of least RTT whatever its level, and keep one tree.
  const ranges = (lo: number, hi: number) => {
    if (kind !== PLACE_TREE) return builder.levelRanges(lo, hi);
    return lo < hi ? [[lo, hi] as const] : [];
  };
  for (const [lo, hi] of ranges(0, located)) roots.push(builder.build(lo, hi, 0, LOCATED, kind));
  for (const [lo, hi] of ranges(located, source.nodes.length))
    roots.push(builder.build(lo, hi, 1, UNLOCATED, kind));
  return builder.freeze(roots, factors);
}

/** Whether two specs place a node identically in the index (same level, region, place, offers). */
function sameIndexing(a: NodeSpec, b: NodeSpec): boolean {
  if (a === b) return true;
  if (a.level !== b.level || a.region !== b.region) return false;
  if (a.location?.lat !== b.location?.lat || a.location?.lon !== b.location?.lon) return false;
  if (a.models.length !== b.models.length) return false;
  return a.models.every((offer, index) => {
    const other = b.models[index];
    return (
      other !== undefined &&
      offer.model === other.model &&
      boundRate(offer) === boundRate(other) &&
      offer.price.inputPerMtok === other.price.inputPerMtok &&
      offer.price.outputPerMtok === other.price.outputPerMtok &&
      offer.price.cachedInputPerMtok === other.price.cachedInputPerMtok
    );
  });
}

/**
 * For one CandidateIndex: which reservation book its models' load floors hold for, and the
 * watcher that book tells when a load falls. A decision against another book (or one that cannot
 * tell) starts the floors afresh.
 */
export class LoadFloorKeeper implements LoadWatcher {
  private book: LoadWatched | undefined;

  constructor(private readonly models: ReadonlyMap<string, ModelCandidates>) {}

  /** Whether floors may be used with `reservations` (adopting it, if it can tell when loads fall). */
  holdsFor(reservations: LoadWatched): boolean {
    if (reservations === this.book) return true;
    // Floors kept under the last book say nothing under this one (nothing was kept without one).
    if (this.book !== undefined) this.unwatched();
    if (reservations.watchLoad === undefined) return false;
    reservations.watchLoad(this);
    this.book = reservations;
    return true;
  }

  loadDecreased(nodeId: string, model: string): void {
    if (this.book !== undefined) this.models.get(model)?.lowerLoad(nodeId);
  }

  unwatched(): void {
    this.book = undefined;
    for (const candidates of this.models.values()) candidates.forgetLoads();
  }
}

/** Every model's candidates, kept current by put/remove as the registry changes. */
export class CandidateIndex {
  private readonly models = new Map<string, ModelCandidates>();
  private readonly indexed = new Map<string, NodeRecord>();
  private readonly floors = new LoadFloorKeeper(this.models);

  /**
   * `minTierNodes`: the smallest rate tier split out; `leafSizes`: most nodes per leaf by tree
   * kind (tests lower both to reach small registries).
   */
  constructor(
    private readonly minTierNodes = MIN_TIER_NODES,
    private readonly leafSizes: LeafSizes = DEFAULT_LEAF_SIZES,
  ) {
    for (const size of leafSizes)
      if (!Number.isInteger(size) || size < 1)
        throw new RangeError(`a leaf holds at least one node, not ${size}`);
  }

  candidates(model: string): ModelCandidates | undefined {
    return this.models.get(model);
  }

  /** Inserts or replaces the node with the same id. */
  put(record: NodeRecord): void {
    const previous = this.indexed.get(record.spec.id);
    this.indexed.set(record.spec.id, record);
    if (previous !== undefined && sameIndexing(previous.spec, record.spec)) {
      // A status report or a re-registration that moves nothing: swap the record in place.
      for (const offer of record.spec.models) {
        const candidates = this.models.get(offer.model);
        const found = candidates?.byId.get(record.spec.id);
        if (candidates === undefined || found === undefined || found.entry.record === record) continue;
        candidates.swap(found.entry, record, offer);
        // A report may say the load fell.
        candidates.forgetLoad(found.entry);
      }
      return;
    }
    if (previous !== undefined) this.unindex(previous);
    const seen = new Set<string>();
    for (const offer of record.spec.models) {
      // Like findOffer, the first offer of a model counts.
      if (seen.has(offer.model)) continue;
      seen.add(offer.model);
      let candidates = this.models.get(offer.model);
      if (candidates === undefined) {
        candidates = new ModelCandidates(offer.model, this.minTierNodes, this.leafSizes, this.floors);
        this.models.set(offer.model, candidates);
      }
      candidates.add(record, offer);
    }
  }

  remove(nodeId: string): void {
    const previous = this.indexed.get(nodeId);
    if (previous === undefined) return;
    this.indexed.delete(nodeId);
    this.unindex(previous);
  }

  private unindex(record: NodeRecord): void {
    for (const offer of record.spec.models) {
      const candidates = this.models.get(offer.model);
      candidates?.remove(record.spec.id);
      if (candidates?.size === 0) this.models.delete(offer.model);
    }
  }
}
