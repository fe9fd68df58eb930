// The in-memory registry both stores route from: nodes by id, the candidate index the routing
// core searches (see core/routing/candidate-index.ts), and smoothed latency samples. The memory
// store mutates it directly; the etcd store feeds it from a watch.

import type { LatencySample } from '../core/latency.js';
import type { NodeRecord } from '../core/model.js';
import { CandidateIndex, type RoutingView } from '../core/routing/index.js';
import type { NodeFilter } from './store.js';

export class RegistryIndex {
  private readonly nodes = new Map<string, NodeRecord>();
  private readonly candidates = new CandidateIndex();
  /** from (access point or region) → node id → smoothed sample */
  private readonly samples = new Map<string, Map<string, LatencySample>>();
  readonly view: RoutingView = {
    candidates: (model) => this.candidates.candidates(model),
    allNodes: () => this.nodes.values(),
    nodeCount: () => this.nodes.size,
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
    const byModel = filter.model ? this.candidates.candidates(filter.model) : undefined;
    const source = filter.model
      ? [...(byModel?.byId.values() ?? [])].map((found) => found.entry.record)
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
    this.nodes.set(node.spec.id, node);
    this.candidates.put(node);
  }

  /** Removes the node and its latency samples; returns it, or undefined if it was not there. */
  remove(nodeId: string): NodeRecord | undefined {
    const node = this.nodes.get(nodeId);
    if (node === undefined) return undefined;
    this.nodes.delete(nodeId);
    this.candidates.remove(nodeId);
    for (const byNode of this.samples.values()) byNode.delete(nodeId);
    return node;
  }

  /** Distinct `from` names (access points, regions) that hold samples. */
  get sampleSources(): number {
    return this.samples.size;
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
    this.candidates.clear();
    this.samples.clear();
  }
}
