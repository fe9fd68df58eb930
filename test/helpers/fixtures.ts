// Builders for nodes, requests and routing contexts used across tests.

import { LIST_PRICE } from '../../src/core/cost.js';
import { DEFAULT_LATENCY_MODEL, type LatencyModel, type LatencySample } from '../../src/core/latency.js';
import {
  type Level,
  leaseExpiry,
  type ModelOffer,
  type NodeRecord,
  type NodeSpec,
  type NodeStatus,
} from '../../src/core/model.js';
import { ReservationBook } from '../../src/core/reservations.js';
import {
  CandidateIndex,
  type PendingReservations,
  type RouteContext,
  type RouteRequest,
  type RoutingView,
} from '../../src/core/routing/index.js';

export const GUANGZHOU = { lat: 23.129, lon: 113.264 };

export function offer(
  overrides: Partial<Omit<ModelOffer, 'price'>> & { price?: Partial<ModelOffer['price']> } = {},
): ModelOffer {
  return {
    model: 'm',
    maxConcurrency: 4,
    maxQueue: 0,
    prefillTokensPerS: 10_000,
    decodeTokensPerS: 50,
    ...overrides,
    price: { inputPerMtok: 1, outputPerMtok: 4, cachedInputPerMtok: 0.1, ...overrides.price },
  };
}

export interface NodeOptions {
  id: string;
  level?: Level;
  region?: string;
  /** Kilometres east of Guangzhou along its parallel (0 = in Guangzhou). */
  km?: number;
  offers?: ModelOffer[];
  price?: number;
  draining?: boolean;
  status?: Omit<NodeStatus, 'nodeId'>;
  statusAtMs?: number;
  lastSeenMs?: number;
  ttlS?: number;
  permanent?: boolean;
}

/** ~1° of longitude at Guangzhou's latitude in km. */
const KM_PER_DEG_LON = 111.195 * Math.cos((GUANGZHOU.lat * Math.PI) / 180);

export function spec(options: NodeOptions): NodeSpec {
  return {
    id: options.id,
    level: options.level ?? 'PROVINCE',
    region: options.region ?? 'CN-GD',
    parentId: '',
    endpoint: `${options.id}:8000`,
    location: { lat: GUANGZHOU.lat, lon: GUANGZHOU.lon + (options.km ?? 0) / KM_PER_DEG_LON },
    gpus: [{ type: 'L20', count: 8, memoryGib: 48 }],
    models: options.offers ?? [
      offer(options.price === undefined ? {} : { price: { inputPerMtok: options.price } }),
    ],
    labels: {},
  };
}

export function record(options: NodeOptions, nowMs = 0): NodeRecord {
  const lastSeenMs = options.lastSeenMs ?? options.statusAtMs ?? nowMs;
  return {
    spec: spec(options),
    ttlS: options.ttlS ?? 30,
    permanent: options.permanent ?? false,
    registeredAtMs: nowMs,
    lastSeenMs,
    expiresAtMs: leaseExpiry(lastSeenMs, options.ttlS ?? 30, options.permanent ?? false),
    status: options.status === undefined ? undefined : { nodeId: options.id, ...options.status },
    statusAtMs: options.status === undefined ? undefined : (options.statusAtMs ?? nowMs),
    draining: options.draining ?? false,
  };
}

/**
 * A node as the property tests draw it: its offers, `active` requests on each (those beyond a
 * model's slots queued), a status report `silentMs` before `nowMs`, and a 30 s TTL.
 */
export function loadedRecord(
  options: Omit<NodeOptions, 'status' | 'statusAtMs' | 'ttlS'> & {
    offers: ModelOffer[];
    active: number;
    healthy: boolean;
    silentMs: number;
  },
  nowMs: number,
): NodeRecord {
  const { active, healthy, silentMs, ...rest } = options;
  return record(
    {
      ...rest,
      status: {
        load: options.offers.map((o) => ({
          model: o.model,
          active: Math.min(active, o.maxConcurrency),
          queued: Math.max(0, active - o.maxConcurrency),
        })),
        gpuUtilization: 0.5,
        kvCacheUtilization: 0.5,
        healthy,
      },
      statusAtMs: nowMs - silentMs,
      ttlS: 30,
    },
    nowMs - silentMs,
  );
}

