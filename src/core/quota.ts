// Token packages and the quota ledger, as pure data and functions.
//
// A package gives a tenant a quota of points per period. A point means the same value on every
// model: the package weighs each model's input, output and cache-hit input tokens in points per
// 1,000 tokens. Route reserves the request's maximum points; Release settles the actual usage
// (never more than was reserved) and returns the rest; a reservation that expires returns its
// points but is kept for a grace period, so that a late Release is still billed, once.
//
// All amounts are integers: points, tokens, and money in 1/10,000 of a currency unit.
//
// The ledger is one tenant's one period. The functions here are what a compare-and-swap on a
// shared ledger applies: they take the ledger as read and return the next one, so that replicas
// (or a retry after a conflict) apply the same change to whatever they read.

import type { Level } from './model.js';

export const OVER_QUOTA_POLICIES = ['REJECT', 'THROTTLE', 'PAY_AS_YOU_GO'] as const;
export type OverQuotaPolicy = (typeof OVER_QUOTA_POLICIES)[number];

/** Points per 1,000 tokens of each kind. */
export interface ModelWeights {
  readonly inputPer1k: number;
  readonly outputPer1k: number;
  readonly cachedInputPer1k: number;
}

export type QuotaPeriod =
  | { readonly kind: 'calendar-month'; readonly timeZone: string }
  /** Back-to-back intervals of `seconds`, the first starting at `anchorMs`. */
  | { readonly kind: 'interval'; readonly seconds: number; readonly anchorMs: number };

export interface Package {
  readonly name: string;
  readonly quotaPoints: number;
  readonly period: QuotaPeriod;
  /** Per model; the entry `*` weighs every model not listed. A model without weights is not in the package. */
  readonly weights: Readonly<Record<string, ModelWeights>>;
  /** Empty: every level. */
  readonly allowedLevels: readonly Level[];
  readonly overQuota: OverQuotaPolicy;
  /** THROTTLE: over quota, at most this many requests per second are routed... */
  readonly throttleRequestsPerS: number;
  /** ...each with its latency budget relaxed to this (cheapest first within it). */
  readonly throttleBudgetMs: number;
  /**
   * Whose report settles the quota: the client's own Release, or only a trusted meter (the
   * serving node's agent, an operator, the gateway). Absent: the client.
   */
  readonly meter?: 'client' | 'trusted';
}

export const MAX_WEIGHT_PER_1K = 1_000_000;
export const MAX_QUOTA_POINTS = 1e15;
/** Money is counted in 1/10,000 of a currency unit. */
export const MONEY_UNITS = 10_000;

/** Tokens of one request. */
export interface TokenCounts {
  readonly inputTokens: number;
  readonly cachedInputTokens: number;
  readonly outputTokens: number;
}

export function weightsFor(pkg: Package, model: string): ModelWeights | undefined {
  return pkg.weights[model] ?? pkg.weights['*'];
}

/** Points for `tokens` (cached tokens are part of input and weigh at the cache-hit rate), rounded up. */
export function pointsFor(weights: ModelWeights, tokens: TokenCounts): number {
  const milli = milliPointsFor(weights, tokens);
  return Math.ceil((milli.input + milli.cached + milli.output) / 1000);
}

/** Thousandths of a point per token kind (uncached input, cache-hit input, output), unrounded. */
export function milliPointsFor(
  weights: ModelWeights | undefined,
  tokens: TokenCounts,
): { readonly input: number; readonly cached: number; readonly output: number } {
  const uncached = Math.max(0, tokens.inputTokens - tokens.cachedInputTokens);
  return {
    input: uncached * (weights?.inputPer1k ?? 0),
    cached: tokens.cachedInputTokens * (weights?.cachedInputPer1k ?? 0),
    output: tokens.outputTokens * (weights?.outputPer1k ?? 0),
  };
}

// ---- Periods -------------------------------------------------------------------------------------

const partsFormat = new Map<string, Intl.DateTimeFormat>();

