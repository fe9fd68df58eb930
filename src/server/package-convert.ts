// Token packages and usage between the wire and the plane: SetPackage's validation (every field
// once, with what is allowed) and the conversions back for GetTenant and GetUsage.

import type { Level } from '../core/model.js';
import {
  isTimeZone,
  type Ledger,
  MAX_QUOTA_POINTS,
  MAX_WEIGHT_PER_1K,
  type ModelWeights,
  type OverQuotaPolicy,
  type Package,
  type QuotaPeriod,
} from '../core/quota.js';
import {
  Meter as ProtoMeter,
  OverQuotaPolicy as ProtoOverQuota,
  type Package as ProtoPackage,
  type UsageLine as ProtoUsageLine,
} from '../gen/cpn/v1/accounts.js';
import { levelToProto } from './convert.js';
import { invalidArgument } from './errors.js';
import { checkModel, LIMITS, toAllowedLevels } from './validate.js';

export const DEFAULT_TIME_ZONE = 'Asia/Shanghai';
const MAX_WEIGHTS = 256;
/** Each period of each tenant is one ledger kept in the store: an hour at the shortest. */
const MIN_PERIOD_S = 3600;
const MAX_PERIOD_S = 366 * 24 * 3600;
const MAX_LABEL = 128;

const POLICY_FROM_PROTO: Partial<Record<ProtoOverQuota, OverQuotaPolicy>> = {
  [ProtoOverQuota.OVER_QUOTA_POLICY_REJECT]: 'REJECT',
  [ProtoOverQuota.OVER_QUOTA_POLICY_THROTTLE]: 'THROTTLE',
  [ProtoOverQuota.OVER_QUOTA_POLICY_PAY_AS_YOU_GO]: 'PAY_AS_YOU_GO',
};
export const POLICY_TO_PROTO: Readonly<Record<OverQuotaPolicy, ProtoOverQuota>> = {
  REJECT: ProtoOverQuota.OVER_QUOTA_POLICY_REJECT,
  THROTTLE: ProtoOverQuota.OVER_QUOTA_POLICY_THROTTLE,
  PAY_AS_YOU_GO: ProtoOverQuota.OVER_QUOTA_POLICY_PAY_AS_YOU_GO,
};

function wholeNumber(field: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max)
    throw invalidArgument(`${field} must be an integer from ${min} to ${max}, got ${value}`);
  return value;
}

function positive(field: string, value: number, max: number, min = 0): number {
  if (!Number.isFinite(value) || value <= min || value > max)
    throw invalidArgument(`${field} must be > ${min} and <= ${max}, got ${value}`);
  return value;
}

/** A throttled tenant gets at least one request a minute or so (a retry hint stays finite). */
const MIN_THROTTLE_PER_S = 0.01;

function toMeter(meter: ProtoMeter): 'client' | 'trusted' {
  if (meter === ProtoMeter.METER_UNSPECIFIED || meter === ProtoMeter.METER_CLIENT) return 'client';
  if (meter === ProtoMeter.METER_TRUSTED) return 'trusted';
  throw invalidArgument(`package.meter must be METER_CLIENT or METER_TRUSTED, got ${meter}`);
}

