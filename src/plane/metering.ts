// Quota as the control plane applies it: admission before the decision (is the model in the
// package, is there quota left, may an over-quota request still go), the hold after it (the
// request's maximum points, taken from the shared ledger by compare-and-swap), and the settlement
// at Release. The arithmetic is core/quota.ts; this file decides which ledger and when.

import type { Level } from '../core/model.js';
import {
  dropHold,
  emptyLedger,
  expireLedger,
  findOutstanding,
  freePoints,
  holdPoints,
  type Ledger,
  MONEY_UNITS,
  type ModelWeights,
  type Package,
  type PeriodWindow,
  periodAt,
  pointsFor,
  settlePoints,
  type TokenCounts,
  takeThrottleToken,
  type UnitPrices,
  weightsFor,
} from '../core/quota.js';
import type { Refusal, RouteRequest } from '../core/routing/index.js';
import type { AccountsStore } from '../store/accounts.js';
import type { LedgerStore } from '../store/ledgers.js';

/** Reservations one tenant may hold at once (each is an entry of its ledger). */
export const MAX_OUTSTANDING_PER_TENANT = 2048;
/** Settled Releases each ledger lists, newest last (the bounded recent log). */
export const RECENT_RELEASES = 256;
/** How long after its expiry a reservation can still be released (and billed). */
export const DEFAULT_LATE_RELEASE_GRACE_MS = 10 * 60_000;

export interface RecentRelease extends TokenCounts {
  readonly id: string;
  readonly atMs: number;
  readonly points: number;
}

/** The ledger as stored: core's ledger plus the recent log. */
export interface StoredLedger extends Ledger {
  readonly recent?: readonly RecentRelease[];
}

export type MeteredAdmission = {
  readonly kind: 'metered';
  readonly tenant: string;
  readonly pkg: Package;
  readonly weights: ModelWeights;
  readonly points: number;
  readonly period: PeriodWindow;
  /** The request to decide: package levels applied, the budget relaxed when throttled. */
  readonly request: RouteRequest;
  readonly throttled: boolean;
};

export type Admission =
  | { readonly kind: 'unmetered' }
  | { readonly kind: 'refused'; readonly refusal: Refusal }
  | MeteredAdmission;

export type HoldResult =
  | { readonly kind: 'held'; readonly overQuota: boolean }
  | { readonly kind: 'refused'; readonly refusal: Refusal };

export type SettleResult =
  | { readonly kind: 'unmetered' }
  | { readonly kind: 'unknown' }
  | { readonly kind: 'settled'; readonly points: number; readonly returned: number };

/** List prices (per Mtok, currency units) in money units per Mtok. */
export function unitPrices(price: {
  inputPerMtok: number;
  outputPerMtok: number;
  cachedInputPerMtok: number;
}): UnitPrices {
  return {
    inputPerMtok: Math.round(price.inputPerMtok * MONEY_UNITS),
    outputPerMtok: Math.round(price.outputPerMtok * MONEY_UNITS),
    cachedInputPerMtok: Math.round(price.cachedInputPerMtok * MONEY_UNITS),
  };
}

/** Ledgers whose recent log this replica follows at once (the oldest is forgotten beyond). */
const MAX_TRACKED_LEDGERS = 100_000;

export class Metering {
  private readonly lastSeen = new Map<string, string>();
  /** The current window of each period kind in use (finding a calendar month in a zone is slow). */
  private readonly windows = new Map<string, PeriodWindow>();

  constructor(
    private readonly accounts: AccountsStore,
    private readonly ledgers: LedgerStore,
    private readonly options: { readonly lateReleaseGraceMs: number; readonly reservationTtlMs: number },
  ) {}

  /** `periodAt`, remembered until the window ends. */
  private windowAt(pkg: Package, nowMs: number): PeriodWindow {
    const period = pkg.period;
    const key =
      period.kind === 'interval' ? `i|${period.seconds}|${period.anchorMs}` : `m|${period.timeZone}`;
    const known = this.windows.get(key);
    if (known !== undefined && known.startMs <= nowMs && nowMs < known.endMs) return known;
    const window = periodAt(period, nowMs);
    if (this.windows.size >= 1024) this.windows.clear();
    this.windows.set(key, window);
    return window;
  }

  packageOf(tenant: string): Package | undefined {
    return tenant === '' ? undefined : this.accounts.tenant(tenant)?.package;
  }

