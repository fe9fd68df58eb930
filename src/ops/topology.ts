// Topology files: regions, model list prices, capacity profiles and nodes, in YAML.
// A node takes its GPUs and model offers from a profile; its prices are the model's list price
// times the profile's (or the node's own) price factor. See simulations/topologies/*.yaml.

import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { curveRate } from '../core/cost.js';
import {
  type EngineCurves,
  type LatLon,
  LEVELS,
  MAX_MODEL_CHARS,
  MODEL_PATTERN,
  type ModelOffer,
  NODE_ID_PATTERN,
  type NodeSpec,
} from '../core/model.js';
import { engineCurves, profileFromCurves } from './gpu-profile.js';
import { ConfigError, YamlSource } from './yaml-config.js';

const positive = z.number().positive();
/** A model name as the API accepts it (RouteRequest.model), so that every route to it can be released. */
const modelName = z
  .string()
  .max(MAX_MODEL_CHARS, `a model name has at most ${MAX_MODEL_CHARS} characters`)
  .regex(MODEL_PATTERN, 'a model name must match [A-Za-z0-9][A-Za-z0-9._:/@+-]*');
const latitude = z.number().min(-90).max(90);
const longitude = z.number().min(-180).max(180);

const regionSchema = z.strictObject({ name: z.string().min(1), lat: latitude, lon: longitude });

const priceSchema = z.strictObject({
  input_per_mtok: z.number().nonnegative(),
  output_per_mtok: z.number().nonnegative(),
  cached_input_per_mtok: z.number().nonnegative(),
});

const gpuSchema = z.strictObject({
  type: z.string().min(1),
  count: z.number().int().positive(),
  memory_gib: positive,
});

/**
 * Served by measured engines instead of fixed rates: `replicas` engines of a GPU profile
 * (simulations/profiles/<gpu>, or a path relative to this file) for a model shape, each running up
 * to max_batch requests. max_concurrency is then replicas × max_batch, and the rates are the
 * profile's (the router's prefill estimate follows its curve).
 */
const engineSchema = z.strictObject({
  gpu: z.string().min(1),
  shape: z.enum(['8b', '32b']),
  replicas: z.number().int().positive().max(100_000),
  max_batch: z.number().int().positive().max(4096).default(64),
  prefill_budget: z.number().int().positive().default(4096),
});

const offerSchema = z
  .strictObject({
    max_concurrency: z.number().int().positive().optional(),
    max_queue: z.number().int().nonnegative(),
    prefill_tokens_per_s: positive.optional(),
    decode_tokens_per_s: positive.optional(),
    engine: engineSchema.optional(),
  })
  .refine(
    (o) =>
      o.engine !== undefined ||
      (o.max_concurrency !== undefined &&
        o.prefill_tokens_per_s !== undefined &&
        o.decode_tokens_per_s !== undefined),
    'needs max_concurrency, prefill_tokens_per_s and decode_tokens_per_s, or an engine',
  );

const profileSchema = z.strictObject({
  price_factor: positive.default(1),
  gpus: z.array(gpuSchema).min(1),
  offers: z.record(modelName, offerSchema),
});

const nodeSchema = z.strictObject({
  id: z.string().regex(NODE_ID_PATTERN, 'must match [a-z0-9][a-z0-9.-]{0,62}'),
  level: z.enum(LEVELS),
  region: z.string().min(1),
  parent: z.string().optional(),
  endpoint: z.string().optional(),
  name: z.string().optional(),
  lat: latitude,
  lon: longitude,
  profile: z.string().min(1),
  price_factor: positive.optional(),
  labels: z.record(z.string(), z.string()).optional(),
});

export const topologySchema = z.strictObject({
  version: z.literal(1),
  regions: z.record(z.string().min(1), regionSchema),
  models: z.record(modelName, priceSchema),
  profiles: z.record(z.string().min(1), profileSchema),
  nodes: z.array(nodeSchema).min(1),
});

export interface Topology {
  readonly file: string;
  readonly nodes: readonly NodeSpec[];
  readonly regionCentroids: ReadonlyMap<string, LatLon>;
}

/** Rounds a price to 1e-6 CNY per Mtok so that YAML factors like 0.7 do not print as 0.69999. */
const roundPrice = (value: number): number => Math.round(value * 1e6) / 1e6;

/** Loads and validates a topology; throws ConfigError naming file, line and field of every problem. */
export async function loadTopology(file: string): Promise<Topology> {
  return buildTopology(await YamlSource.load(file));
}

export function parseTopology(file: string, text: string): Topology {
  return buildTopology(YamlSource.parse(file, text));
}

export type TopologyDoc = z.output<typeof topologySchema>;

/** Parses and validates a topology file into its document form (before expansion). */
export async function loadTopologyDoc(file: string): Promise<TopologyDoc> {
  return (await YamlSource.load(file)).validate(topologySchema);
}