/** Calendar fields of `ms` in `timeZone`. */
function fieldsIn(
  ms: number,
  timeZone: string,
): { year: number; month: number; day: number; hour: number; minute: number; second: number } {
  let format = partsFormat.get(timeZone);
  if (format === undefined) {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    partsFormat.set(timeZone, format);
  }
  const get = (type: string) => Number(format.formatToParts(ms).find((part) => part.type === type)?.value);
  return {
    year: get('year'),
    month: get('month'),
    day: get('day'),
    hour: get('hour'),
    minute: get('minute'),
    second: get('second'),
  };
}

/** The instant at which the wall clock of `timeZone` reads year-month-01 00:00. */
function monthStartIn(year: number, month: number, timeZone: string): number {
  const asUtc = Date.UTC(year, month - 1, 1);
  let guess = asUtc;
  // Two corrections settle any offset (and a DST change near midnight).
  for (let i = 0; i < 2; i += 1) {
    const f = fieldsIn(guess, timeZone);
    const shown = Date.UTC(f.year, f.month - 1, f.day, f.hour, f.minute, f.second);
    guess -= shown - asUtc;
  }
  return guess;
}

/** True when `timeZone` is an IANA zone this runtime knows. */
export function isTimeZone(timeZone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
    return true;
  } catch {
    return false;
  }
}

/** `2026-11-22T00:00:00Z` (the core reads no clock and builds no Date). */
function utcStamp(ms: number): string {
  const f = fieldsIn(ms, 'UTC');
  const two = (n: number) => String(n).padStart(2, '0');
  return `${f.year}-${two(f.month)}-${two(f.day)}T${two(f.hour)}:${two(f.minute)}:${two(f.second)}Z`;
}

export interface PeriodWindow {
  /** `2026-11` for a calendar month; the start as ISO 8601 for an interval. */
  readonly id: string;
  readonly startMs: number;
  readonly endMs: number;
}

export function periodAt(period: QuotaPeriod, nowMs: number): PeriodWindow {
  if (period.kind === 'interval') {
    const lengthMs = period.seconds * 1000;
    const index = Math.floor((nowMs - period.anchorMs) / lengthMs);
    const startMs = period.anchorMs + index * lengthMs;
    return { id: utcStamp(startMs), startMs, endMs: startMs + lengthMs };
  }
  const { year, month } = fieldsIn(nowMs, period.timeZone);
  const next = month === 12 ? { year: year + 1, month: 1 } : { year, month: month + 1 };
  return {
    id: `${year}-${String(month).padStart(2, '0')}`,
    startMs: monthStartIn(year, month, period.timeZone),
    endMs: monthStartIn(next.year, next.month, period.timeZone),
  };
}

// ---- The ledger ----------------------------------------------------------------------------------

/** List prices of the node a reservation went to, in money units per million tokens. */
export interface UnitPrices {
  readonly inputPerMtok: number;
  readonly outputPerMtok: number;
  readonly cachedInputPerMtok: number;
}

export interface HeldReservation {
  readonly points: number;
  readonly model: string;
  readonly level: Level;
  /** PAY_AS_YOU_GO only: the list prices its over-quota tokens are billed at. */
  readonly prices?: UnitPrices;
  /** Admitted over quota (THROTTLE or PAY_AS_YOU_GO): its points are over-quota points. */
  readonly overQuota: boolean;
  /** Wall clock. */
  readonly expiresAtMs: number;
}

/** Usage of one model at one level in the period: the lines of a bill. */
export interface UsageLine {
  readonly requests: number;
  readonly inputTokens: number;
  readonly cachedInputTokens: number;
  readonly outputTokens: number;
  /** Points counted against the quota. */
  readonly points: number;
  /** Points used beyond the quota (THROTTLE, PAY_AS_YOU_GO). */
  readonly overQuotaPoints: number;
  /** PAY_AS_YOU_GO: tokens beyond the quota, billed at list price, and that money. */
  readonly overQuotaTokens: number;
  readonly overQuotaMoney: number;
  /** REJECT: points of usage that no longer fit the quota (beyond the hold, or a late Release). */
  readonly unbilledPoints: number;
  /** Usage by token kind in thousandths of a point (before each request's rounding up). */
  readonly inputMilliPoints: number;
  readonly cachedInputMilliPoints: number;
  readonly outputMilliPoints: number;
}

