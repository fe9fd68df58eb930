// The candidate index: for each model, the nodes that offer it in one bounding tree whose cells
// know the cheapest price of each token kind, the fastest prefill, a spherical cap holding every
// node, and which (level, region) groups they hold — the unit at which time-of-use multipliers,
// level/region constraints and access overheads are the same for every node.
//
// Nothing here assumes few prices: a cell's cost bound for a request is its per-kind minimum
// prices weighted by the request's own token mix, so the search (pipeline.ts) can visit cells
// cheapest first and stop as soon as no cell can beat what it has, and can skip cells too far to
// meet the budget, whatever the price list. Updates are cheap: a status report swaps the record
// in place; new nodes wait in a small unsorted cell and removals leave tombstones until the next
// lazy rebuild.

import type { LatLon, Level, ModelOffer, NodeRecord, NodeSpec } from '../model.js';

/** A node's offer of one model, as the index holds it. `record` is replaced on every update. */
export interface IndexedNode {
  readonly id: string;
  record: NodeRecord;
  /** Replaced with the record; its prices and prefill rate never change in place (see sameIndexing). */
  offer: ModelOffer;
  readonly group: IndexGroup;
  /** Unit vector of the node's location; undefined when the node has no coordinates. */
  readonly position: Vec3 | undefined;
  removed: boolean;
}

export interface Vec3 {
  readonly x: number;
  readonly y: number;
  readonly z: number;
}

/**
 * A cell of a group's tree: bounds that hold for every node below it.
 * - `cap`: every node lies within `radiusRad` of `center` on the unit sphere;
 * - `unlocated`: no node has coordinates (its RTT is the region default);
 * - `mixed`: no spatial bound (the unsorted cell of recent insertions).
 */
export interface Cell {
  readonly spatial: 'cap' | 'unlocated' | 'mixed';
  readonly center: Vec3;
  readonly radiusRad: number;
  readonly minInputPerMtok: number;
  readonly minOutputPerMtok: number;
  readonly minCachedInputPerMtok: number;
  readonly maxPrefillTokensPerS: number;
  /** Bit LEVEL_BIT[level] set for every level present. */
  readonly levelMask: number;
  /** The distinct groups present, or undefined when there are more than MAX_CELL_GROUPS. */
  readonly groups: readonly IndexGroup[] | undefined;
  readonly children: readonly Cell[];
  readonly items: readonly IndexedNode[];
}

const LEAF_SIZE = 8;

export const LEVEL_BIT: Readonly<Record<Level, number>> = { CENTER: 1, PROVINCE: 2, EDGE: 4, TERMINAL: 8 };
/** Absorbs rounding in acos so that a cap's bound never exceeds a true distance. */
const ANGLE_SLACK_RAD = 1e-7;

export function unitVector(location: LatLon): Vec3 {
  const rad = Math.PI / 180;
  const lat = location.lat * rad;
  const lon = location.lon * rad;
  return { x: Math.cos(lat) * Math.cos(lon), y: Math.cos(lat) * Math.sin(lon), z: Math.sin(lat) };
}

/** Angle between two unit vectors, in radians. */
export function angleBetween(a: Vec3, b: Vec3): number {
  const dot = a.x * b.x + a.y * b.y + a.z * b.z;
  return Math.acos(Math.max(-1, Math.min(1, dot)));
}

/** A lower bound of the angle from `point` to any node of a `cap` cell. */
export function capAngleLowerBound(cell: Cell, point: Vec3): number {
  return Math.max(0, angleBetween(point, cell.center) - cell.radiusRad);
}

/** Nodes of one model that share a level and a region: one price multiplier, one access overhead. */
export interface IndexGroup {
  /** Dense per model, from 0. */
  readonly id: number;
  readonly level: Level;
  readonly region: string;
  /** Live nodes in the group. */
  size: number;
  /**
   * What one decision derived for the group (multiplier, RTT bases), valid while `stamp` is that
   * decision's. Decisions run one at a time to completion, so one slot per group suffices and a
   * decision allocates nothing per group.
   */
  readonly scratch: { stamp: number; multiplier: number; coordinateBaseMs: number; regionDefaultMs: number };
}

/** A cell lists its distinct groups only up to this many; a more mixed cell bounds by the model's. */
const MAX_CELL_GROUPS = 8;

/**
 * Every node offering one model, in one tree: cells split by place and by price, and each knows
 * which (level, region) groups it holds, so level/region constraints, multipliers and access
 * overheads bound a whole cell at once.
 */
