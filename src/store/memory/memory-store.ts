// Embedded in-process store: the default for `cpn serve`, the simulator's store, and the oracle
// the etcd store is tested against. Everything lives in maps; nothing survives a restart.

import { randomBytes } from 'node:crypto';
import { type Leadership, SoleLeader } from '../../common/leadership.js';
import { type LatencyModel, smoothSample } from '../../core/latency.js';
import {
  type LatLon,
  leaseExpiry,
  type NodeRecord,
  type NodeSpec,
  type NodeStatus,
} from '../../core/model.js';
import { duePricing, LIST_PRICES, type PricingState, type ScheduledPricing } from '../../core/pricing.js';
import type { RoutingView } from '../../core/routing/index.js';
import { MemoryAccounts } from '../accounts.js';
import { MemoryLedgers } from '../ledgers.js';
import { RegistryIndex } from '../registry-index.js';
import { MemorySessions } from '../sessions.js';
import type {
  Clock,
  LatencyReport,
  NodeFilter,
  NodeListing,
  NodePage,
  RegisterOptions,
  StatusOutcome,
  Store,
  StoreHealth,
  UsageRecord,
} from '../store.js';

export interface MemoryStoreOptions {
  readonly clock: Clock;
  readonly latency: Pick<LatencyModel, 'sampleSmoothing' | 'sampleMaxAgeMs'>;
  readonly regionCentroids?: ReadonlyMap<string, LatLon>;
  /** Latency samples kept at most; past it the least recently updated go. */
  readonly maxLatencySamples?: number;
}

export class MemoryStore implements Store {
  private readonly index: RegistryIndex;
  private readonly usage = new Map<string, { readonly record: UsageRecord; readonly untilMs: number }>();
  private readonly usageListeners: ((reservationId: string) => void)[] = [];
  private readonly centroids: ReadonlyMap<string, LatLon>;
  private pricingState: PricingState = { current: LIST_PRICES, scheduled: [] };
  readonly view: RoutingView;
  readonly accounts = new MemoryAccounts();
  readonly ledgers = new MemoryLedgers();
  readonly sessions: MemorySessions;
  private readonly secret = randomBytes(32);

  /** This process's secret for reservation ids (one process: nobody else needs it). */
  reservationSecret(): Buffer {
    return this.secret;
  }

  constructor(private readonly options: MemoryStoreOptions) {
    this.index = new RegistryIndex(options.maxLatencySamples);
    this.view = this.index.view;
    this.centroids = options.regionCentroids ?? new Map();
    this.sessions = new MemorySessions(() => this.options.clock());
  }

  async registerNode(
    spec: NodeSpec,
    options: RegisterOptions,
  ): Promise<{ node: NodeRecord; created: boolean }> {
    const nowMs = this.options.clock();
    const previous = this.index.get(spec.id);
    const node: NodeRecord = {
      spec,
      ttlS: options.ttlS,
      permanent: options.permanent,
      registeredAtMs: nowMs,
      lastSeenMs: nowMs,
      expiresAtMs: leaseExpiry(nowMs, options.ttlS, options.permanent),
      status: undefined,
      statusAtMs: undefined,
      draining: previous?.draining ?? false,
    };
    this.index.put(node);
    return { node, created: previous === undefined };
  }

  async reportStatus(status: NodeStatus): Promise<StatusOutcome> {
    const nowMs = this.options.clock();
    const previous = this.index.get(status.nodeId);
    if (previous === undefined) return { kind: 'unknown_node' };
    if (nowMs > previous.expiresAtMs) return { kind: 'expired', expiredAtMs: previous.expiresAtMs };
    const node: NodeRecord = {
      ...previous,
      status,
      statusAtMs: nowMs,
      lastSeenMs: nowMs,
      expiresAtMs: leaseExpiry(nowMs, previous.ttlS, previous.permanent),
    };
    this.index.put(node);
    return { kind: 'accepted', node };
  }

  async deregisterNode(nodeId: string): Promise<boolean> {
    return this.index.remove(nodeId) !== undefined;
  }