/**
 * Holds grouped by the second they expire in (so that expiry drops whole groups), then by a hash
 * of their id into SHARDS (so that adding one copies a small group even at thousands per second).
 */
export type HoldBuckets<T> = Readonly<Record<string, Readonly<Record<string, Readonly<Record<string, T>>>>>>;

const SHARDS = 32;

function shardOf(id: string): string {
  let hash = 2166136261;
  for (let i = 0; i < id.length; i += 1) hash = Math.imul(hash ^ id.charCodeAt(i), 16777619);
  return String((hash >>> 0) % SHARDS);
}

export interface ExpiredHold extends HeldReservation {
  readonly keepUntilMs: number;
}

/**
 * One tenant's one period. Holds are grouped in buckets by expiry time, and the totals are kept
 * beside them, so that a hold, a settlement or an expiry copies one small bucket and the bucket
 * index, never every hold of the tenant: the cost of an admission does not grow with the number
 * of requests in flight.
 */
export interface Ledger {
  readonly tenant: string;
  readonly period: string;
  readonly quotaPoints: number;
  /** Settled points within the quota. */
  readonly usedPoints: number;
  /** Points of outstanding holds admitted within the quota. */
  readonly heldPoints: number;
  /** Outstanding holds (all kinds). */
  readonly heldCount: number;
  /** Keyed by expiry second. */
  readonly outstanding: HoldBuckets<HeldReservation>;
  /** Expired holds, kept until `keepUntilMs` so that a late Release is settled once; keyed by that second. */
  readonly expired: HoldBuckets<ExpiredHold>;
  /** Keyed `<model>|<level>`. */
  readonly lines: Readonly<Record<string, UsageLine>>;
  /** No bucket is due before this second (absent: no holds), so most expiries are one comparison. */
  readonly dueS?: number;
  /** THROTTLE: the tenant's token bucket, shared by every replica through the ledger. */
  readonly throttle?: { readonly tokens: number; readonly atMs: number };
}

export type ThrottleOutcome =
  | { readonly ok: true; readonly ledger: Ledger }
  | { readonly ok: false; readonly retryAfterMs: number };

/**
 * Takes one request's token from the tenant's bucket (`perS` tokens a second, a burst of
 * max(1, perS)); else says when the next token comes.
 */
export function takeThrottleToken(ledger: Ledger, perS: number, nowMs: number): ThrottleOutcome {
  const burst = Math.max(1, perS);
  const bucket = ledger.throttle ?? { tokens: burst, atMs: nowMs };
  const elapsedS = Math.max(0, nowMs - bucket.atMs) / 1000;
  const tokens = Math.min(burst, bucket.tokens + elapsedS * perS);
  if (tokens < 1) return { ok: false, retryAfterMs: Math.ceil(((1 - tokens) / perS) * 1000) };
  return {
    ok: true,
    ledger: { ...ledger, throttle: { tokens: tokens - 1, atMs: Math.max(nowMs, bucket.atMs) } },
  };
}

export const EMPTY_LINE: UsageLine = {
  requests: 0,
  inputTokens: 0,
  cachedInputTokens: 0,
  outputTokens: 0,
  points: 0,
  overQuotaPoints: 0,
  overQuotaTokens: 0,
  overQuotaMoney: 0,
  unbilledPoints: 0,
  inputMilliPoints: 0,
  cachedInputMilliPoints: 0,
  outputMilliPoints: 0,
};

