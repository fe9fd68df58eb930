// Domain types shared by the core, the stores, the server and the simulator.
// Proto types never reach past src/server; everything inside speaks these.

export const LEVELS = ['CENTER', 'PROVINCE', 'EDGE', 'TERMINAL'] as const;
export type Level = (typeof LEVELS)[number];

export const NODE_ID_PATTERN = /^[a-z0-9][a-z0-9.-]{0,62}$/;
export const MAX_NODE_ID_CHARS = 63;
/** A tenant name: a DNS label (lowercase letters, digits, inner hyphens), as in keys, bills and ids. */
export const TENANT_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
export const MAX_TENANT_CHARS = 63;
export const MODEL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$/;
export const MAX_MODEL_CHARS = 128;

export interface LatLon {
  readonly lat: number;
  readonly lon: number;
}

export interface Gpu {
  readonly type: string;
  readonly count: number;
  readonly memoryGib: number;
}

/** Prices in currency units (CNY) per million tokens. */
export interface Price {
  readonly inputPerMtok: number;
  readonly outputPerMtok: number;
  readonly cachedInputPerMtok: number;
}

export interface ModelOffer {
  readonly model: string;
  readonly maxConcurrency: number;
  readonly maxQueue: number;
  /** With `engine`: the fastest rate its prefill curve reaches (so rate-based bounds stay lower bounds). */
  readonly prefillTokensPerS: number;
  readonly decodeTokensPerS: number;
  readonly price: Price;
  /** Served by measured engines (GPU × model shape): times come from their curves, not fixed rates. */
  readonly engine?: EngineOffer;
}

/** `replicas` engines of one measured kind serve the offer (maxConcurrency = replicas × maxBatch). */
export interface EngineOffer {
  readonly curves: EngineCurves;
  readonly replicas: number;
}

/**
 * What a GPU × model shape measured (simulations/profiles): prefill time by prompt length, and decode
 * step time by batch size and context per sequence. Times in ms, wall clock; axes ascending.
 */
export interface EngineCurves {
  readonly name: string;
  readonly prefill: { readonly tokens: readonly number[]; readonly ms: readonly number[] };
  readonly decode: {
    readonly batches: readonly number[];
    readonly contexts: readonly number[];
    /** ms[i][j]: batch batches[i], every sequence contexts[j] tokens long. */
    readonly ms: readonly (readonly number[])[];
  };
  /** Requests one engine runs at once, and prompt tokens it admits per iteration. */
  readonly maxBatch: number;
  readonly prefillBudget: number;
}

export interface NodeSpec {
  readonly id: string;
  readonly level: Level;
  readonly region: string;
  readonly parentId: string;
  readonly endpoint: string;
  readonly location: LatLon | undefined;
  readonly gpus: readonly Gpu[];
  readonly models: readonly ModelOffer[];
  readonly labels: Readonly<Record<string, string>>;
}

export interface ModelLoad {
  readonly model: string;
  readonly active: number;
  readonly queued: number;
}

export interface NodeStatus {
  readonly nodeId: string;
  readonly load: readonly ModelLoad[];
  readonly gpuUtilization: number;
  /** 0..1; undefined when the engine does not say (TGI has no KV-cache gauge). */
  readonly kvCacheUtilization: number | undefined;
  readonly healthy: boolean;
}

export type NodeState = 'READY' | 'DRAINING' | 'DOWN' | 'UNHEALTHY';

/**
 * A node as a store holds it. `lastSeenMs` is the later of registration and the last status
 * report. The node is DOWN from `expiresAtMs` on: the memory store sets it to `lastSeenMs + ttlS`;
 * the etcd store leaves it at infinity while the node's lease keeps its key alive (etcd expires
 * the lease, and the key's deletion removes the node). Permanent nodes never expire.
 */
export interface NodeRecord {
  readonly spec: NodeSpec;
  readonly ttlS: number;
  readonly permanent: boolean;
  readonly registeredAtMs: number;
  readonly lastSeenMs: number;
  readonly expiresAtMs: number;
  readonly status: NodeStatus | undefined;
  /** When the last status report arrived; reservations made before it are in that report. */
  readonly statusAtMs: number | undefined;
  readonly draining: boolean;
}

/** State of a node at `nowMs`. Staleness wins over everything: a silent node is DOWN. */
export function nodeState(node: NodeRecord, nowMs: number): NodeState {
  if (nowMs > node.expiresAtMs) return 'DOWN';
  if (node.status !== undefined && !node.status.healthy) return 'UNHEALTHY';
  if (node.draining) return 'DRAINING';
  return 'READY';
}

/** Up, whether or not it takes new work: a model with only DOWN or UNHEALTHY nodes has no live node. */
export function isLive(state: NodeState): boolean {
  return state === 'READY' || state === 'DRAINING';
}

/** When a node seen at `lastSeenMs` expires without another report. */
export function leaseExpiry(lastSeenMs: number, ttlS: number, permanent: boolean): number {
  return permanent ? Number.POSITIVE_INFINITY : lastSeenMs + ttlS * 1000;
}

export function findOffer(spec: NodeSpec, model: string): ModelOffer | undefined {
  for (const offer of spec.models) if (offer.model === model) return offer;
  return undefined;
}

/** Requests on (node, model) according to the node's last status report. */
export function reportedLoad(node: NodeRecord, model: string): number {
  const loads = node.status?.load;
  if (loads === undefined) return 0;
  // A loop, not find: a search reads this for many nodes, and a callback is an allocation each.
  for (const load of loads) if (load.model === model) return load.active + load.queued;
  return 0;
}

export interface Usage {
  readonly inputTokens: number;
  readonly cachedInputTokens: number;
  readonly outputTokens: number;
}