export class ModelCandidates {
  readonly byId = new Map<string, { entry: IndexedNode; group: IndexGroup }>();
  private readonly groupsByKey = new Map<string, IndexGroup>();
  private groupList: IndexGroup[] = [];
  private tree: Cell[] | undefined;
  /** Nodes added since the last build, scanned in one cell without a spatial bound. */
  private recent: IndexedNode[] = [];
  private cachedRoots: readonly Cell[] | undefined;
  private tombstones = 0;
  private built = 0;
  /** A node recently found live, checked first by hasLiveNode. */
  private liveHint: IndexedNode | undefined;
  /** Bumped whenever a group appears: what was derived from the group list is stale. */
  groupsVersion = 0;

  constructor(readonly model: string) {}

  get size(): number {
    return this.byId.size;
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
      group = {
        id: this.groupList.length,
        level,
        region,
        size: 0,
        scratch: { stamp: 0, multiplier: 0, coordinateBaseMs: 0, regionDefaultMs: 0 },
      };
      this.groupsByKey.set(key, group);
      this.groupList.push(group);
      this.groupsVersion += 1;
    }
    const location = record.spec.location;
    const entry: IndexedNode = {
      id: record.spec.id,
      record,
      offer,
      group,
      position: location === undefined ? undefined : unitVector(location),
      removed: false,
    };
    group.size += 1;
    this.byId.set(entry.id, { entry, group });
    this.recent.push(entry);
    this.cachedRoots = undefined;
  }

  remove(nodeId: string): void {
    const found = this.byId.get(nodeId);
    if (found === undefined) return;
    found.entry.removed = true;
    found.group.size -= 1;
    this.byId.delete(nodeId);
    this.tombstones += 1;
  }

  /** The cells to start a search from; rebuilds the tree first if updates have piled up. */
  roots(): readonly Cell[] {
    if (
      this.tree === undefined ||
      this.recent.length > 32 + Math.sqrt(this.built) ||
      this.tombstones > Math.max(32, this.built / 4)
    ) {
      this.rebuild();
    }
    if (this.cachedRoots === undefined) {
      const tree = this.tree as Cell[];
      this.cachedRoots = this.recent.length === 0 ? tree : [...tree, buildLeaf(this.recent, 'mixed')];
    }
    return this.cachedRoots;
  }

  /**
   * Whether any node offering the model is live by `isLive`. Remembers the last live node
   * found, so the common answer costs one check.
   */
  hasLiveNode(isLive: (record: NodeRecord) => boolean): boolean {
    const hint = this.liveHint;
    if (hint !== undefined && !hint.removed && isLive(hint.record)) return true;
    for (const { entry } of this.byId.values()) {
      if (isLive(entry.record)) {
        this.liveHint = entry;
        return true;
      }
    }
    return false;
  }

  private rebuild(): void {
    const live: IndexedNode[] = [];
    for (const cell of this.tree ?? []) collectLive(cell, live);
    for (const entry of this.recent) if (!entry.removed) live.push(entry);
    const located = live.filter((entry) => entry.position !== undefined);
    const unlocated = live.filter((entry) => entry.position === undefined);
    const tree: Cell[] = [];
    if (located.length > 0) tree.push(buildCell(located, 0));
    if (unlocated.length > 0) tree.push(buildCell(unlocated, 1));
    this.tree = tree;
    this.cachedRoots = undefined;
    this.recent = [];
    this.tombstones = 0;
    this.built = live.length;
  }
}

function collectLive(cell: Cell, into: IndexedNode[]): void {
  for (const entry of cell.items) if (!entry.removed) into.push(entry);
  for (const child of cell.children) collectLive(child, into);
}

function buildLeaf(items: readonly IndexedNode[], spatial: Cell['spatial']): Cell {
  return makeCell(items, spatial, [], items);
}

/** Every cell is made here, with its fields in one order: the search reads them on its hot path. */
function makeCell(
  all: readonly IndexedNode[],
  spatial: Cell['spatial'],
  children: readonly Cell[],
  items: readonly IndexedNode[],
): Cell {
  let minInputPerMtok = Number.POSITIVE_INFINITY;
  let minOutputPerMtok = Number.POSITIVE_INFINITY;
  let minCachedInputPerMtok = Number.POSITIVE_INFINITY;
  let maxPrefillTokensPerS = 0;
  let levelMask = 0;
  let groups: IndexGroup[] | undefined = [];
  let sx = 0;
  let sy = 0;
  let sz = 0;
  for (const { offer, position, group } of all) {
    minInputPerMtok = Math.min(minInputPerMtok, offer.price.inputPerMtok);
    minOutputPerMtok = Math.min(minOutputPerMtok, offer.price.outputPerMtok);
    minCachedInputPerMtok = Math.min(minCachedInputPerMtok, offer.price.cachedInputPerMtok);
    maxPrefillTokensPerS = Math.max(maxPrefillTokensPerS, offer.prefillTokensPerS);
    levelMask |= LEVEL_BIT[group.level];
    if (groups !== undefined && !groups.includes(group))
      groups = groups.length < MAX_CELL_GROUPS ? [...groups, group] : undefined;
    if (position !== undefined) {
      sx += position.x;
      sy += position.y;
      sz += position.z;
    }
  }
  let center: Vec3 = { x: 1, y: 0, z: 0 };
  let radiusRad = Math.PI;
  if (spatial === 'cap') {
    const norm = Math.hypot(sx, sy, sz);
    center = norm > 1e-9 ? { x: sx / norm, y: sy / norm, z: sz / norm } : (all[0]?.position ?? center);
    radiusRad = 0;
    for (const { position } of all) {
      if (position !== undefined) radiusRad = Math.max(radiusRad, angleBetween(center, position));
    }
    radiusRad += ANGLE_SLACK_RAD;
  }
  return {
    spatial,
    center,
    radiusRad,
    minInputPerMtok,
    minOutputPerMtok,
    minCachedInputPerMtok,
    maxPrefillTokensPerS,
    levelMask,
    groups,
    children,
    items,
  };
}

