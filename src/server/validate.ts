// Boundary validation: proto messages in, domain values out. Every field is checked once here;
// a failure is INVALID_ARGUMENT naming the field, the bad value and what is allowed.

import type { ClientPosition } from '../core/latency.js';
import {
  type LatLon,
  LEVELS,
  type Level,
  MAX_MODEL_CHARS,
  MAX_TENANT_CHARS,
  MODEL_PATTERN,
  type ModelOffer,
  NODE_ID_PATTERN,
  type NodeSpec,
  type NodeStatus,
  TENANT_PATTERN,
  type Usage,
} from '../core/model.js';
import type { PriceRule, PricingPolicy } from '../core/pricing.js';
import { MAX_RESERVATION_ID_CHARS, parseReservationId, type ReservationId } from '../core/reservations.js';
import { MAX_FALLBACKS, type Motion, type RouteRequest } from '../core/routing/index.js';
import type * as pbRegistry from '../gen/cpn/v1/registry.js';
import type * as pbScheduler from '../gen/cpn/v1/scheduler.js';
import type * as pbTypes from '../gen/cpn/v1/types.js';
import { Level as ProtoLevel } from '../gen/cpn/v1/types.js';
import { MAX_SESSION_TTL_S, type OpenSessionInput, type UpdateSessionInput } from '../plane/sessions.js';
import type { LatencyReport, NodeFilter, NodePage } from '../store/store.js';
import { invalidArgument } from './errors.js';

export const LIMITS = {
  nameChars: MAX_MODEL_CHARS,
  regionChars: 32,
  endpointChars: 512,
  labels: 64,
  labelKeyChars: 63,
  labelValueChars: 256,
  gpus: 64,
  models: 256,
  tokens: 100_000_000,
  budgetMs: 3_600_000,
  ttlS: 86_400,
  concurrency: 1_000_000,
  latencySamples: 10_000,
  rttMs: 60_000,
  allowedRegions: 64,
  /** Price changes waiting to take effect (each is kept in the store until it does). */
  scheduledPricing: 64,
  /** Distinct `from` names (access points, regions) that may hold latency samples. */
  latencySources: 10_000,
} as const;

const REGION_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
const NAME_PATTERN = /^[\x21-\x7e]+$/;

/** Shows a bad value without echoing megabytes back. */
function show(value: unknown): string {
  if (typeof value === 'string') {
    return value.length > 40
      ? `a ${value.length}-character string starting "${value.slice(0, 20)}"`
      : JSON.stringify(value);
  }
  return String(value);
}

function fail(field: string, value: unknown, allowed: string): never {
  throw invalidArgument(`${field} must be ${allowed}, got ${show(value)}`);
}

function checkString(field: string, value: string, maxChars: number, pattern: RegExp, what: string): string {
  if (value.length === 0) throw invalidArgument(`${field} is required (${what})`);
  if (value.length > maxChars || !pattern.test(value))
    fail(field, value, `${what}, at most ${maxChars} characters`);
  return value;
}

export const checkNodeId = (field: string, value: string): string =>
  checkString(field, value, 63, NODE_ID_PATTERN, 'a node id matching [a-z0-9][a-z0-9.-]{0,62}');

export const checkTenant = (field: string, value: string): string =>
  checkString(
    field,
    value,
    MAX_TENANT_CHARS,
    TENANT_PATTERN,
    'a tenant name: lowercase letters, digits and inner hyphens',
  );

/** A tenant name, or empty for none. */
export const optionalTenant = (field: string, value: string): string =>
  value === '' ? value : checkTenant(field, value);

export const checkModel = (field: string, value: string): string =>
  checkString(field, value, LIMITS.nameChars, MODEL_PATTERN, 'a model name of letters, digits and ._:/@+-');

export const checkRegion = (field: string, value: string): string =>
  checkString(field, value, LIMITS.regionChars, REGION_PATTERN, 'a region code like CN-GD');