  async setDraining(nodeId: string, draining: boolean): Promise<NodeRecord | undefined> {
    const previous = this.index.get(nodeId);
    if (previous === undefined) return undefined;
    const node: NodeRecord = { ...previous, draining };
    this.index.put(node);
    return node;
  }

  getNode(nodeId: string): NodeRecord | undefined {
    return this.index.get(nodeId);
  }

  listNodes(filter: NodeFilter): NodeRecord[] {
    return this.index.list(filter);
  }

  listNodePage(filter: NodeFilter, page: NodePage): NodeListing {
    return this.index.page(filter, page);
  }

  latencySources(): number {
    return this.index.sampleSources;
  }

  async reportLatency(reports: readonly LatencyReport[]): Promise<number> {
    const nowMs = this.options.clock();
    let accepted = 0;
    for (const { from, nodeId, rttMs } of reports) {
      if (this.index.get(nodeId) === undefined) continue;
      this.index.setSample(
        from,
        nodeId,
        smoothSample(this.index.getSample(from, nodeId), rttMs, nowMs, this.options.latency),
      );
      accepted += 1;
    }
    return accepted;
  }

  async recordUsage(record: UsageRecord, keepMs: number): Promise<boolean> {
    // Forget records past their keeping time, oldest first (the map keeps insertion order).
    const nowMs = this.options.clock();
    for (const [id, kept] of this.usage) {
      if (kept.untilMs > nowMs) break;
      this.usage.delete(id);
    }
    // Keyed by reservation: a Release retried after a lost answer is recorded once.
    if (this.usage.has(record.reservationId)) return false;
    this.usage.set(record.reservationId, { record, untilMs: nowMs + keepMs });
    for (const listener of this.usageListeners) listener(record.reservationId);
    return true;
  }

  onUsageRecorded(listener: (reservationId: string) => void): void {
    this.usageListeners.push(listener);
  }

  /** Usage records still kept, oldest first. */
  usageRecords(): readonly UsageRecord[] {
    return [...this.usage.values()].map((kept) => kept.record);
  }

  pricing(): PricingState {
    return this.pricingState;
  }

  async schedulePricing(change: ScheduledPricing): Promise<void> {
    this.pricingState = {
      current: this.pricingState.current,
      scheduled: [...this.pricingState.scheduled.filter((c) => c.id !== change.id), change],
    };
  }

  async cancelPricing(id: string): Promise<boolean> {
    const scheduled = this.pricingState.scheduled.filter((change) => change.id !== id);
    if (scheduled.length === this.pricingState.scheduled.length) return false;
    this.pricingState = { current: this.pricingState.current, scheduled };
    return true;
  }

  async foldDuePricing(nowMs: number): Promise<number> {
    const due = duePricing(this.pricingState, nowMs);
    const latest = due[due.length - 1];
    if (latest === undefined) return 0;
    const folded = new Set(due.map((change) => change.id));
    this.pricingState = {
      current: latest.policy,
      scheduled: this.pricingState.scheduled.filter((change) => !folded.has(change.id)),
    };
    return due.length;
  }

  leadership(): Leadership {
    return new SoleLeader();
  }

  health(): StoreHealth {
    return { kind: 'memory', reachable: true, stalenessMs: 0, unreachableSinceMs: undefined };
  }

  regionCentroids(): ReadonlyMap<string, LatLon> {
    return this.centroids;
  }

  async sweep(graceMs: number): Promise<{ removedNodes: string[]; removedSamples: number }> {
    const nowMs = this.options.clock();
    const removedNodes: string[] = [];
    for (const node of [...this.index.values()]) {
      if (nowMs > node.expiresAtMs + graceMs) {
        this.index.remove(node.spec.id);
        removedNodes.push(node.spec.id);
      }
    }
    let removedSamples = 0;
    for (const [from, nodeId, sample] of [...this.index.allSamples()]) {
      if (nowMs - sample.updatedAtMs > this.options.latency.sampleMaxAgeMs) {
        this.index.deleteSample(from, nodeId);
        removedSamples += 1;
      }
    }
    return { removedNodes, removedSamples };
  }

  async close(): Promise<void> {}
}