type SplitKey = (entry: IndexedNode) => number;
const SPATIAL_KEYS: readonly SplitKey[] = [
  (e) => e.position?.x ?? 0,
  (e) => e.position?.y ?? 0,
  (e) => e.position?.z ?? 0,
];
const PRICE_KEYS: readonly SplitKey[] = [
  (e) => e.offer.price.inputPerMtok,
  (e) => e.offer.price.outputPerMtok,
  (e) => e.offer.price.cachedInputPerMtok,
  (e) => -e.offer.prefillTokensPerS,
];

function spread(items: readonly IndexedNode[], key: SplitKey, relative: boolean): number {
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const item of items) {
    const value = key(item);
    lo = Math.min(lo, value);
    hi = Math.max(hi, value);
  }
  if (!relative) return hi - lo;
  const scale = Math.max(Math.abs(lo), Math.abs(hi));
  return scale === 0 ? 0 : (hi - lo) / scale;
}

function widest(items: readonly IndexedNode[], keys: readonly SplitKey[], relative: boolean) {
  let best = { key: keys[0] as SplitKey, spread: -1 };
  for (const key of keys) {
    const value = spread(items, key, relative);
    if (value > best.spread) best = { key, spread: value };
  }
  return best;
}

/**
 * A median-split tree. Levels alternate between splitting by place and by price (whichever axis
 * of that kind is widest), so cells become both small on the map and narrow in price; a kind
 * with no spread (one site, one price) yields to the other.
 */
function buildCell(items: IndexedNode[], depth: number): Cell {
  const located = items[0]?.position !== undefined;
  const spatial: Cell['spatial'] = located ? 'cap' : 'unlocated';
  if (items.length <= LEAF_SIZE) return buildLeaf(items, spatial);
  const byPlace = located
    ? widest(items, SPATIAL_KEYS, false)
    : { key: SPATIAL_KEYS[0] as SplitKey, spread: 0 };
  const byPrice = widest(items, PRICE_KEYS, true);
  const preferPlace = depth % 2 === 0;
  let split = preferPlace ? byPlace : byPrice;
  if (split.spread <= 1e-9) split = preferPlace ? byPrice : byPlace;
  if (split.spread <= 1e-9) return buildLeaf(items, spatial);
  const key = split.key;
  items.sort((a, b) => key(a) - key(b));
  const middle = items.length >> 1;
  const children = [buildCell(items.slice(0, middle), depth + 1), buildCell(items.slice(middle), depth + 1)];
  return makeCell(items, spatial, children, []);
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
      offer.prefillTokensPerS === other.prefillTokensPerS &&
      offer.price.inputPerMtok === other.price.inputPerMtok &&
      offer.price.outputPerMtok === other.price.outputPerMtok &&
      offer.price.cachedInputPerMtok === other.price.cachedInputPerMtok
    );
  });
}

/** Every model's candidates, kept current by put/remove as the registry changes. */
export class CandidateIndex {
  private readonly models = new Map<string, ModelCandidates>();
  private readonly indexed = new Map<string, NodeRecord>();

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
        const found = this.models.get(offer.model)?.byId.get(record.spec.id);
        if (found === undefined || found.entry.record === record) continue;
        found.entry.record = record;
        found.entry.offer = offer;
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
        candidates = new ModelCandidates(offer.model);
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

  clear(): void {
    this.models.clear();
    this.indexed.clear();
  }

  private unindex(record: NodeRecord): void {
    for (const offer of record.spec.models) {
      const candidates = this.models.get(offer.model);
      candidates?.remove(record.spec.id);
      if (candidates?.size === 0) this.models.delete(offer.model);
    }
  }
}