function optionalString(field: string, value: string, maxChars: number): string {
  if (value.length > maxChars || (value !== '' && !NAME_PATTERN.test(value))) {
    fail(field, value, `printable ASCII without spaces, at most ${maxChars} characters`);
  }
  return value;
}

function checkNumber(field: string, value: number, min: number, max: number, minExclusive = false): number {
  const low = minExclusive ? value <= min : value < min;
  if (!Number.isFinite(value) || low || value > max) {
    fail(field, value, `a finite number ${minExclusive ? '>' : '>='} ${min} and <= ${max}`);
  }
  return value;
}

function checkInteger(field: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max)
    fail(field, value, `an integer from ${min} to ${max}`);
  return value;
}

export function toLevel(field: string, value: ProtoLevel): Level {
  const level = LEVELS[value - 1];
  if (level === undefined || value < ProtoLevel.LEVEL_CENTER) {
    fail(field, value, 'one of LEVEL_CENTER (1), LEVEL_PROVINCE (2), LEVEL_EDGE (3), LEVEL_TERMINAL (4)');
  }
  return level;
}

function toLocation(field: string, value: pbTypes.Location | undefined): LatLon | undefined {
  if (value === undefined) return undefined;
  return {
    lat: checkNumber(`${field}.lat`, value.lat, -90, 90),
    lon: checkNumber(`${field}.lon`, value.lon, -180, 180),
  };
}

function toOffer(field: string, offer: pbTypes.ModelOffer): ModelOffer {
  const price = offer.price;
  if (price === undefined) throw invalidArgument(`${field}.price is required`);
  return {
    model: checkModel(`${field}.model`, offer.model),
    maxConcurrency: checkInteger(`${field}.max_concurrency`, offer.maxConcurrency, 1, LIMITS.concurrency),
    maxQueue: checkInteger(`${field}.max_queue`, offer.maxQueue, 0, LIMITS.concurrency),
    prefillTokensPerS: checkNumber(`${field}.prefill_tokens_per_s`, offer.prefillTokensPerS, 0, 1e9, true),
    decodeTokensPerS: checkNumber(`${field}.decode_tokens_per_s`, offer.decodeTokensPerS, 0, 1e9, true),
    price: {
      inputPerMtok: checkNumber(`${field}.price.input_per_mtok`, price.inputPerMtok, 0, 1e6),
      outputPerMtok: checkNumber(`${field}.price.output_per_mtok`, price.outputPerMtok, 0, 1e6),
      cachedInputPerMtok: checkNumber(
        `${field}.price.cached_input_per_mtok`,
        price.cachedInputPerMtok,
        0,
        1e6,
      ),
    },
  };
}

/** Control characters and the invisible marks that reorder text (a label must read as it is). */
const UNPRINTABLE = /[\p{Cc}\u200e\u200f\u202a-\u202e\u2066-\u2069]/u;
const HOST_PORT = /^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?:\d{1,5}$/;
const ENDPOINT_SCHEMES = ['http:', 'https:', 'grpc:', 'grpcs:'];

/** host:port, or an http(s)/grpc(s) URL with a host: where clients will be sent. */
function toEndpoint(value: string): string {
  const what = 'host:port or an http, https, grpc or grpcs URL';
  checkString('spec.endpoint', value, LIMITS.endpointChars, NAME_PATTERN, what);
  if (HOST_PORT.test(value)) return value;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return fail('spec.endpoint', value, what);
  }
  if (!ENDPOINT_SCHEMES.includes(url.protocol) || url.hostname === '') fail('spec.endpoint', value, what);
  return value;
}

function toParentId(spec: pbTypes.NodeSpec): string {
  if (spec.parentId === '') return '';
  const parentId = checkNodeId('spec.parent_id', spec.parentId);
  if (parentId === spec.id) fail('spec.parent_id', parentId, 'another node than the node itself (or empty)');
  return parentId;
}