function buildTopology(source: YamlSource): Topology {
  return expandTopology(source.validate(topologySchema), source.file, (path, message) =>
    source.problem(path, message),
  );
}

/**
 * The slots and rates of an offer served by `replicas` engines with `curves`: every engine's batch,
 * the prefill rate of its curve, and the decode rate per sequence of a full batch at 1k context
 * each (the router's queue estimate applies when every slot is taken, and then the batch is full).
 */
export function engineServed(
  curves: EngineCurves,
  replicas: number,
): Pick<ModelOffer, 'maxConcurrency' | 'prefillTokensPerS' | 'decodeTokensPerS' | 'engine'> {
  return {
    maxConcurrency: replicas * curves.maxBatch,
    prefillTokensPerS: curveRate(curves.prefill),
    decodeTokensPerS: 1000 / profileFromCurves(curves).decodeStepMs(curves.maxBatch, curves.maxBatch * 1024),
    engine: { curves, replicas },
  };
}

/** Checks cross-references and expands every node's profile into a NodeSpec. */
export function expandTopology(
  doc: TopologyDoc,
  file: string,
  problem: (path: (string | number)[], message: string) => string,
): Topology {
  const source = { problem };
  const problems: string[] = [];
  for (const [name, profile] of Object.entries(doc.profiles)) {
    for (const model of Object.keys(profile.offers)) {
      if (!(model in doc.models)) {
        problems.push(
          source.problem(
            ['profiles', name, 'offers', model],
            `names model ${model}, which is not under models`,
          ),
        );
      }
    }
  }
  const ids = new Set<string>();
  doc.nodes.forEach((node, index) => {
    const at = (field: string) => ['nodes', index, field];
    if (ids.has(node.id)) problems.push(source.problem(at('id'), `${node.id} is used by an earlier node`));
    ids.add(node.id);
    if (!(node.region in doc.regions)) {
      problems.push(source.problem(at('region'), `${node.region} is not under regions`));
    }
    if (!(node.profile in doc.profiles)) {
      problems.push(source.problem(at('profile'), `${node.profile} is not under profiles`));
    }
  });
  doc.nodes.forEach((node, index) => {
    if (node.parent !== undefined && !ids.has(node.parent)) {
      problems.push(
        source.problem(['nodes', index, 'parent'], `${node.parent} is not a node of this topology`),
      );
    }
  });
  if (problems.length > 0) throw new ConfigError(problems);

  const engineOf = (
    profileName: string,
    model: string,
    engine: z.output<typeof engineSchema>,
  ): EngineCurves => {
    const dir = engine.gpu.includes('/')
      ? resolve(dirname(file), engine.gpu)
      : resolve(dirname(file), '..', 'profiles', engine.gpu);
    try {
      return engineCurves(dir, engine.shape, {
        maxBatch: engine.max_batch,
        prefillBudget: engine.prefill_budget,
      });
    } catch (error) {
      throw new ConfigError([
        problem(['profiles', profileName, 'offers', model, 'engine', 'gpu'], (error as Error).message),
      ]);
    }
  };
  const nodes = doc.nodes.map((node): NodeSpec => {
    const profile = doc.profiles[node.profile] as z.output<typeof profileSchema>;
    const factor = node.price_factor ?? profile.price_factor;
    const models = Object.entries(profile.offers).map(([model, offer]): ModelOffer => {
      const list = doc.models[model] as z.output<typeof priceSchema>;
      const curves = offer.engine === undefined ? undefined : engineOf(node.profile, model, offer.engine);
      return {
        model,
        maxQueue: offer.max_queue,
        ...(curves === undefined
          ? {
              maxConcurrency: offer.max_concurrency as number,
              prefillTokensPerS: offer.prefill_tokens_per_s as number,
              decodeTokensPerS: offer.decode_tokens_per_s as number,
            }
          : engineServed(curves, offer.engine?.replicas ?? 1)),
        price: {
          inputPerMtok: roundPrice(list.input_per_mtok * factor),
          outputPerMtok: roundPrice(list.output_per_mtok * factor),
          cachedInputPerMtok: roundPrice(list.cached_input_per_mtok * factor),
        },
      };
    });
    return {
      id: node.id,
      level: node.level,
      region: node.region,
      parentId: node.parent ?? '',
      endpoint: node.endpoint ?? `https://${node.id}.infer.example.net`,
      location: { lat: node.lat, lon: node.lon },
      gpus: profile.gpus.map((gpu) => ({ type: gpu.type, count: gpu.count, memoryGib: gpu.memory_gib })),
      models,
      labels: { ...(node.name ? { name: node.name } : {}), profile: node.profile, ...node.labels },
    };
  });
  return {
    file,
    nodes,
    regionCentroids: new Map(
      Object.entries(doc.regions).map(([code, r]) => [code, { lat: r.lat, lon: r.lon }]),
    ),
  };
}