/** What the property tests draw for a request. */
export interface DrawnRequest {
  readonly model: string;
  readonly budget: number;
  readonly input: number;
  readonly cachedShare: number;
  readonly output: number;
  readonly levels: readonly Level[];
  readonly regions: readonly string[];
  readonly degraded: boolean;
  readonly fallbacks: number;
}

/** A request from what a property test drew; `overrides` (client, explain) win. */
export function drawnRequest(r: DrawnRequest, overrides: Partial<RouteRequest> = {}): RouteRequest {
  return request({
    model: r.model,
    latencyBudgetMs: r.budget,
    inputTokens: r.input,
    cachedInputTokens: Math.floor(r.input * r.cachedShare),
    maxOutputTokens: r.output,
    allowedLevels: r.levels,
    allowedRegions: r.regions,
    allowDegraded: r.degraded,
    maxFallbacks: r.fallbacks,
    ...overrides,
  });
}

export function request(overrides: Partial<RouteRequest> = {}): RouteRequest {
  return {
    requestId: 'r1',
    tenant: 't',
    model: 'm',
    client: { region: 'CN-GD', accessPoint: '', location: GUANGZHOU },
    latencyBudgetMs: 1000,
    inputTokens: 1000,
    cachedInputTokens: 0,
    maxOutputTokens: 100,
    allowedLevels: [],
    allowedRegions: [],
    allowDegraded: false,
    explain: true,
    maxFallbacks: 2,
    ...overrides,
  };
}

/** `reservations` behind an interface that cannot say when loads fall: decisions keep no floors. */
export const plain = (reservations: ReservationBook): PendingReservations => ({
  pending: (nodeId, model, statusAtMs) => reservations.pending(nodeId, model, statusAtMs),
});

/** A reservation book with deterministic tokens, for tests. */
export function book(ttlMs = 30_000, replicaId = 'test'): ReservationBook {
  let next = 0;
  return new ReservationBook({ ttlMs, replicaId, newToken: () => (next++).toString(16).padStart(16, '0') });
}

/**
 * A routing view over a fixed list of nodes — through the real candidate index — with optional
 * measured samples keyed "from|node".
 */
export function view(nodes: readonly NodeRecord[], samples: Record<string, LatencySample> = {}): RoutingView {
  const sampleMaps = new Map<string, Map<string, LatencySample>>();
  for (const [key, sample] of Object.entries(samples)) {
    const [from, nodeId] = key.split('|') as [string, string];
    if (!sampleMaps.has(from)) sampleMaps.set(from, new Map());
    sampleMaps.get(from)?.set(nodeId, sample);
  }
  const index = new CandidateIndex();
  for (const node of nodes) index.put(node);
  return indexView(index, nodes, (from) => sampleMaps.get(from));
}

/** The routing view of `index`, which holds `nodes` (a test that puts into the index itself). */
export function indexView(
  index: CandidateIndex,
  nodes: readonly NodeRecord[],
  samplesFrom: RoutingView['samplesFrom'] = () => undefined,
): RoutingView {
  return {
    candidates: (model) => index.candidates(model),
    allNodes: () => nodes,
    nodeCount: () => nodes.length,
    samplesFrom,
  };
}

/** Simple latency model: RTT = 2 × km / 200 × stretch 1, no overheads. */
export const FLAT_LATENCY: LatencyModel = {
  ...DEFAULT_LATENCY_MODEL,
  routeStretch: 1,
  accessOverheadMs: { CENTER: 0, PROVINCE: 0, EDGE: 0, TERMINAL: 0 },
  crossRegionPenaltyMs: 0,
};

export function context(
  nodes: readonly NodeRecord[],
  extra: Partial<RouteContext> & { samples?: Record<string, LatencySample> } = {},
): RouteContext {
  return {
    view: view(nodes, extra.samples),
    reservations: extra.reservations ?? book(),
    latency: extra.latency ?? FLAT_LATENCY,
    priceMultiplier: extra.priceMultiplier ?? LIST_PRICE,
    nowMs: extra.nowMs ?? 0,
    ...(extra.policy === undefined ? {} : { policy: extra.policy }),
    ...(extra.maxExplainNodes === undefined ? {} : { maxExplainNodes: extra.maxExplainNodes }),
    ...(extra.maxVisits === undefined ? {} : { maxVisits: extra.maxVisits }),
  };
}