export function toPackage(pkg: ProtoPackage): Package {
  if (pkg.name.length === 0 || pkg.name.length > MAX_LABEL || !/^[\x20-\x7e]+$/.test(pkg.name))
    throw invalidArgument(`package.name must be 1 to ${MAX_LABEL} printable characters`);
  const quotaPoints = wholeNumber('package.quota_points', pkg.quotaPoints, 1, MAX_QUOTA_POINTS);
  let period: QuotaPeriod;
  if (pkg.periodSeconds > 0) {
    if (pkg.timeZone !== '')
      throw invalidArgument(
        'package: give time_zone (calendar months) or period_seconds (fixed intervals), not both',
      );
    period = {
      kind: 'interval',
      seconds: wholeNumber('package.period_seconds', pkg.periodSeconds, MIN_PERIOD_S, MAX_PERIOD_S),
      anchorMs: pkg.periodAnchor?.getTime() ?? 0,
    };
    if (!Number.isFinite(period.anchorMs))
      throw invalidArgument('package.period_anchor must be a valid time');
  } else {
    const timeZone = pkg.timeZone === '' ? DEFAULT_TIME_ZONE : pkg.timeZone;
    if (timeZone.length > 64 || !isTimeZone(timeZone))
      throw invalidArgument(
        `package.time_zone must be an IANA time zone like Asia/Shanghai, got "${timeZone.slice(0, 64)}"`,
      );
    period = { kind: 'calendar-month', timeZone };
  }
  if (pkg.weights.length === 0 || pkg.weights.length > MAX_WEIGHTS)
    throw invalidArgument(
      `package.weights must have 1 to ${MAX_WEIGHTS} entries (model "*" weighs every other model)`,
    );
  const weights: Record<string, ModelWeights> = {};
  pkg.weights.forEach((entry, index) => {
    const field = `package.weights[${index}]`;
    const model = entry.model === '*' ? '*' : checkModel(`${field}.model`, entry.model);
    if (weights[model] !== undefined) throw invalidArgument(`${field}.model ${model} is listed twice`);
    weights[model] = {
      inputPer1k: wholeNumber(`${field}.input_per_1k`, entry.inputPer1k, 0, MAX_WEIGHT_PER_1K),
      outputPer1k: wholeNumber(`${field}.output_per_1k`, entry.outputPer1k, 0, MAX_WEIGHT_PER_1K),
      cachedInputPer1k: wholeNumber(
        `${field}.cached_input_per_1k`,
        entry.cachedInputPer1k,
        0,
        MAX_WEIGHT_PER_1K,
      ),
    };
  });
  const overQuota = POLICY_FROM_PROTO[pkg.overQuota];
  if (overQuota === undefined)
    throw invalidArgument('package.over_quota must be OVER_QUOTA_POLICY_REJECT, _THROTTLE or _PAY_AS_YOU_GO');
  const throttled = overQuota === 'THROTTLE';
  return {
    name: pkg.name,
    quotaPoints,
    period,
    weights,
    allowedLevels: toAllowedLevels(pkg.allowedLevels),
    overQuota,
    throttleRequestsPerS: throttled
      ? positive('package.throttle_requests_per_s', pkg.throttleRequestsPerS, 1e6, MIN_THROTTLE_PER_S)
      : 0,
    throttleBudgetMs: throttled
      ? positive('package.throttle_budget_ms', pkg.throttleBudgetMs, LIMITS.budgetMs)
      : 0,
    meter: toMeter(pkg.meter),
  };
}

export function packageToProto(pkg: Package): ProtoPackage {
  return {
    name: pkg.name,
    quotaPoints: pkg.quotaPoints,
    timeZone: pkg.period.kind === 'calendar-month' ? pkg.period.timeZone : '',
    periodSeconds: pkg.period.kind === 'interval' ? pkg.period.seconds : 0,
    periodAnchor: pkg.period.kind === 'interval' ? new Date(pkg.period.anchorMs) : undefined,
    weights: Object.entries(pkg.weights).map(([model, w]) => ({
      model,
      inputPer1k: w.inputPer1k,
      outputPer1k: w.outputPer1k,
      cachedInputPer1k: w.cachedInputPer1k,
    })),
    allowedLevels: pkg.allowedLevels.map(levelToProto),
    overQuota: POLICY_TO_PROTO[pkg.overQuota],
    throttleRequestsPerS: pkg.throttleRequestsPerS,
    throttleBudgetMs: pkg.throttleBudgetMs,
    meter: pkg.meter === 'trusted' ? ProtoMeter.METER_TRUSTED : ProtoMeter.METER_CLIENT,
  };
}

/** The bill lines of a ledger, by model and level, in a stable order. */
export function usageLinesToProto(ledger: Ledger): ProtoUsageLine[] {
  return Object.entries(ledger.lines)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, line]) => {
      const bar = key.lastIndexOf('|');
      return {
        tenant: ledger.tenant,
        period: ledger.period,
        model: key.slice(0, bar),
        level: levelToProto(key.slice(bar + 1) as Level),
        ...line,
      };
    });
}