export function emptyLedger(tenant: string, period: string, quotaPoints: number): Ledger {
  return {
    tenant,
    period,
    quotaPoints,
    usedPoints: 0,
    heldPoints: 0,
    heldCount: 0,
    outstanding: {},
    expired: {},
    lines: {},
  };
}

const bucketOf = (ms: number): string => String(Math.floor(ms / 1000));

/** Expired holds one ledger keeps for late Releases, at most (see expireLedger). */
export const MAX_EXPIRED_HOLDS = 1024;

export function outstandingPoints(ledger: Ledger): number {
  return ledger.heldPoints;
}

/** Points still free: quota − used − held within quota. */
export function freePoints(ledger: Ledger): number {
  return ledger.quotaPoints - ledger.usedPoints - ledger.heldPoints;
}

/** The hold `id`, and the second it is filed under. */
function findHold<T>(buckets: HoldBuckets<T>, id: string): { bucket: string; held: T } | undefined {
  const shard = shardOf(id);
  for (const bucket in buckets) {
    const held = buckets[bucket]?.[shard]?.[id];
    if (held !== undefined) return { bucket, held };
  }
  return undefined;
}

export function findOutstanding(ledger: Ledger, id: string): HeldReservation | undefined {
  return findHold(ledger.outstanding, id)?.held ?? findHold(ledger.expired, id)?.held;
}

function withEntry<T>(buckets: HoldBuckets<T>, bucket: string, id: string, value: T): HoldBuckets<T> {
  const shard = shardOf(id);
  const second = buckets[bucket] ?? {};
  return { ...buckets, [bucket]: { ...second, [shard]: { ...second[shard], [id]: value } } };
}

function withoutEntry<T>(buckets: HoldBuckets<T>, bucket: string, id: string): HoldBuckets<T> {
  const shard = shardOf(id);
  const second = { ...buckets[bucket] };
  const rest = { ...second[shard] };
  delete rest[id];
  if (Object.keys(rest).length === 0) delete second[shard];
  else second[shard] = rest;
  const next = { ...buckets };
  if (Object.keys(second).length === 0) delete next[bucket];
  else next[bucket] = second;
  return next;
}

function earliest(buckets: HoldBuckets<unknown>, than: number): number {
  let due = than;
  for (const bucket in buckets) due = Math.min(due, Number(bucket));
  return due;
}

/**
 * Moves holds past their expiry to `expired` (kept `graceMs`) and forgets expired ones past that.
 * Works second by second: holds that expire in the current second wait for the next one.
 */
export function expireLedger(ledger: Ledger, nowMs: number, graceMs: number): Ledger {
  const dueBucket = Math.floor(nowMs / 1000);
  if (ledger.dueS === undefined || ledger.dueS >= dueBucket) return ledger;
  const outstanding: Record<string, HoldBuckets<HeldReservation>[string]> = { ...ledger.outstanding };
  const expired: Record<string, Record<string, Record<string, ExpiredHold>>> = { ...ledger.expired };
  /** Second and shard groups of `expired` copied in this call, so they may be written. */
  const copied = new Set<string>();
  let heldPoints = ledger.heldPoints;
  let heldCount = ledger.heldCount;
  for (const bucket in ledger.expired) if (Number(bucket) < dueBucket) delete expired[bucket];
  for (const bucket in ledger.outstanding) {
    if (Number(bucket) >= dueBucket) continue;
    for (const group of Object.values(ledger.outstanding[bucket] ?? {})) {
      for (const [id, held] of Object.entries(group)) {
        if (!held.overQuota) heldPoints -= held.points;
        heldCount -= 1;
        const keepUntilMs = held.expiresAtMs + graceMs;
        const into = String(Math.floor(keepUntilMs / 1000));
        if (Number(into) < dueBucket) continue;
        const shard = shardOf(id);
        if (!copied.has(into)) {
          expired[into] = { ...expired[into] };
          copied.add(into);
        }
        const second = expired[into] as Record<string, Record<string, ExpiredHold>>;
        if (!copied.has(`${into}/${shard}`)) {
          second[shard] = { ...second[shard] };
          copied.add(`${into}/${shard}`);
        }
        (second[shard] as Record<string, ExpiredHold>)[id] = { ...held, keepUntilMs };
      }
    }
    delete outstanding[bucket];
  }
  // Bounded: beyond MAX_EXPIRED_HOLDS the holds that expired first are forgotten first (their
  // late Releases then count nothing), so that a ledger stays within one etcd value.
  let kept = 0;
  const newestFirst = Object.keys(expired).sort((a, b) => Number(b) - Number(a));
  for (const bucket of newestFirst) {
    if (kept >= MAX_EXPIRED_HOLDS) delete expired[bucket];
    else for (const group of Object.values(expired[bucket] ?? {})) kept += Object.keys(group).length;
  }
  const due = earliest(expired, earliest(outstanding, Number.POSITIVE_INFINITY));
  const { dueS: _, ...rest } = ledger;
  return {
    ...rest,
    heldPoints,
    heldCount,
    outstanding,
    expired,
    ...(Number.isFinite(due) ? { dueS: due } : {}),
  };
}

