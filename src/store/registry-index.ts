// The in-memory registry both stores route from: nodes by id, each model's nodes grouped into
// price tiers (see RoutingView.priceTiers), and smoothed latency samples. The memory store
// mutates it directly; the etcd store feeds it from a watch.

import { GeoGrid } from '../core/geo-grid.js';
import type { LatencySample } from '../core/latency.js';
import type { NodeRecord, Price } from '../core/model.js';
import type { PriceTier, RoutingView } from '../core/scheduler.js';
import type { NodeFilter } from './store.js';

interface MutableTier extends PriceTier {
  readonly nodes: Map<string, NodeRecord>;
  readonly grid: GeoGrid<NodeRecord>;
}

const priceKey = (price: Price): string =>
  `${price.inputPerMtok}/${price.outputPerMtok}/${price.cachedInputPerMtok}`;

export class RegistryIndex {
  private readonly nodes = new Map<string, NodeRecord>();
  /** model → price key → tier */
  private readonly byModel = new Map<string, Map<string, MutableTier>>();
  /** from (access point or region) → node id → smoothed sample */
  private readonly samples = new Map<string, Map<string, LatencySample>>();
  readonly view: RoutingView = {
    priceTiers: (model) => this.byModel.get(model)?.values() ?? [],
    allNodes: () => this.nodes.values(),
    samplesFrom: (from) => this.samples.get(from),
  };

  get size(): number {
    return this.nodes.size;
  }

  get(nodeId: string): NodeRecord | undefined {
    return this.nodes.get(nodeId);
  }

  values(): IterableIterator<NodeRecord> {
    return this.nodes.values();
  }

  /** Nodes matching every given filter, ordered by id. */
  list(filter: NodeFilter): NodeRecord[] {
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

  /** Inserts or replaces the node with the same id. */
  put(node: NodeRecord): void {
    const previous = this.nodes.get(node.spec.id);
    if (previous !== undefined && previous.spec !== node.spec) this.unindex(previous);
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
        tier = { price: offer.price, nodes: new Map(), grid: new GeoGrid() };
        tiers.set(key, tier);
      }
      tier.nodes.set(node.spec.id, node);
      tier.grid.set(node.spec.id, node.spec.location, node);
    }
  }

  /** Removes the node and its latency samples; returns it, or undefined if it was not there. */
  remove(nodeId: string): NodeRecord | undefined {
    const node = this.nodes.get(nodeId);
    if (node === undefined) return undefined;
    this.unindex(node);
    for (const byNode of this.samples.values()) byNode.delete(nodeId);
    return node;
  }

  getSample(from: string, nodeId: string): LatencySample | undefined {
    return this.samples.get(from)?.get(nodeId);
  }

  setSample(from: string, nodeId: string, sample: LatencySample): void {
    let byNode = this.samples.get(from);
    if (byNode === undefined) {
      byNode = new Map();
      this.samples.set(from, byNode);
    }
    byNode.set(nodeId, sample);
  }

  deleteSample(from: string, nodeId: string): void {
    const byNode = this.samples.get(from);
    byNode?.delete(nodeId);
    if (byNode?.size === 0) this.samples.delete(from);
  }

  /** Every sample as [from, nodeId, sample]. */
  *allSamples(): IterableIterator<[string, string, LatencySample]> {
    for (const [from, byNode] of this.samples) {
      for (const [nodeId, sample] of byNode) yield [from, nodeId, sample];
    }
  }

  clear(): void {
    this.nodes.clear();
    this.byModel.clear();
    this.samples.clear();
  }

  private unindex(node: NodeRecord): void {
    this.nodes.delete(node.spec.id);
    for (const offer of node.spec.models) {
      const tiers = this.byModel.get(offer.model);
      const key = priceKey(offer.price);
      const tier = tiers?.get(key);
      tier?.nodes.delete(node.spec.id);
      tier?.grid.delete(node.spec.id);
      if (tier?.nodes.size === 0) tiers?.delete(key);
      if (tiers?.size === 0) this.byModel.delete(offer.model);
    }
  }
}