  /** Before the decision: synchronous, from this replica's view of the ledger. */
  admit(request: RouteRequest, nowMs: number): Admission {
    const pkg = this.packageOf(request.tenant);
    if (pkg === undefined) return { kind: 'unmetered' };
    const weights = weightsFor(pkg, request.model);
    if (weights === undefined) {
      return {
        kind: 'refused',
        refusal: {
          rule: 'package',
          reason: 'MODEL_NOT_IN_PACKAGE',
          message: `tenant ${request.tenant}'s package ${pkg.name} does not include model ${request.model} (it weighs ${Object.keys(pkg.weights).join(', ')})`,
          retryAfterMs: undefined,
        },
      };
    }
    const points = pointsFor(weights, { ...request, outputTokens: request.maxOutputTokens });
    const period = this.windowAt(pkg, nowMs);
    const packaged: RouteRequest =
      pkg.allowedLevels.length > 0 ? { ...request, packageLevels: pkg.allowedLevels } : request;
    const metered = (throttled: boolean, routed: RouteRequest): MeteredAdmission => ({
      kind: 'metered',
      tenant: request.tenant,
      pkg,
      weights,
      points,
      period,
      request: routed,
      throttled,
    });
    const seen = this.ledgers.cached(request.tenant, period.id);
    // What the cache says, with the reservations expired since the last write given back.
    const cached =
      seen === undefined ? undefined : expireLedger(seen, nowMs, this.options.lateReleaseGraceMs);
    const free =
      cached === undefined ? pkg.quotaPoints : pkg.quotaPoints - (cached.quotaPoints - freePoints(cached));
    if (points <= free) return metered(false, packaged);
    switch (pkg.overQuota) {
      case 'REJECT':
        return {
          kind: 'refused',
          refusal: this.overQuota(request.tenant, pkg, period, points, Math.max(0, free), nowMs),
        };
      case 'PAY_AS_YOU_GO':
        return metered(false, packaged);
      case 'THROTTLE': {
        // A look at the shared bucket as this replica last saw it; the hold takes the token.
        const peek =
          cached === undefined ? undefined : takeThrottleToken(cached, pkg.throttleRequestsPerS, nowMs);
        if (peek !== undefined && !peek.ok)
          return { kind: 'refused', refusal: this.rateLimited(request.tenant, pkg, peek.retryAfterMs) };
        return metered(true, {
          ...packaged,
          latencyBudgetMs: Math.max(request.latencyBudgetMs, pkg.throttleBudgetMs),
        });
      }
    }
  }

  private overQuota(
    tenant: string,
    pkg: Package,
    period: PeriodWindow,
    points: number,
    free: number,
    nowMs: number,
  ): Refusal {
    return {
      rule: 'quota',
      reason: 'QUOTA_EXCEEDED',
      message: `tenant ${tenant} has ${free} of ${pkg.quotaPoints} points left in period ${period.id} (package ${pkg.name}) and this request needs up to ${points}; the quota renews at ${new Date(period.endMs).toISOString()}`,
      retryAfterMs: Math.max(0, period.endMs - nowMs),
    };
  }

  /**
   * After the decision: holds the request's maximum points for `reservationId` in the shared
   * ledger. Exact: concurrent holds on any replica never spend the same points.
   */
  async hold(
    admission: MeteredAdmission,
    reservationId: string,
    node: { readonly level: Level; readonly prices: UnitPrices; readonly model: string },
    expiresAtMs: number,
    nowMs: number,
  ): Promise<HoldResult> {
    const { tenant, pkg, period, points } = admission;
    const grace = this.options.lateReleaseGraceMs;
    return this.ledgers.update(tenant, period.id, (current) => {
      let ledger: Ledger = current ?? emptyLedger(tenant, period.id, pkg.quotaPoints);
      if (ledger.quotaPoints !== pkg.quotaPoints) ledger = { ...ledger, quotaPoints: pkg.quotaPoints };
      ledger = expireLedger(ledger, nowMs, grace);
      if (ledger.heldCount >= MAX_OUTSTANDING_PER_TENANT) {
        return {
          result: {
            kind: 'refused',
            refusal: {
              rule: 'quota',
              reason: 'TOO_MANY_RESERVATIONS',
              message: `tenant ${tenant} holds ${MAX_OUTSTANDING_PER_TENANT} reservations, the most one tenant may hold at once; release some`,
              retryAfterMs: 1000,
            },
          } as HoldResult,
        };
      }
      const outcome = holdPoints(
        ledger,
        reservationId,
        {
          points,
          model: node.model,
          level: node.level,
          expiresAtMs,
          // Kept only where they are billed, to keep the ledger small.
          ...(pkg.overQuota === 'PAY_AS_YOU_GO' ? { prices: node.prices } : {}),
        },
        pkg.overQuota !== 'REJECT',
      );
      if (outcome.kind === 'over_quota') {
        return {
          next: ledger === current ? undefined : ledger,
          result: {
            kind: 'refused',
            refusal: this.overQuota(tenant, pkg, period, points, outcome.freePoints, nowMs),
          },
        };
      }
      if (outcome.overQuota && pkg.overQuota === 'THROTTLE') {
        // Over quota: the tenant's rate is shared by every replica through the ledger.
        const taken = takeThrottleToken(outcome.ledger, pkg.throttleRequestsPerS, nowMs);
        if (!taken.ok) {
          return {
            next: ledger === current ? undefined : ledger,
            result: { kind: 'refused', refusal: this.rateLimited(tenant, pkg, taken.retryAfterMs) },
          };
        }
        return { next: taken.ledger, result: { kind: 'held', overQuota: true } };
      }
      return { next: outcome.ledger, result: { kind: 'held', overQuota: outcome.overQuota } };
    });
  }