export type HoldOutcome =
  | { readonly kind: 'held'; readonly ledger: Ledger; readonly overQuota: boolean }
  | { readonly kind: 'over_quota'; readonly freePoints: number };

/**
 * Holds `held.points` for reservation `id`. Within the quota it always succeeds; beyond it, only
 * when `allowOver` (THROTTLE, PAY_AS_YOU_GO) — then the hold is marked over quota.
 */
export function holdPoints(
  ledger: Ledger,
  id: string,
  held: Omit<HeldReservation, 'overQuota'>,
  allowOver: boolean,
): HoldOutcome {
  const free = freePoints(ledger);
  const fits = held.points <= free;
  if (!fits && !allowOver) return { kind: 'over_quota', freePoints: Math.max(0, free) };
  return {
    kind: 'held',
    overQuota: !fits,
    ledger: {
      ...ledger,
      heldPoints: ledger.heldPoints + (fits ? held.points : 0),
      heldCount: ledger.heldCount + 1,
      dueS: Math.min(ledger.dueS ?? Number.POSITIVE_INFINITY, Math.floor(held.expiresAtMs / 1000)),
      outstanding: withEntry(ledger.outstanding, bucketOf(held.expiresAtMs), id, {
        ...held,
        overQuota: !fits,
      }),
    },
  };
}

/** Drops an outstanding hold without settling it (its reservation was never handed out). */
export function dropHold(ledger: Ledger, id: string): Ledger {
  const found = findHold(ledger.outstanding, id);
  if (found === undefined) return ledger;
  return {
    ...ledger,
    heldPoints: ledger.heldPoints - (found.held.overQuota ? 0 : found.held.points),
    heldCount: ledger.heldCount - 1,
    outstanding: withoutEntry(ledger.outstanding, found.bucket, id),
  };
}

/** Charge for `tokens` at `prices` (money units per Mtok), rounded up. */
export function moneyFor(tokens: TokenCounts, prices: UnitPrices): number {
  const uncached = Math.max(0, tokens.inputTokens - tokens.cachedInputTokens);
  const micro =
    BigInt(uncached) * BigInt(prices.inputPerMtok) +
    BigInt(tokens.cachedInputTokens) * BigInt(prices.cachedInputPerMtok) +
    BigInt(tokens.outputTokens) * BigInt(prices.outputPerMtok);
  return Number((micro + 999_999n) / 1_000_000n);
}

export type SettleOutcome =
  | {
      readonly kind: 'settled';
      readonly ledger: Ledger;
      /** Points of the usage (by the package's weights). */
      readonly points: number;
      /** Of those, counted: against the quota, or as over-quota points (the rest is unbilled). */
      readonly counted: number;
      readonly late: boolean;
    }
  /** Not held here: already settled (a repeated Release), or expired longer ago than the grace. */
  | { readonly kind: 'unknown' };

