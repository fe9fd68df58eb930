// Time and money of one request on one model offer: prefill, queueing and price.

import type { ModelOffer, NodeSpec, Price } from './model.js';

export interface RequestSize {
  readonly inputTokens: number;
  readonly cachedInputTokens: number;
  readonly maxOutputTokens: number;
}

/**
 * Time-of-use pricing hook: `at` gives the factor applied to a node's list price for a model at
 * `nowMs` (1 = list price). It must be pure, finite and > 0, and depend on the node's level and
 * region only: the candidate index groups nodes by (level, region) and prices a whole group with
 * one factor, so a hook that looked at anything else would be applied wrongly.
 */
export interface PriceMultiplier {
  at(where: Pick<NodeSpec, 'level' | 'region'>, model: string, nowMs: number): number;
  /**
   * Optional: a time after `nowMs` before which no factor changes (the next window edge), so a
   * caller may reuse what it derived from the factors until then. Without it, nothing is reused.
   */
  stableUntil?(nowMs: number): number;
}

export const LIST_PRICE: PriceMultiplier = { at: () => 1, stableUntil: () => Number.POSITIVE_INFINITY };

/**
 * The rate prefillMs divides by, or NaN when the offer prefills by an engine curve (then the curve
 * decides). What the index keeps of an offer to work out its prefill without reading it.
 */
export function flatPrefillRate(offer: ModelOffer): number {
  return offer.engine?.curves.prefill === undefined ? offer.prefillTokensPerS : Number.NaN;
}

/** Only uncached input tokens are prefilled; cache hits skip prefill. */
export function prefillMs(size: RequestSize, offer: ModelOffer): number {
  const curve = offer.engine?.curves.prefill;
  if (curve === undefined) return prefillMsAt(size, offer.prefillTokensPerS);
  const tokens = size.inputTokens - size.cachedInputTokens;
  return tokens <= 0 ? 0 : curvePrefillMs(curve, tokens);
}

/**
 * A measured prefill curve read at `tokens` (> 0): no shorter than the shortest prompt measured (an
 * engine's floor: launch and graph overheads); between points, linear; beyond the longest, its last
 * segment and never faster than that prompt's rate. The router and the simulator's engines both
 * read curves this way.
 */
export function curvePrefillMs(
  curve: { readonly tokens: readonly number[]; readonly ms: readonly number[] },
  tokens: number,
): number {
  if (tokens <= (curve.tokens[0] as number)) return curve.ms[0] as number;
  const lastTokens = curve.tokens[curve.tokens.length - 1] as number;
  const lastMs = curve.ms[curve.ms.length - 1] as number;
  return tokens <= lastTokens
    ? interpolate(curve.tokens, curve.ms, tokens)
    : Math.max(interpolate(curve.tokens, curve.ms, tokens), (lastMs * tokens) / lastTokens);
}

/** y at x on the polyline (xs ascending), extended by its end segments. */
export function interpolate(xs: readonly number[], ys: readonly number[], x: number): number {
  if (xs.length === 0) return Number.NaN;
  if (xs.length === 1) return ys[0] as number;
  let i = 1;
  while (i < xs.length - 1 && (xs[i] as number) < x) i += 1;
  const x0 = xs[i - 1] as number;
  const x1 = xs[i] as number;
  const y0 = ys[i - 1] as number;
  const y1 = ys[i] as number;
  return y0 + ((y1 - y0) * (x - x0)) / (x1 - x0);
}

/**
 * The fastest prefill rate a curve reaches at its points, in tokens per second. Between points
 * tokens / time is monotone, below the first the time is floored and beyond the last it never
 * beats the last point's rate, so tokens / this rate never exceeds prefillMs: the candidate
 * index's rate-based bounds stay lower bounds.
 */
export function curveRate(curve: {
  readonly tokens: readonly number[];
  readonly ms: readonly number[];
}): number {
  let best = 0;
  for (let i = 0; i < curve.tokens.length; i += 1)
    best = Math.max(best, ((curve.tokens[i] as number) / (curve.ms[i] as number)) * 1000);
  return best;
}