export function toNodeSpec(spec: pbTypes.NodeSpec | undefined): NodeSpec {
  if (spec === undefined) throw invalidArgument('spec is required');
  if (spec.gpus.length > LIMITS.gpus)
    fail('spec.gpus', `${spec.gpus.length} entries`, `at most ${LIMITS.gpus} entries`);
  if (spec.models.length === 0) throw invalidArgument('spec.models must list at least one ModelOffer');
  if (spec.models.length > LIMITS.models)
    fail('spec.models', `${spec.models.length} entries`, `at most ${LIMITS.models} entries`);
  const labels = Object.entries(spec.labels);
  if (labels.length > LIMITS.labels)
    fail('spec.labels', `${labels.length} entries`, `at most ${LIMITS.labels} entries`);
  for (const [key, value] of labels) {
    optionalString(`spec.labels key`, key, LIMITS.labelKeyChars);
    if (key === '') throw invalidArgument('spec.labels keys must not be empty');
    if (value.length > LIMITS.labelValueChars)
      fail(`spec.labels[${key}]`, value, `at most ${LIMITS.labelValueChars} characters`);
    if (UNPRINTABLE.test(value))
      fail(`spec.labels[${key}]`, value, 'text without control characters or bidirectional overrides');
  }
  const models = spec.models.map((offer, index) => toOffer(`spec.models[${index}]`, offer));
  const seen = new Set<string>();
  models.forEach((offer, index) => {
    if (seen.has(offer.model))
      throw invalidArgument(`spec.models[${index}].model ${offer.model} is listed twice`);
    seen.add(offer.model);
  });
  return {
    id: checkNodeId('spec.id', spec.id),
    level: toLevel('spec.level', spec.level),
    region: checkRegion('spec.region', spec.region),
    parentId: toParentId(spec),
    endpoint: toEndpoint(spec.endpoint),
    location: toLocation('spec.location', spec.location),
    gpus: spec.gpus.map((gpu, index) => ({
      type: checkString(
        `spec.gpus[${index}].type`,
        gpu.type,
        LIMITS.nameChars,
        NAME_PATTERN,
        'a GPU type like H800',
      ),
      count: checkInteger(`spec.gpus[${index}].count`, gpu.count, 1, 1_000_000),
      memoryGib: checkNumber(`spec.gpus[${index}].memory_gib`, gpu.memoryGib, 0, 1e6, true),
    })),
    models,
    labels: Object.fromEntries(labels),
  };
}

export function toRegisterOptions(request: pbRegistry.RegisterNodeRequest): {
  ttlS: number;
  permanent: boolean;
} {
  if (request.permanent) return { ttlS: 0, permanent: true };
  if (request.ttlS === 0) {
    throw invalidArgument(
      `ttl_s is required: seconds from 1 to ${LIMITS.ttlS} after which a silent node is DOWN (or set permanent = true for a node without an agent)`,
    );
  }
  return { ttlS: checkInteger('ttl_s', request.ttlS, 1, LIMITS.ttlS), permanent: false };
}

export function toNodeStatus(status: pbTypes.NodeStatus, offered: NodeSpec | undefined): NodeStatus {
  const nodeId = checkNodeId('node_id', status.nodeId);
  if (status.load.length > LIMITS.models)
    fail('load', `${status.load.length} entries`, `at most ${LIMITS.models} entries (one per model)`);
  const reported = new Set<string>();
  const load = status.load.map((entry, index) => {
    const field = `load[${index}]`;
    const model = checkModel(`${field}.model`, entry.model);
    if (reported.has(model)) throw invalidArgument(`${field}.model ${model} is reported twice`);
    reported.add(model);
    if (offered !== undefined && !offered.models.some((offer) => offer.model === model)) {
      throw invalidArgument(
        `${field}.model ${model} is not offered by node ${nodeId}; register the model first`,
      );
    }
    return {
      model,
      active: checkInteger(`${field}.active`, entry.active, 0, LIMITS.concurrency),
      queued: checkInteger(`${field}.queued`, entry.queued, 0, LIMITS.concurrency),
    };
  });
  return {
    nodeId,
    load,
    gpuUtilization: checkNumber('gpu_utilization', status.gpuUtilization, 0, 1),
    kvCacheUtilization:
      status.kvCacheUtilization === undefined
        ? undefined
        : checkNumber('kv_cache_utilization', status.kvCacheUtilization, 0, 1),
    healthy: status.healthy,
  };
}

