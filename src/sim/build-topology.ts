// The topology a scenario runs on: loaded from its file or generated, then scaled by its
// capacity_scale. Shared by the simulator's main thread and its worker threads.

import { resolve } from 'node:path';
import type { NodeSpec } from '../core/model.js';
import { loadTopology, type Topology } from '../ops/topology.js';
import { generateNational } from './national.js';
import type { Scenario } from './scenario.js';

export async function buildTopology(scenario: Scenario): Promise<Topology> {
  const t = scenario.topology;
  const topology = await loadOrGenerate(scenario);
  if (t.capacity_scale === 1) return topology;
  const scale = (n: number, min: number) => Math.max(min, Math.round(n * t.capacity_scale));
  return {
    ...topology,
    nodes: topology.nodes.map((spec) => ({
      ...spec,
      models: spec.models.map((offer) => ({
        ...offer,
        maxConcurrency: scale(offer.maxConcurrency, 1),
        maxQueue: scale(offer.maxQueue, 0),
      })),
    })),
  };
}

/** `topology` with `nodes` added (none: the same object). */
export function withNodes(topology: Topology, nodes: readonly NodeSpec[]): Topology {
  return nodes.length === 0 ? topology : { ...topology, nodes: [...topology.nodes, ...nodes] };
}

async function loadOrGenerate(scenario: Scenario): Promise<Topology> {
  const t = scenario.topology;
  // Paths in a scenario are relative to the working directory.
  const path = (file: string) => (file.startsWith('/') ? file : resolve(file));
  if ('file' in t) return loadTopology(path(t.file));
  return generateNational({
    base: path(t.base),
    hubs: t.hubs,
    provinces: t.provinces,
    edgesPerProvince: t.edges_per_province,
    terminalsPerEdge: t.terminals_per_edge,
    priceFactors: t.price_factors,
  });
}