/** Prefill time at `tokensPerS`; never larger at a faster rate (the index's bounds rely on it). */
export function prefillMsAt(size: RequestSize, tokensPerS: number): number {
  return ((size.inputTokens - size.cachedInputTokens) / tokensPerS) * 1000;
}

/** How long the request occupies a slot: prefill, then decoding every output token. */
export function serviceMs(size: RequestSize, offer: ModelOffer): number {
  return prefillMs(size, offer) + (size.maxOutputTokens / offer.decodeTokensPerS) * 1000;
}

/**
 * The load below which `offer` queues nothing (queueMs is 0) and has room (a load under its slots
 * and queue): the least of the two; NaN, below which no load is, when either is not a number.
 * What the index keeps of an offer to estimate an idle node without reading it.
 */
export function roomBelow(offer: ModelOffer): number {
  return Math.min(offer.maxConcurrency, offer.maxConcurrency + offer.maxQueue);
}

/**
 * Expected wait for a slot when `load` requests are already on the offer. Zero while a slot is
 * free (see roomBelow); otherwise the requests ahead drain `maxConcurrency` at a time, each taking
 * about as long as this request would (its own service time is the proxy for the unknown ones
 * ahead). On measured engines, at the rate a full engine completes requests (see below).
 */
export function queueMs(size: RequestSize, offer: ModelOffer, load: number): number {
  if (load < offer.maxConcurrency) return 0;
  const ahead = load - offer.maxConcurrency + 1;
  const engine = offer.engine;
  if (engine !== undefined) {
    // A continuous-batching engine finishes a request every (its prefill, which stalls the whole
    // batch, + its share of the batch's decode steps): the prefill does not divide by the batch.
    const batch = engine.curves.maxBatch;
    const perRequestMs =
      prefillMs(size, offer) + (size.maxOutputTokens * 1000) / offer.decodeTokensPerS / batch;
    return (ahead * perRequestMs) / engine.replicas;
  }
  return (ahead / offer.maxConcurrency) * serviceMs(size, offer);
}

/**
 * queueMs for every request at once: with `load` requests on the offer, a request's queue is
 * `perPrefillMs ×` its prefill `+ perOutputToken ×` its output tokens (as queueMs works it out,
 * up to rounding; change the two together). Both 0 while a slot is free.
 */
export function queueRates(
  offer: ModelOffer,
  load: number,
): { perPrefillMs: number; perOutputToken: number } {
  if (load < offer.maxConcurrency) return { perPrefillMs: 0, perOutputToken: 0 };
  const ahead = load - offer.maxConcurrency + 1;
  const engine = offer.engine;
  if (engine !== undefined)
    return {
      perPrefillMs: ahead / engine.replicas,
      perOutputToken: (ahead * 1000) / offer.decodeTokensPerS / engine.curves.maxBatch / engine.replicas,
    };
  const perRequest = ahead / offer.maxConcurrency;
  return { perPrefillMs: perRequest, perOutputToken: perRequest * (1000 / offer.decodeTokensPerS) };
}

/** Cost in currency units: uncached input, cache-hit input and output, each at its own rate. */
export function requestCost(size: RequestSize, price: Price, multiplier: number): number {
  return costAt(size, price.inputPerMtok, price.outputPerMtok, price.cachedInputPerMtok, multiplier);
}

/**
 * requestCost on prices given one by one. Never larger for smaller prices or a smaller multiplier,
 * so the candidate index bounds a cell with its cheapest price of each kind through this very
 * formula. Each price is multiplied first: an index keyed by prices times multipliers (the prices
 * decisions pay) then bounds a cell with exactly the cost of its cheapest node, and equal costs
 * tie exactly.
 */
export function costAt(
  size: RequestSize,
  inputPerMtok: number,
  outputPerMtok: number,
  cachedInputPerMtok: number,
  multiplier: number,
): number {
  const perMillion =
    (size.inputTokens - size.cachedInputTokens) * (inputPerMtok * multiplier) +
    size.cachedInputTokens * (cachedInputPerMtok * multiplier) +
    size.maxOutputTokens * (outputPerMtok * multiplier);
  return perMillion / 1e6;
}