export function toNodeFilter(request: pbRegistry.ListNodesRequest): NodeFilter {
  return {
    level: request.level === ProtoLevel.LEVEL_UNSPECIFIED ? undefined : toLevel('level', request.level),
    region: request.region === '' ? undefined : checkRegion('region', request.region),
    model: request.model === '' ? undefined : checkModel('model', request.model),
  };
}

export const DEFAULT_PAGE_SIZE = 1000;
export const MAX_PAGE_SIZE = 5000;

/** A page token names the last node id of the previous page (opaque to clients). */
export const pageTokenAfter = (nodeId: string): string => Buffer.from(nodeId).toString('base64url');

export function toNodePage(request: pbRegistry.ListNodesRequest): NodePage {
  const limit = request.pageSize === 0 ? DEFAULT_PAGE_SIZE : request.pageSize;
  if (limit > MAX_PAGE_SIZE)
    fail('page_size', request.pageSize, `at most ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE})`);
  if (request.pageToken === '') return { limit };
  const afterId =
    request.pageToken.length <= 100 ? Buffer.from(request.pageToken, 'base64url').toString() : '';
  if (!NODE_ID_PATTERN.test(afterId) || pageTokenAfter(afterId) !== request.pageToken)
    fail('page_token', request.pageToken, 'the next_page_token of a previous ListNodes answer');
  return { afterId, limit };
}

export function toLatencyReports(request: pbRegistry.ReportLatencyRequest): LatencyReport[] {
  if (request.samples.length === 0) throw invalidArgument('samples must hold at least one LatencySample');
  if (request.samples.length > LIMITS.latencySamples) {
    fail('samples', `${request.samples.length} entries`, `at most ${LIMITS.latencySamples} entries per call`);
  }
  const seen = new Set<string>();
  return request.samples.map((sample, index) => {
    const report = {
      from: checkString(
        `samples[${index}].from`,
        sample.from,
        LIMITS.nameChars,
        NAME_PATTERN,
        'an access point or region name',
      ),
      nodeId: checkNodeId(`samples[${index}].node_id`, sample.nodeId),
      rttMs: checkNumber(`samples[${index}].rtt_ms`, sample.rttMs, 0, LIMITS.rttMs),
    };
    // One sample per (from, node) per call: a store writes them as one batch.
    const pair = `${report.from}\u0000${report.nodeId}`;
    if (seen.has(pair))
      throw invalidArgument(
        `samples[${index}] repeats from ${report.from} to node ${report.nodeId}; send one sample per pair`,
      );
    seen.add(pair);
    return report;
  });
}

function toClientPosition(client: pbScheduler.ClientPosition | undefined): ClientPosition {
  const region = client?.region ? checkRegion('client.region', client.region) : '';
  const accessPoint = optionalString('client.access_point', client?.accessPoint ?? '', LIMITS.nameChars);
  const location = toLocation('client.location', client?.location);
  if (region === '' && accessPoint === '' && location === undefined) {
    throw invalidArgument(
      'client is required: give client.region (e.g. CN-GD), client.access_point or client.location',
    );
  }
  return { region, accessPoint, location };
}

