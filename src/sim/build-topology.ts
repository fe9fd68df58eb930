// The topology a scenario runs on: loaded from its file or generated, then scaled by its
// capacity_scale. Shared by the simulator's main thread and its worker threads.

import { resolve } from 'node:path';
import type { ModelOffer, NodeSpec } from '../core/model.js';
import { engineServed, loadTopology, type Topology } from '../ops/topology.js';
import { generateNational } from './national.js';
import type { NodeModel, Scenario } from './scenario.js';

export async function buildTopology(scenario: Scenario): Promise<Topology> {
  const scaled = await scaledTopology(scenario);
  return { ...scaled, nodes: servedAs(scaled.nodes, scenario.node_model) };
}

/**
 * `nodes` as `model` serves them: with `fixed`, every offer at its fixed rates, a measured
 * engine's curves dropped (see Scenario node_model); with `measured`, as they are. Nodes a plan
 * adds go through it too.
 */
export function servedAs(nodes: readonly NodeSpec[], model: NodeModel): readonly NodeSpec[] {
  if (model === 'measured') return nodes;
  return nodes.map((spec) =>
    spec.models.every((offer) => offer.engine === undefined)
      ? spec
      : { ...spec, models: spec.models.map(({ engine: _engine, ...offer }) => offer) },
  );
}

async function scaledTopology(scenario: Scenario): Promise<Topology> {
  const t = scenario.topology;
  const topology = await loadOrGenerate(scenario);
  if (t.capacity_scale === 1) return topology;
  const scale = (n: number, min: number) => Math.max(min, Math.round(n * t.capacity_scale));
  return {
    ...topology,
    nodes: topology.nodes.map((spec) => ({
      ...spec,
      models: spec.models.map((offer) =>
        offer.engine === undefined
          ? { ...offer, maxConcurrency: scale(offer.maxConcurrency, 1), maxQueue: scale(offer.maxQueue, 0) }
          : {
              ...offer,
              ...scaledEngines(offer.engine, t.capacity_scale),
              maxQueue: scale(offer.maxQueue, 0),
            },
      ),
    })),
  };
}

/**
 * An engine-served offer's share of a slice: whole engines while at least one is left, else one
 * engine with that share of its batch — so that the router's slots and the simulated engines keep
 * the same capacity, and a small site is not simulated at ten times its share. (A smaller batch
 * runs each step faster than a full one would: such a slice is slightly optimistic per request.)
 */
export function scaledEngines(engine: NonNullable<ModelOffer['engine']>, scale: number) {
  const engines = engine.replicas * scale;
  if (engines >= 1) return engineServed(engine.curves, Math.round(engines));
  const maxBatch = Math.max(1, Math.round(engine.curves.maxBatch * engines));
  return engineServed({ ...engine.curves, maxBatch }, 1);
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
