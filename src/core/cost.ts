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

/** Only uncached input tokens are prefilled; cache hits skip prefill. */
export function prefillMs(size: RequestSize, offer: ModelOffer): number {
  return prefillMsAt(size, offer.prefillTokensPerS);
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
 * Expected wait for a slot when `load` requests are already on the offer. Zero while a slot is
 * free; otherwise the requests ahead drain `maxConcurrency` at a time, each taking about as long
 * as this request would (its own service time is the proxy for the unknown ones ahead).
 */
export function queueMs(size: RequestSize, offer: ModelOffer, load: number): number {
  if (load < offer.maxConcurrency) return 0;
  const ahead = load - offer.maxConcurrency + 1;
  return (ahead / offer.maxConcurrency) * serviceMs(size, offer);
}

/** Cost in currency units: uncached input, cache-hit input and output, each at its own rate. */
export function requestCost(size: RequestSize, price: Price, multiplier: number): number {
  return costAt(size, price.inputPerMtok, price.outputPerMtok, price.cachedInputPerMtok, multiplier);
}

/**
 * requestCost on prices given one by one. Never larger for smaller prices, so the candidate index
 * bounds a cell with its cheapest price of each kind through this very formula.
 */
export function costAt(
  size: RequestSize,
  inputPerMtok: number,
  outputPerMtok: number,
  cachedInputPerMtok: number,
  multiplier: number,
): number {
  const perMillion =
    (size.inputTokens - size.cachedInputTokens) * inputPerMtok +
    size.cachedInputTokens * cachedInputPerMtok +
    size.maxOutputTokens * outputPerMtok;
  return (perMillion / 1e6) * multiplier;
}