export function toRouteRequest(request: pbScheduler.RouteRequest): RouteRequest {
  const { region, accessPoint, location } = toClientPosition(request.client);
  const inputTokens = checkInteger('input_tokens', request.inputTokens, 0, LIMITS.tokens);
  const cachedInputTokens = checkInteger('cached_input_tokens', request.cachedInputTokens, 0, LIMITS.tokens);
  if (cachedInputTokens > inputTokens) {
    throw invalidArgument(
      `cached_input_tokens must be <= input_tokens (${inputTokens}), got ${cachedInputTokens}: cache hits are part of the input`,
    );
  }
  return {
    requestId: optionalString('request_id', request.requestId, LIMITS.nameChars),
    tenant: optionalTenant('tenant', request.tenant),
    model: checkModel('model', request.model),
    client: { region, accessPoint, location },
    latencyBudgetMs: checkNumber('latency_budget_ms', request.latencyBudgetMs, 0, LIMITS.budgetMs, true),
    inputTokens,
    cachedInputTokens,
    maxOutputTokens: checkInteger('max_output_tokens', request.maxOutputTokens, 0, LIMITS.tokens),
    allowedLevels: toAllowedLevels(request.allowedLevels),
    allowedRegions: toAllowedRegions(request.allowedRegions),
    allowDegraded: request.allowDegraded,
    explain: request.explain,
    maxFallbacks: checkInteger('max_fallbacks', request.maxFallbacks, 0, MAX_FALLBACKS),
    ...(request.avoid === undefined || request.avoid.nodeIds.length === 0
      ? {}
      : { failedNodes: toAvoidNodes(request.avoid.nodeIds) }),
  };
}

/** A session id: 32 lowercase hex digits (128 random bits). */
export function toSessionId(value: string): string {
  if (!/^[0-9a-f]{32}$/.test(value))
    fail('session_id', value, '32 lowercase hex digits, as OpenSession returned');
  return value;
}

function toMotion(headingDeg: number | undefined, speedKmh: number | undefined): Motion {
  return {
    ...(headingDeg === undefined ? {} : { headingDeg: checkNumber('heading_deg', headingDeg, 0, 360) }),
    ...(speedKmh === undefined ? {} : { speedKmh: checkNumber('speed_kmh', speedKmh, 0, 500) }),
  };
}

export function toOpenSession(request: pbScheduler.OpenSessionRequest): OpenSessionInput {
  return {
    tenant: optionalTenant('tenant', request.tenant),
    model: checkModel('model', request.model),
    client: toClientPosition(request.client),
    latencyBudgetMs: checkNumber('latency_budget_ms', request.latencyBudgetMs, 0, LIMITS.budgetMs, true),
    inputTokens: checkInteger('input_tokens', request.inputTokens, 0, LIMITS.tokens),
    maxOutputTokens: checkInteger('max_output_tokens', request.maxOutputTokens, 0, LIMITS.tokens),
    contextTokens: checkInteger('context_tokens', request.contextTokens, 0, LIMITS.tokens),
    allowedLevels: toAllowedLevels(request.allowedLevels),
    allowedRegions: toAllowedRegions(request.allowedRegions),
    motion: toMotion(request.headingDeg, request.speedKmh),
    ttlS: checkInteger('ttl_s', request.ttlS, 0, MAX_SESSION_TTL_S),
  };
}

export function toUpdateSession(request: pbScheduler.UpdateSessionRequest): UpdateSessionInput {
  return {
    tenant: optionalTenant('tenant', request.tenant),
    id: toSessionId(request.sessionId),
    client: toClientPosition(request.client),
    contextTokens:
      request.contextTokens === undefined
        ? undefined
        : checkInteger('context_tokens', request.contextTokens, 0, LIMITS.tokens),
    motion:
      request.headingDeg === undefined && request.speedKmh === undefined
        ? undefined
        : toMotion(request.headingDeg, request.speedKmh),
  };
}

/** Nodes a request must not be placed on (a gateway's retry); at most MAX_AVOID_NODES. */
export const MAX_AVOID_NODES = 8;
function toAvoidNodes(nodeIds: readonly string[]): ReadonlySet<string> {
  if (nodeIds.length > MAX_AVOID_NODES)
    fail('avoid.node_ids', `${nodeIds.length} entries`, `at most ${MAX_AVOID_NODES} entries`);
  return new Set(nodeIds.map((nodeId, index) => checkNodeId(`avoid.node_ids[${index}]`, nodeId)));
}

export function toAllowedLevels(levels: readonly ProtoLevel[]): Level[] {
  if (levels.length > LEVELS.length) {
    fail('allowed_levels', `${levels.length} entries`, `at most ${LEVELS.length} entries (one per level)`);
  }
  return levels.map((level, index) => toLevel(`allowed_levels[${index}]`, level));
}

