// Embedded in-process store: the default for `cpn serve`, the simulator's store, and the oracle
// the etcd store is tested against. Everything lives in maps; nothing survives a restart.

import { type LatencyModel, type LatencySample, smoothSample } from '../../core/latency.js';
import {
  type LatLon,
  type NodeRecord,
  type NodeSpec,
  type NodeStatus,
  nodeState,
  type Price,
} from '../../core/model.js';
import type { RoutingView } from '../../core/scheduler.js';
import type {
  Clock,
  LatencyReport,
  NodeFilter,
  RegisterOptions,
  StatusOutcome,
  Store,
  UsageRecord,
} from '../store.js';

export interface MemoryStoreOptions {
  readonly clock: Clock;
  readonly latency: Pick<LatencyModel, 'sampleSmoothing' | 'sampleMaxAgeMs'>;
  readonly regionCentroids?: ReadonlyMap<string, LatLon>;
}

export class MemoryStore implements Store {
  private readonly nodes = new Map<string, NodeRecord>();
  /** model → price key → tier of nodes offering the model at that price */
  private readonly byModel = new Map<string, Map<string, { price: Price; nodes: Map<string, NodeRecord> }>>();
  /** from (access point or region) → node id → smoothed sample */
  private readonly samples = new Map<string, Map<string, LatencySample>>();
  private readonly usage: UsageRecord[] = [];
  private readonly centroids: ReadonlyMap<string, LatLon>;
  readonly view: RoutingView;

  constructor(private readonly options: MemoryStoreOptions) {
    this.centroids = options.regionCentroids ?? new Map();
    this.view = {
      priceTiers: (model) => this.byModel.get(model)?.values() ?? [],
      allNodes: () => this.nodes.values(),
      samplesFrom: (from) => this.samples.get(from),
    };
  }

  async registerNode(
    spec: NodeSpec,
    options: RegisterOptions,
  ): Promise<{ node: NodeRecord; created: boolean }> {
    const nowMs = this.options.clock();
    const previous = this.nodes.get(spec.id);
    const node: NodeRecord = {
      spec,
      ttlS: options.ttlS,
      permanent: options.permanent,
      registeredAtMs: nowMs,
      lastSeenMs: nowMs,
      status: undefined,
      statusAtMs: undefined,
      draining: previous?.draining ?? false,
    };
    this.put(node, previous);
    return { node, created: previous === undefined };
  }

  async reportStatus(status: NodeStatus): Promise<StatusOutcome> {
    const nowMs = this.options.clock();
    const previous = this.nodes.get(status.nodeId);
    if (previous === undefined) return { kind: 'unknown_node' };
    if (nodeState(previous, nowMs) === 'DOWN') {
      return { kind: 'expired', expiredAtMs: previous.lastSeenMs + previous.ttlS * 1000 };
    }
    const node: NodeRecord = { ...previous, status, statusAtMs: nowMs, lastSeenMs: nowMs };
    this.put(node, previous);
    return { kind: 'accepted', node };
  }

  async deregisterNode(nodeId: string): Promise<boolean> {
    const previous = this.nodes.get(nodeId);
    if (previous === undefined) return false;
    this.remove(previous);
    for (const byNode of this.samples.values()) byNode.delete(nodeId);
    return true;
  }

  async setDraining(nodeId: string, draining: boolean): Promise<NodeRecord | undefined> {
    const previous = this.nodes.get(nodeId);
    if (previous === undefined) return undefined;
    const node: NodeRecord = { ...previous, draining };
    this.put(node, previous);
    return node;
  }

  getNode(nodeId: string): NodeRecord | undefined {
    return this.nodes.get(nodeId);
  }

  listNodes(filter: NodeFilter): NodeRecord[] {
    const source = filter.model
      ? [...(this.byModel.get(filter.model)?.values() ?? [])].flatMap((tier) => [...tier.nodes.values()])
      : this.nodes.values();
    const result: NodeRecord[] = [];
    for (const node of source) {
      if (filter.level !== undefined && node.spec.level !== filter.level) continue;
      if (filter.region && node.spec.region !== filter.region) continue;
      result.push(node);
    }
    return result.sort((a, b) => (a.spec.id < b.spec.id ? -1 : a.spec.id > b.spec.id ? 1 : 0));
  }

  async reportLatency(reports: readonly LatencyReport[]): Promise<number> {
    const nowMs = this.options.clock();
    let accepted = 0;
    for (const report of reports) {
      if (!this.nodes.has(report.nodeId)) continue;
      let byNode = this.samples.get(report.from);
      if (byNode === undefined) {
        byNode = new Map();
        this.samples.set(report.from, byNode);
      }
      byNode.set(
        report.nodeId,
        smoothSample(byNode.get(report.nodeId), report.rttMs, nowMs, this.options.latency),
      );
      accepted += 1;
    }
    return accepted;
  }

  async recordUsage(record: UsageRecord): Promise<void> {
    this.usage.push(record);
  }

  /** Usage recorded so far, oldest first. */
  usageRecords(): readonly UsageRecord[] {
    return this.usage;
  }

  regionCentroids(): ReadonlyMap<string, LatLon> {
    return this.centroids;
  }

  async sweep(graceMs: number): Promise<{ removedNodes: string[]; removedSamples: number }> {
    const nowMs = this.options.clock();
    const removedNodes: string[] = [];
    for (const node of [...this.nodes.values()]) {
      if (!node.permanent && nowMs - node.lastSeenMs > node.ttlS * 1000 + graceMs) {
        await this.deregisterNode(node.spec.id);
        removedNodes.push(node.spec.id);
      }
    }
    let removedSamples = 0;
    for (const [from, byNode] of this.samples) {
      for (const [nodeId, sample] of byNode) {
        if (nowMs - sample.updatedAtMs > this.options.latency.sampleMaxAgeMs) {
          byNode.delete(nodeId);
          removedSamples += 1;
        }
      }
      if (byNode.size === 0) this.samples.delete(from);
    }
    return { removedNodes, removedSamples };
  }

  async close(): Promise<void> {}

  private put(node: NodeRecord, previous: NodeRecord | undefined): void {
    if (previous !== undefined && previous.spec !== node.spec) this.remove(previous);
    this.nodes.set(node.spec.id, node);
    for (const offer of node.spec.models) {
      let tiers = this.byModel.get(offer.model);
      if (tiers === undefined) {
        tiers = new Map();
        this.byModel.set(offer.model, tiers);
      }
      const key = priceKey(offer.price);
      let tier = tiers.get(key);
      if (tier === undefined) {
        tier = { price: offer.price, nodes: new Map() };
        tiers.set(key, tier);
      }
      tier.nodes.set(node.spec.id, node);
    }
  }

  private remove(node: NodeRecord): void {
    this.nodes.delete(node.spec.id);
    for (const offer of node.spec.models) {
      const tiers = this.byModel.get(offer.model);
      const key = priceKey(offer.price);
      const tier = tiers?.get(key);
      tier?.nodes.delete(node.spec.id);
      if (tier?.nodes.size === 0) tiers?.delete(key);
      if (tiers?.size === 0) this.byModel.delete(offer.model);
    }
  }
}

const priceKey = (price: Price): string =>
  `${price.inputPerMtok}/${price.outputPerMtok}/${price.cachedInputPerMtok}`;