  private rateLimited(tenant: string, pkg: Package, retryAfterMs: number): Refusal {
    return {
      rule: 'throttle',
      reason: 'RATE_LIMITED',
      message: `tenant ${tenant} is over its quota and throttled to ${pkg.throttleRequestsPerS} requests/s (package ${pkg.name})`,
      retryAfterMs,
    };
  }

  /**
   * Gives back the hold of a reservation nothing was served on (a placement its caller abandoned
   * before the engine answered): no usage line, no request on the bill. The hold is in the period
   * of its issue time (a hold not found there lapses with its TTL, as any other).
   */
  async abandon(tenant: string, reservationId: string, issuedAtMs: number): Promise<void> {
    const pkg = this.packageOf(tenant);
    if (pkg === undefined) return;
    const period = this.windowAt(pkg, issuedAtMs).id;
    await this.ledgers.update(tenant, period, (current) => {
      if (current === undefined) return { result: undefined };
      const next = dropHold(current, reservationId);
      return { next: next === current ? undefined : next, result: undefined };
    });
  }

  /** Gives back a hold whose reservation was dropped before the caller saw it. */
  async cancel(admission: MeteredAdmission, reservationId: string): Promise<void> {
    await this.ledgers.update(admission.tenant, admission.period.id, (current) => {
      if (current === undefined) return { result: undefined };
      const next = dropHold(current, reservationId);
      return { next: next === current ? undefined : next, result: undefined };
    });
  }

  /**
   * At Release: counts the actual usage in the ledger the reservation is in (see settlePoints),
   * once — a repeated Release, on any replica, finds nothing to settle.
   */
  async settle(
    tenant: string,
    reservationId: string,
    model: string,
    tokens: TokenCounts,
    nowMs: number,
  ): Promise<SettleResult> {
    const pkg = this.packageOf(tenant);
    if (pkg === undefined) return { kind: 'unmetered' };
    const weights = weightsFor(pkg, model);
    for (const period of this.periodsHolding(tenant, reservationId, pkg, nowMs)) {
      const result = await this.ledgers.update<SettleResult>(tenant, period, (current) => {
        if (current === undefined) return { result: { kind: 'unknown' } };
        const held = findOutstanding(current, reservationId);
        // The package's quota now (it may have been lowered since the hold).
        const base =
          current.quotaPoints === pkg.quotaPoints ? current : { ...current, quotaPoints: pkg.quotaPoints };
        const outcome = settlePoints(base, reservationId, tokens, weights, pkg.overQuota);
        if (outcome.kind === 'unknown' || held === undefined) return { result: { kind: 'unknown' } };
        const stored = current as StoredLedger;
        const recent = [
          ...(stored.recent ?? []).slice(-(RECENT_RELEASES - 1)),
          { id: reservationId, atMs: nowMs, points: outcome.counted, ...tokens },
        ];
        const next: StoredLedger = { ...outcome.ledger, recent };
        return {
          next,
          result: {
            kind: 'settled',
            points: outcome.counted,
            returned: Math.max(0, held.points - outcome.points),
          },
        };
      });
      if (result.kind === 'settled') return result;
    }
    return { kind: 'unknown' };
  }

  /** Periods whose ledger may hold the reservation: the one this replica saw it in, now's, the previous one. */
  private periodsHolding(tenant: string, reservationId: string, pkg: Package, nowMs: number): string[] {
    const periods: string[] = [];
    for (const ledger of this.ledgers.cachedAll(tenant)) {
      if (findOutstanding(ledger, reservationId) !== undefined) periods.push(ledger.period);
    }
    periods.push(this.windowAt(pkg, nowMs).id);
    const before = nowMs - this.options.reservationTtlMs - this.options.lateReleaseGraceMs;
    periods.push(this.windowAt(pkg, before).id);
    return [...new Set(periods)];
  }

  /**
   * Reservation ids settled since this replica last looked at the ledger (from its recent log),
   * for freeing the slots it holds for them. Scans from the newest entry back to the last one seen,
   * so a ledger write costs the entries it added, not the whole log.
   */
  newlySettled(ledger: Ledger): string[] {
    const recent = (ledger as StoredLedger).recent ?? [];
    if (recent.length === 0) return [];
    const key = `${ledger.tenant}/${ledger.period}`;
    const last = this.lastSeen.get(key);
    let from = recent.length;
    while (from > 0 && recent[from - 1]?.id !== last) from -= 1;
    this.lastSeen.set(key, recent[recent.length - 1]?.id ?? '');
    if (this.lastSeen.size > MAX_TRACKED_LEDGERS)
      this.lastSeen.delete(this.lastSeen.keys().next().value as string);
    return recent.slice(from).map((entry) => entry.id);
  }
}
