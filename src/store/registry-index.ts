// The in-memory registry both stores route from: nodes by id, the candidate index the routing
// core searches (see core/routing/candidate-index.ts), and smoothed latency samples. The memory
// store mutates it directly; the etcd store feeds it from a watch.

import type { LatencySample } from '../core/latency.js';
import type { NodeRecord } from '../core/model.js';
import { CandidateIndex, type RoutingView } from '../core/routing/index.js';
import { matchesFilter, type NodeFilter, type NodeListing, type NodePage } from './store.js';

const byId = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Latency samples kept at most, over every `from` and node, unless a store says otherwise. */
export const DEFAULT_MAX_LATENCY_SAMPLES = 500_000;

const sampleKey = (from: string, nodeId: string) => `${from}\u0000${nodeId}`;

export class RegistryIndex {
  private readonly nodes = new Map<string, NodeRecord>();
  private readonly candidates = new CandidateIndex();
  /** from (access point or region) → node id → smoothed sample */
  private readonly samples = new Map<string, Map<string, LatencySample>>();
  /**
   * Every sample's key, least recently updated first: past `maxSamples` the first go. (Names are
   * validated printable, so the NUL separator cannot be forged.)
   */
  private readonly sampleOrder = new Map<string, true>();
  /** Node ids in order, rebuilt on the first listing after a node arrives or leaves. */
  private sortedIds: string[] | undefined;
  readonly view: RoutingView = {
    candidates: (model) => this.candidates.candidates(model),
    allNodes: () => this.nodes.values(),
    nodeCount: () => this.nodes.size,
    samplesFrom: (from) => this.samples.get(from),
  };

  constructor(readonly maxSamples = DEFAULT_MAX_LATENCY_SAMPLES) {}

  get size(): number {
    return this.nodes.size;
  }

  get(nodeId: string): NodeRecord | undefined {
    return this.nodes.get(nodeId);
  }

  values(): IterableIterator<NodeRecord> {
    return this.nodes.values();
  }

  /**
   * One page of the nodes matching `filter`, in id order, after `page.afterId`. The work is the
   * page plus one pass of cheap checks for the total, whatever the registry's size.
   */
  page(filter: NodeFilter, page: NodePage): NodeListing {
    this.sortedIds ??= [...this.nodes.keys()].sort(byId);
    const ids = this.sortedIds;
    let start = 0;
    if (page.afterId !== undefined) {
      let high = ids.length;
      while (start < high) {
        const middle = (start + high) >>> 1;
        if ((ids[middle] as string) <= page.afterId) start = middle + 1;
        else high = middle;
      }
    }
    const nodes: NodeRecord[] = [];
    let more = false;
    for (let i = start; i < ids.length; i += 1) {
      const node = this.nodes.get(ids[i] as string);
      if (node === undefined || !matchesFilter(node, filter)) continue;
      if (nodes.length === page.limit) {
        more = true;
        break;
      }
      nodes.push(node);
    }
    const unfiltered = filter.level === undefined && !filter.region && !filter.model;
    let total = this.nodes.size;
    if (!unfiltered) {
      total = 0;
      for (const node of this.nodes.values()) if (matchesFilter(node, filter)) total += 1;
    }
    return { nodes, total, more };
  }

  /** Nodes matching every given filter, ordered by id. */
  list(filter: NodeFilter): NodeRecord[] {
    const byModel = filter.model ? this.candidates.candidates(filter.model) : undefined;
    const source = filter.model
      ? [...(byModel?.byId.values() ?? [])].map((found) => found.entry.record)
      : this.nodes.values();
    const result: NodeRecord[] = [];
    for (const node of source) {
      if (matchesFilter(node, filter)) result.push(node);
    }
    return result.sort((a, b) => (a.spec.id < b.spec.id ? -1 : a.spec.id > b.spec.id ? 1 : 0));
  }

  /** Inserts or replaces the node with the same id. */
  put(node: NodeRecord): void {
    if (!this.nodes.has(node.spec.id)) this.sortedIds = undefined;
    this.nodes.set(node.spec.id, node);
    this.candidates.put(node);
  }

  /** Removes the node and its latency samples; returns it, or undefined if it was not there. */
  remove(nodeId: string): NodeRecord | undefined {
    const node = this.nodes.get(nodeId);
    if (node === undefined) return undefined;
    this.nodes.delete(nodeId);
    this.sortedIds = undefined;
    this.candidates.remove(nodeId);
    for (const [from, byNode] of this.samples) {
      if (!byNode.delete(nodeId)) continue;
      this.sampleOrder.delete(sampleKey(from, nodeId));
      if (byNode.size === 0) this.samples.delete(from);
    }
    return node;
  }

  /** Distinct `from` names (access points, regions) that hold samples. */
  get sampleSources(): number {
    return this.samples.size;
  }

  getSample(from: string, nodeId: string): LatencySample | undefined {
    return this.samples.get(from)?.get(nodeId);
  }

  /** Sets a sample; returns the samples evicted to stay within `maxSamples`, oldest first. */
  setSample(from: string, nodeId: string, sample: LatencySample): [string, string][] {
    let byNode = this.samples.get(from);
    if (byNode === undefined) {
      byNode = new Map();
      this.samples.set(from, byNode);
    }
    byNode.set(nodeId, sample);
    const key = sampleKey(from, nodeId);
    this.sampleOrder.delete(key);
    this.sampleOrder.set(key, true);
    const evicted: [string, string][] = [];
    if (this.sampleOrder.size <= this.maxSamples) return evicted;
    // Past the ceiling, a sixty-fourth of it goes at once: one pass over the order per batch
    // rather than one per sample (a Map's deleted slots make each pass start slower).
    const target = this.maxSamples - Math.floor(this.maxSamples / 64);
    for (const oldest of this.sampleOrder.keys()) {
      if (this.sampleOrder.size <= target) break;
      const cut = oldest.indexOf('\u0000');
      const pair: [string, string] = [oldest.slice(0, cut), oldest.slice(cut + 1)];
      this.deleteSample(pair[0], pair[1]);
      evicted.push(pair);
    }
    return evicted;
  }

  /** Samples held, over every `from` and node. */
  get sampleCount(): number {
    return this.sampleOrder.size;
  }

  deleteSample(from: string, nodeId: string): void {
    const byNode = this.samples.get(from);
    byNode?.delete(nodeId);
    if (byNode?.size === 0) this.samples.delete(from);
    this.sampleOrder.delete(sampleKey(from, nodeId));
  }

  /** Every sample as [from, nodeId, sample]. */
  *allSamples(): IterableIterator<[string, string, LatencySample]> {
    for (const [from, byNode] of this.samples) {
      for (const [nodeId, sample] of byNode) yield [from, nodeId, sample];
    }
  }

  /**
   * Drops every latency sample and keeps the nodes: a relisting puts back the samples etcd still
   * holds, and puts or removes node by node, so that unchanged nodes keep their place in the
   * routing index (and its built trees) instead of all being indexed anew.
   */
  clearSamples(): void {
    this.samples.clear();
    this.sampleOrder.clear();
  }
}