function toAllowedRegions(regions: readonly string[]): string[] {
  if (regions.length > LIMITS.allowedRegions) {
    fail('allowed_regions', `${regions.length} entries`, `at most ${LIMITS.allowedRegions} entries`);
  }
  return regions.map((region, index) => checkRegion(`allowed_regions[${index}]`, region));
}

export function toUsage(usage: pbScheduler.Usage | undefined): Usage {
  if (usage === undefined) return { inputTokens: 0, cachedInputTokens: 0, outputTokens: 0 };
  const inputTokens = checkInteger('usage.input_tokens', usage.inputTokens, 0, LIMITS.tokens);
  const cachedInputTokens = checkInteger(
    'usage.cached_input_tokens',
    usage.cachedInputTokens,
    0,
    LIMITS.tokens,
  );
  if (cachedInputTokens > inputTokens) {
    throw invalidArgument(
      `usage.cached_input_tokens must be <= usage.input_tokens (${inputTokens}), got ${cachedInputTokens}`,
    );
  }
  return {
    inputTokens,
    cachedInputTokens,
    outputTokens: checkInteger('usage.output_tokens', usage.outputTokens, 0, LIMITS.tokens),
  };
}

/** A reservation id as Route issues it; the length limit comes from the id's format. */
export function toReservationId(value: string): ReservationId {
  const what = 'the reservation_id returned by Route (<replica>.<sequence>.<token>~<node id>~<model>)';
  checkString('reservation_id', value, MAX_RESERVATION_ID_CHARS, NAME_PATTERN, what);
  const parsed = parseReservationId(value);
  if (parsed === undefined) fail('reservation_id', value, what);
  return parsed.id;
}

export function toPricingPolicy(policy: pbRegistry.PricingPolicy | undefined): PricingPolicy {
  if (policy === undefined)
    throw invalidArgument('policy is required (an empty rule list means list prices)');
  if (policy.rules.length > 256)
    fail('policy.rules', `${policy.rules.length} entries`, 'at most 256 entries');
  return {
    utcOffsetHours: checkNumber('policy.utc_offset_hours', policy.utcOffsetHours, -12, 14),
    rules: policy.rules.map((rule, index): PriceRule => {
      const field = `policy.rules[${index}]`;
      if (rule.windowed) {
        checkNumber(`${field}.from_hour`, rule.fromHour, 0, 24);
        checkNumber(`${field}.to_hour`, rule.toHour, 0, 24);
        if (rule.fromHour === rule.toHour) {
          throw invalidArgument(
            `${field}: from_hour and to_hour are both ${rule.fromHour}; give a window of non-zero length`,
          );
        }
      }
      return {
        level:
          rule.level === ProtoLevel.LEVEL_UNSPECIFIED ? undefined : toLevel(`${field}.level`, rule.level),
        region: rule.region === '' ? undefined : checkRegion(`${field}.region`, rule.region),
        model: rule.model === '' ? undefined : checkModel(`${field}.model`, rule.model),
        factor: checkNumber(`${field}.factor`, rule.factor, 0, 100, true),
        window: rule.windowed ? { fromHour: rule.fromHour, toHour: rule.toHour } : undefined,
      };
    }),
  };
}

export function toScheduleTime(at: Date | undefined, nowMs: number): number {
  if (at === undefined) throw invalidArgument('at is required: when the policy takes effect');
  const atMs = at.getTime();
  if (!Number.isFinite(atMs)) fail('at', at, 'a valid timestamp');
  const yearMs = 366 * 24 * 3600 * 1000;
  if (atMs > nowMs + yearMs) fail('at', at.toISOString(), 'within a year from now');
  // A change in the past takes effect at once; one from long ago is a mistake.
  if (atMs < nowMs - 24 * 3600 * 1000) fail('at', at.toISOString(), 'no earlier than a day ago');
  return atMs;
}

export const toPricingId = (value: string): string =>
  checkString('id', value, LIMITS.nameChars, NAME_PATTERN, 'the id returned by SchedulePricing');
