// The registry's storage contract. The memory store (embedded default) and the etcd store
// implement it; one contract test suite runs against both.
//
// Reads used on the Route hot path are synchronous and served from memory (`view`); writes are
// asynchronous because a distributed store must reach its backend before acknowledging them.

import type { Leadership } from '../common/leadership.js';
import type { LatLon, Level, NodeRecord, NodeSpec, NodeStatus, Usage } from '../core/model.js';
import type { PricingState, ScheduledPricing } from '../core/pricing.js';
import type { RoutingView } from '../core/routing/index.js';
import type { AccountsStore } from './accounts.js';
import type { LedgerStore } from './ledgers.js';
import type { SessionStore } from './sessions.js';

export interface RegisterOptions {
  /** Seconds without registration or status after which the node is DOWN. Ignored if permanent. */
  readonly ttlS: number;
  /** Operator-managed node that never expires. */
  readonly permanent: boolean;
}

export interface NodeFilter {
  readonly level?: Level | undefined;
  readonly region?: string | undefined;
  readonly model?: string | undefined;
}

/** Whether `node` passes every filter given. */
export function matchesFilter(node: NodeRecord, filter: NodeFilter): boolean {
  if (filter.level !== undefined && node.spec.level !== filter.level) return false;
  if (filter.region && node.spec.region !== filter.region) return false;
  if (filter.model && !node.spec.models.some((offer) => offer.model === filter.model)) return false;
  return true;
}

/** A page of a node listing: at most `limit` nodes with ids after `afterId`. */
export interface NodePage {
  readonly afterId?: string | undefined;
  readonly limit: number;
}

export interface NodeListing {
  readonly nodes: NodeRecord[];
  /** Nodes matching the filter over all pages. */
  readonly total: number;
  /** More nodes follow the last one of this page. */
  readonly more: boolean;
}

export interface LatencyReport {
  readonly from: string;
  readonly nodeId: string;
  readonly rttMs: number;
}

export interface UsageRecord {
  readonly reservationId: string;
  readonly tenant: string;
  readonly nodeId: string;
  /** Undefined when the node was deregistered before the release. */
  readonly level: Level | undefined;
  readonly region: string;
  readonly model: string;
  readonly usage: Usage;
  readonly success: boolean;
  readonly atMs: number;
}

export interface StoreHealth {
  readonly kind: 'memory' | 'etcd';
  readonly reachable: boolean;
  /** Milliseconds since the cache last confirmed it is current. */
  readonly stalenessMs: number;
  readonly unreachableSinceMs: number | undefined;
}

/** Result of a status report: accepted, or why not. */
export type StatusOutcome =
  | { readonly kind: 'accepted'; readonly node: NodeRecord }
  | { readonly kind: 'unknown_node' }
  | { readonly kind: 'expired'; readonly expiredAtMs: number };

export interface Store {
  /** Registers `spec`, replacing an earlier registration of the same id (admin state is kept). */
  registerNode(spec: NodeSpec, options: RegisterOptions): Promise<{ node: NodeRecord; created: boolean }>;
  /** Records a status report and renews the node's registration. An expired node must register again. */
  reportStatus(status: NodeStatus): Promise<StatusOutcome>;
  /** Returns false if the node was not registered. */
  deregisterNode(nodeId: string): Promise<boolean>;
  /** Sets or clears DRAINING. Returns undefined if the node is not registered. */
  setDraining(nodeId: string, draining: boolean): Promise<NodeRecord | undefined>;
  getNode(nodeId: string): NodeRecord | undefined;
  /** Nodes matching every given filter, ordered by id. */
  listNodes(filter: NodeFilter): NodeRecord[];
  /** One page of `listNodes`, without materialising the rest. */
  listNodePage(filter: NodeFilter, page: NodePage): NodeListing;
  /** Folds measured RTTs into the smoothed samples; returns how many were accepted. */
  reportLatency(reports: readonly LatencyReport[]): Promise<number>;
  /** Distinct `from` names that hold latency samples. */
  latencySources(): number;
  /**
   * Records usage once per reservation id, whichever replica the Release reached. Returns false
   * when that reservation's usage was already recorded. The record is kept at least `keepMs` —
   * as long as a repeated Release of the id can arrive — and then forgotten (on etcd with a lease),
   * so that records do not pile up one per request forever.
   */
  recordUsage(record: UsageRecord, keepMs: number): Promise<boolean>;
  /**
   * Calls `listener` with the reservation id of every usage record this replica learns of — its
   * own and other replicas' (on etcd through the watch, so late, possibly twice, and again for old
   * records after a relist). The control plane frees its own reservation when another replica
   * recorded the Release: the slot is freed where it was taken.
   */
  onUsageRecorded(listener: (reservationId: string) => void): void;
  /** Where clients of a region are, for latency estimates when they give no coordinates. */
  regionCentroids(): ReadonlyMap<string, LatLon>;
  /** Time-of-use pricing: the current policy and the scheduled changes (synchronous, cached). */
  pricing(): PricingState;
  /** Schedules `change.policy` to take effect at `change.atMs` on every replica. */
  schedulePricing(change: ScheduledPricing): Promise<void>;
  /** Returns false if no such scheduled change exists. */
  cancelPricing(id: string): Promise<boolean>;
  /** Leader-only housekeeping: makes the latest change due by `nowMs` current and drops due ones. */
  foldDuePricing(nowMs: number): Promise<number>;
  /** Election among the replicas sharing this store, for cluster-wide jobs. */
  leadership(name: string, ttlS: number): Leadership;
  /** How current this replica's view is. */
  health(): StoreHealth;
  /** Synchronous view for the routing core. */
  readonly view: RoutingView;
  /** Tenants and API keys. */
  readonly accounts: AccountsStore;
  /** Quota ledgers, one per tenant and period. */
  readonly ledgers: LedgerStore;
  /** Mobility sessions. */
  readonly sessions: SessionStore;
  /** The secret every replica signs reservation ids with (loaded when the store opens). */
  reservationSecret(): Buffer;
  /** Removes nodes that have been DOWN for longer than `graceMs` and stale latency samples. */
  sweep(graceMs: number): Promise<{ removedNodes: string[]; removedSamples: number }>;
  close(): Promise<void>;
}

export type Clock = () => number;

/** The backend cannot be reached: the write did not happen. Maps to gRPC UNAVAILABLE. */
export class StoreUnavailableError extends Error {
  constructor(
    message: string,
    readonly sinceMs?: number,
  ) {
    super(message);
    this.name = 'StoreUnavailableError';
  }
}

/** The backend refused the write itself (too large, out of space): it did not happen. RESOURCE_EXHAUSTED. */
export class StoreRejectedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreRejectedError';
  }
}

/** Registers operator-managed nodes (e.g. a topology file's) that never expire. */
export async function registerPermanent(store: Store, specs: Iterable<NodeSpec>): Promise<void> {
  for (const spec of specs) await store.registerNode(spec, { ttlS: 0, permanent: true });
}
