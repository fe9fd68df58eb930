// Reading an inference engine's Prometheus text (parse-prometheus-text-format) into what cpn
// routes on, per model: requests running and waiting, KV-cache usage, prefix-cache hit rate.
//
//   vLLM    vllm:num_requests_running, vllm:num_requests_waiting, vllm:kv_cache_usage_perc (older
//           releases: vllm:gpu_cache_usage_perc), vllm:prefix_cache_hits_total /
//           vllm:prefix_cache_queries_total; per model by the model_name label
//   SGLang  sglang:num_running_reqs, sglang:num_queue_reqs, sglang:token_usage,
//           sglang:cache_hit_rate; per model by model_name
//   TGI     tgi_batch_current_size, tgi_queue_size; one model, no KV gauge (unknown, not zero)
//
// `auto` detects the engine from the families present.

import parsePrometheusTextFormat from 'parse-prometheus-text-format';

export const ENGINES = ['vllm', 'sglang', 'tgi'] as const;
export type Engine = (typeof ENGINES)[number];

export interface ModelReading {
  readonly running: number;
  readonly waiting: number;
}

export interface EngineReading {
  readonly engine: Engine;
  /** Per model served (the node's model names). */
  readonly models: ReadonlyMap<string, ModelReading>;
  /** 0..1, undefined when the engine does not say (TGI). */
  readonly kvCacheUsage: number | undefined;
  /** 0..1 since the engine started, undefined when unknown. */
  readonly prefixCacheHitRate: number | undefined;
}

export class EngineMetricsError extends Error {}

interface Family {
  readonly name: string;
  readonly metrics: readonly {
    readonly value?: string;
    readonly labels?: Readonly<Record<string, string>>;
  }[];
}

const FAMILIES: Readonly<Record<Engine, readonly string[]>> = {
  vllm: ['vllm:num_requests_running', 'vllm:num_requests_waiting'],
  sglang: ['sglang:num_running_reqs', 'sglang:num_queue_reqs'],
  tgi: ['tgi_batch_current_size', 'tgi_queue_size'],
};

function parse(text: string): Map<string, Family> {
  let families: Family[];
  try {
    families = parsePrometheusTextFormat(text);
  } catch (error) {
    throw new EngineMetricsError(`not Prometheus text format: ${(error as Error).message}`);
  }
  return new Map(families.map((family) => [family.name, family]));
}

/** Which engine wrote these families, if any of the three. */
export function detectEngine(families: ReadonlyMap<string, unknown>): Engine | undefined {
  return ENGINES.find((engine) => FAMILIES[engine].some((name) => families.has(name)));
}

const number = (value: string | undefined): number => {
  const parsed = Number(value);
  return Number.isFinite(parsed) && parsed >= 0 ? parsed : 0;
};

/** Sum of a family's samples per model_name label (samples without it count for `fallbackModel`). */
function perModel(family: Family | undefined, fallbackModel: string): Map<string, number> {
  const sums = new Map<string, number>();
  for (const sample of family?.metrics ?? []) {
    const model = sample.labels?.model_name ?? fallbackModel;
    sums.set(model, (sums.get(model) ?? 0) + number(sample.value));
  }
  return sums;
}

/** Mean of a gauge over its samples (engines with several workers print one per worker). */
function mean(family: Family | undefined): number | undefined {
  const samples = family?.metrics ?? [];
  if (samples.length === 0) return undefined;
  return samples.reduce((sum, sample) => sum + number(sample.value), 0) / samples.length;
}

const clamp01 = (value: number | undefined) =>
  value === undefined ? undefined : Math.min(1, Math.max(0, value));

/**
 * Reads an engine's metrics for the node's `models`. Throws EngineMetricsError when the text is not
 * Prometheus format or holds none of the engine's families.
 */
export function readEngineMetrics(
  text: string,
  engine: Engine | 'auto',
  models: readonly string[],
): EngineReading {
  const families = parse(text);
  const detected = engine === 'auto' ? detectEngine(families) : engine;
  if (detected === undefined || !FAMILIES[detected].some((name) => families.has(name))) {
    throw new EngineMetricsError(
      engine === 'auto'
        ? `no vLLM, SGLang or TGI metrics found (looked for ${ENGINES.flatMap((e) => FAMILIES[e]).join(', ')})`
        : `no ${engine} metrics found (looked for ${FAMILIES[engine].join(', ')})`,
    );
  }
  const only = models[0] ?? '';
  let running: Map<string, number>;
  let waiting: Map<string, number>;
  let kvCacheUsage: number | undefined;
  let prefixCacheHitRate: number | undefined;
  switch (detected) {
    case 'vllm': {
      running = perModel(families.get('vllm:num_requests_running'), only);
      waiting = perModel(families.get('vllm:num_requests_waiting'), only);
      kvCacheUsage = mean(
        families.get('vllm:kv_cache_usage_perc') ?? families.get('vllm:gpu_cache_usage_perc'),
      );
      const hits = mean(
        families.get('vllm:prefix_cache_hits_total') ?? families.get('vllm:prefix_cache_hits'),
      );
      const queries = mean(
        families.get('vllm:prefix_cache_queries_total') ?? families.get('vllm:prefix_cache_queries'),
      );
      prefixCacheHitRate =
        hits !== undefined && queries !== undefined && queries > 0 ? hits / queries : undefined;
      break;
    }
    case 'sglang':
      running = perModel(families.get('sglang:num_running_reqs'), only);
      waiting = perModel(families.get('sglang:num_queue_reqs'), only);
      kvCacheUsage = mean(families.get('sglang:token_usage'));
      prefixCacheHitRate = mean(families.get('sglang:cache_hit_rate'));
      break;
    case 'tgi':
      // One model per TGI server, no model label.
      running = new Map([[only, mean(families.get('tgi_batch_current_size')) ?? 0]]);
      waiting = new Map([[only, mean(families.get('tgi_queue_size')) ?? 0]]);
      kvCacheUsage = undefined;
      prefixCacheHitRate = undefined;
      break;
  }
  return {
    engine: detected,
    models: new Map(
      models.map((model) => [
        model,
        { running: Math.round(running.get(model) ?? 0), waiting: Math.round(waiting.get(model) ?? 0) },
      ]),
    ),
    kvCacheUsage: clamp01(kvCacheUsage),
    prefixCacheHitRate: clamp01(prefixCacheHitRate),
  };
}