/**
 * Settles reservation `id` with what was used, whatever the hold said: usage counts against the
 * quota as far as the quota has room (always at least the hold, for a hold admitted within the
 * quota), and what does not fit is over-quota points (THROTTLE, PAY_AS_YOU_GO — billed at the
 * node's list price under PAY_AS_YOU_GO) or, under REJECT, unbilled points. So under REJECT the
 * used points never exceed the quota, and usage beyond the hold is never lost from the record.
 */
export function settlePoints(
  ledger: Ledger,
  id: string,
  tokens: TokenCounts,
  weights: ModelWeights | undefined,
  policy: OverQuotaPolicy,
): SettleOutcome {
  const live = findHold(ledger.outstanding, id);
  const late = live === undefined ? findHold(ledger.expired, id) : undefined;
  const held = live?.held ?? late?.held;
  if (held === undefined) return { kind: 'unknown' };
  const milli = milliPointsFor(weights, tokens);
  const points = Math.ceil((milli.input + milli.cached + milli.output) / 1000);
  let heldPoints = ledger.heldPoints;
  let heldCount = ledger.heldCount;
  let outstanding = ledger.outstanding;
  let expired = ledger.expired;
  if (live !== undefined) {
    outstanding = withoutEntry(outstanding, live.bucket, id);
    if (!held.overQuota) heldPoints -= held.points;
    heldCount -= 1;
  } else if (late !== undefined) {
    expired = withoutEntry(expired, late.bucket, id);
  }
  const room = Math.max(0, ledger.quotaPoints - ledger.usedPoints - heldPoints);
  const within = held.overQuota ? 0 : Math.min(points, room);
  const excess = points - within;
  const over = policy === 'REJECT' ? 0 : excess;
  const unbilled = policy === 'REJECT' ? excess : 0;
  // PAY_AS_YOU_GO bills the share of the tokens beyond the quota, kind by kind.
  const beyond = (count: number) => (points === 0 ? 0 : count - Math.floor((count * within) / points));
  const overTokens =
    policy === 'PAY_AS_YOU_GO' && excess > 0
      ? {
          inputTokens: beyond(tokens.inputTokens),
          cachedInputTokens: beyond(tokens.cachedInputTokens),
          outputTokens: beyond(tokens.outputTokens),
        }
      : undefined;
  const overMoney =
    overTokens === undefined
      ? 0
      : moneyFor(
          {
            ...overTokens,
            cachedInputTokens: Math.min(overTokens.cachedInputTokens, overTokens.inputTokens),
          },
          held.prices ?? { inputPerMtok: 0, outputPerMtok: 0, cachedInputPerMtok: 0 },
        );
  const key = `${held.model}|${held.level}`;
  const line = ledger.lines[key] ?? EMPTY_LINE;
  const next: UsageLine = {
    requests: line.requests + 1,
    inputTokens: line.inputTokens + tokens.inputTokens,
    cachedInputTokens: line.cachedInputTokens + tokens.cachedInputTokens,
    outputTokens: line.outputTokens + tokens.outputTokens,
    points: line.points + within,
    overQuotaPoints: line.overQuotaPoints + over,
    overQuotaTokens:
      line.overQuotaTokens +
      (overTokens === undefined ? 0 : overTokens.inputTokens + overTokens.outputTokens),
    overQuotaMoney: line.overQuotaMoney + overMoney,
    unbilledPoints: line.unbilledPoints + unbilled,
    inputMilliPoints: line.inputMilliPoints + milli.input,
    cachedInputMilliPoints: line.cachedInputMilliPoints + milli.cached,
    outputMilliPoints: line.outputMilliPoints + milli.output,
  };
  return {
    kind: 'settled',
    points,
    counted: within + over,
    late: late !== undefined,
    ledger: {
      ...ledger,
      usedPoints: ledger.usedPoints + within,
      heldPoints,
      heldCount,
      outstanding,
      expired,
      lines: { ...ledger.lines, [key]: next },
    },
  };
}
