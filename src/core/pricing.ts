// Time-of-use pricing: rules that scale list prices by level, region and model, optionally only
// within a daily window (e.g. half price from 00:00 to 08:00 China time). Operators schedule a
// new policy for a future time; every replica switches at that time on its own clock.

import type { PriceMultiplier } from './cost.js';
import type { Level, NodeSpec } from './model.js';

export interface PriceRule {
  /** Undefined: any level / region / model. */
  readonly level: Level | undefined;
  readonly region: string | undefined;
  readonly model: string | undefined;
  /** Multiplies the list price, > 0. Several matching rules multiply together. */
  readonly factor: number;
  /** Daily window [fromHour, toHour) in the policy's local time; wraps past midnight if from > to. */
  readonly window: { readonly fromHour: number; readonly toHour: number } | undefined;
}

export interface PricingPolicy {
  readonly rules: readonly PriceRule[];
  /** Offset of the policy's local time from UTC, in hours (China: 8). */
  readonly utcOffsetHours: number;
}

export interface ScheduledPricing {
  readonly id: string;
  readonly atMs: number;
  readonly policy: PricingPolicy;
}

export interface PricingState {
  readonly current: PricingPolicy;
  readonly scheduled: readonly ScheduledPricing[];
}

export const LIST_PRICES: PricingPolicy = { rules: [], utcOffsetHours: 8 };

/** The policy in force at `nowMs`: the latest scheduled change due by then, else the current one. */
export function effectivePolicy(state: PricingState, nowMs: number): PricingPolicy {
  let due: ScheduledPricing | undefined;
  for (const change of state.scheduled) {
    if (change.atMs > nowMs) continue;
    if (due === undefined || change.atMs > due.atMs || (change.atMs === due.atMs && change.id > due.id))
      due = change;
  }
  return due?.policy ?? state.current;
}

/** Changes that are due by `nowMs`, oldest first: what the leader folds into the current policy. */
export function duePricing(state: PricingState, nowMs: number): ScheduledPricing[] {
  return state.scheduled
    .filter((change) => change.atMs <= nowMs)
    .sort((a, b) => a.atMs - b.atMs || (a.id < b.id ? -1 : 1));
}

function hourOfDay(nowMs: number, utcOffsetHours: number): number {
  const dayMs = 24 * 3600 * 1000;
  const localMs = (((nowMs + utcOffsetHours * 3600 * 1000) % dayMs) + dayMs) % dayMs;
  return localMs / 3600_000;
}

function inWindow(window: PriceRule['window'], hour: number): boolean {
  if (window === undefined) return true;
  const { fromHour, toHour } = window;
  return fromHour <= toHour ? hour >= fromHour && hour < toHour : hour >= fromHour || hour < toHour;
}

/** The multiplier hook for the scheduler: rules match on level, region and model only. */
export function policyMultiplier(policy: PricingPolicy): PriceMultiplier {
  if (policy.rules.length === 0) return { at: () => 1, stableUntil: () => Number.POSITIVE_INFINITY };
  const edges = [
    ...new Set(
      policy.rules.flatMap((rule) => (rule.window ? [rule.window.fromHour, rule.window.toHour] : [])),
    ),
  ];
  return {
    stableUntil(nowMs: number): number {
      if (edges.length === 0) return Number.POSITIVE_INFINITY;
      const hour = hourOfDay(nowMs, policy.utcOffsetHours);
      let next = 24;
      for (const edge of edges) {
        const ahead = (((edge - hour) % 24) + 24) % 24;
        if (ahead > 0) next = Math.min(next, ahead);
      }
      // A little early, never late: rounding must not carry the reuse past an edge.
      return nowMs + Math.max(0, next * 3_600_000 - 1);
    },
    at(node: Pick<NodeSpec, 'level' | 'region'>, model: string, nowMs: number): number {
      const hour = hourOfDay(nowMs, policy.utcOffsetHours);
      let factor = 1;
      for (const rule of policy.rules) {
        if (rule.level !== undefined && rule.level !== node.level) continue;
        if (rule.region !== undefined && rule.region !== node.region) continue;
        if (rule.model !== undefined && rule.model !== model) continue;
        if (!inWindow(rule.window, hour)) continue;
        factor *= rule.factor;
      }
      return factor;
    },
  };
}
