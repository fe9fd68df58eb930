// Domain values out to proto messages. (Proto in to domain is validate.ts.)

import type { LatencySource } from '../core/latency.js';
import {
  LEVELS,
  type Level,
  type NodeRecord,
  type NodeSpec,
  type NodeState,
  type NodeStatus,
} from '../core/model.js';
import type { PricingPolicy, ScheduledPricing } from '../core/pricing.js';
import type { Estimate, ExplainEntry, HandoverReason, Placement, Verdict } from '../core/routing/index.js';
import type * as pbRegistry from '../gen/cpn/v1/registry.js';
import * as pbScheduler from '../gen/cpn/v1/scheduler.js';
import * as pbTypes from '../gen/cpn/v1/types.js';
import type { HandoverRecord } from '../store/sessions.js';

export const levelToProto = (level: Level): pbTypes.Level => (LEVELS.indexOf(level) + 1) as pbTypes.Level;

const NODE_STATE: Readonly<Record<NodeState, pbTypes.NodeState>> = {
  READY: pbTypes.NodeState.NODE_STATE_READY,
  DRAINING: pbTypes.NodeState.NODE_STATE_DRAINING,
  DOWN: pbTypes.NodeState.NODE_STATE_DOWN,
  UNHEALTHY: pbTypes.NodeState.NODE_STATE_UNHEALTHY,
};
export const nodeStateToProto = (state: NodeState): pbTypes.NodeState => NODE_STATE[state];

const LATENCY_SOURCE: Readonly<Record<LatencySource, pbScheduler.LatencySource>> = {
  MEASURED: pbScheduler.LatencySource.LATENCY_SOURCE_MEASURED,
  COORDINATES: pbScheduler.LatencySource.LATENCY_SOURCE_COORDINATES,
  REGION_DEFAULT: pbScheduler.LatencySource.LATENCY_SOURCE_REGION_DEFAULT,
};

/** Every verdict has its wire value: a new check is a compile error here until it has one. */
const VERDICT_TO_PROTO: Readonly<Record<Verdict, pbScheduler.Verdict>> = {
  SELECTED: pbScheduler.Verdict.VERDICT_SELECTED,
  FALLBACK: pbScheduler.Verdict.VERDICT_FALLBACK,
  FEASIBLE: pbScheduler.Verdict.VERDICT_FEASIBLE,
  DEGRADED_SELECTED: pbScheduler.Verdict.VERDICT_DEGRADED_SELECTED,
  MODEL_NOT_SERVED: pbScheduler.Verdict.VERDICT_MODEL_NOT_SERVED,
  LEVEL_EXCLUDED: pbScheduler.Verdict.VERDICT_LEVEL_EXCLUDED,
  LEVEL_NOT_IN_PACKAGE: pbScheduler.Verdict.VERDICT_LEVEL_NOT_IN_PACKAGE,
  MODEL_NOT_IN_PACKAGE: pbScheduler.Verdict.VERDICT_MODEL_NOT_IN_PACKAGE,
  FAILED_THIS_REQUEST: pbScheduler.Verdict.VERDICT_FAILED_THIS_REQUEST,
  REGION_EXCLUDED: pbScheduler.Verdict.VERDICT_REGION_EXCLUDED,
  DOWN: pbScheduler.Verdict.VERDICT_DOWN,
  UNHEALTHY: pbScheduler.Verdict.VERDICT_UNHEALTHY,
  DRAINING: pbScheduler.Verdict.VERDICT_DRAINING,
  OVER_BUDGET: pbScheduler.Verdict.VERDICT_OVER_BUDGET,
  AT_CAPACITY: pbScheduler.Verdict.VERDICT_AT_CAPACITY,
  QUEUE_OVER_BUDGET: pbScheduler.Verdict.VERDICT_QUEUE_OVER_BUDGET,
};

export const verdictToProto = (verdict: Verdict): pbScheduler.Verdict => VERDICT_TO_PROTO[verdict];

export function specToProto(spec: NodeSpec): pbTypes.NodeSpec {
  return {
    id: spec.id,
    level: levelToProto(spec.level),
    region: spec.region,
    parentId: spec.parentId,
    endpoint: spec.endpoint,
    location: spec.location === undefined ? undefined : { lat: spec.location.lat, lon: spec.location.lon },
    gpus: spec.gpus.map((gpu) => ({ type: gpu.type, count: gpu.count, memoryGib: gpu.memoryGib })),
    models: spec.models.map((offer) => ({
      model: offer.model,
      maxConcurrency: offer.maxConcurrency,
      maxQueue: offer.maxQueue,
      prefillTokensPerS: offer.prefillTokensPerS,
      decodeTokensPerS: offer.decodeTokensPerS,
      price: { ...offer.price },
    })),
    labels: { ...spec.labels },
  };
}

function statusToProto(status: NodeStatus): pbTypes.NodeStatus {
  return {
    nodeId: status.nodeId,
    load: status.load.map((entry) => ({ ...entry })),
    gpuUtilization: status.gpuUtilization,
    kvCacheUtilization: status.kvCacheUtilization,
    healthy: status.healthy,
  };
}

/** `reserved`: pending reservations per model on this node. */
export function nodeToProto(
  node: NodeRecord,
  state: NodeState,
  reserved: ReadonlyMap<string, number>,
): pbTypes.Node {
  return {
    spec: specToProto(node.spec),
    status: node.status === undefined ? undefined : statusToProto(node.status),
    state: nodeStateToProto(state),
    reserved: [...reserved].map(([model, count]) => ({ model, reserved: count })),
    registeredAt: new Date(node.registeredAtMs),
    lastSeenAt: new Date(node.lastSeenMs),
    ttlS: node.ttlS,
    permanent: node.permanent,
  };
}

export function estimateToProto(estimate: Estimate): pbScheduler.Estimate {
  return {
    networkRttMs: estimate.networkRttMs,
    queueMs: estimate.queueMs,
    prefillMs: estimate.prefillMs,
    ttftMs: estimate.ttftMs,
    cost: estimate.cost,
    latencySource: LATENCY_SOURCE[estimate.latencySource],
  };
}

export function placementToProto(placement: Placement): pbScheduler.Placement {
  return {
    nodeId: placement.nodeId,
    endpoint: placement.endpoint,
    level: levelToProto(placement.level),
    region: placement.region,
    estimate: estimateToProto(placement.estimate),
  };
}

const HANDOVER_REASONS: Record<HandoverReason, pbScheduler.HandoverReason> = {
  NODE_UNAVAILABLE: pbScheduler.HandoverReason.HANDOVER_REASON_NODE_UNAVAILABLE,
  BUDGET_BROKEN: pbScheduler.HandoverReason.HANDOVER_REASON_BUDGET_BROKEN,
  PREDICTED_BREAK: pbScheduler.HandoverReason.HANDOVER_REASON_PREDICTED_BREAK,
  LOST_MARGIN: pbScheduler.HandoverReason.HANDOVER_REASON_LOST_MARGIN,
};

export function handoverToProto(handover: HandoverRecord): pbScheduler.Handover {
  return {
    fromNodeId: handover.from ?? '',
    toNodeId: handover.to,
    reason: HANDOVER_REASONS[handover.reason],
    stayTtftMs: handover.stayTtftMs,
    moveTtftMs: handover.moveTtftMs,
    at: new Date(handover.atMs),
  };
}

export function explainToProto(entry: ExplainEntry): pbScheduler.ExplainEntry {
  return {
    nodeId: entry.nodeId,
    estimate: entry.estimate === undefined ? undefined : estimateToProto(entry.estimate),
    verdict: verdictToProto(entry.verdict),
    level: levelToProto(entry.level),
    region: entry.region,
  };
}

export function pricingPolicyToProto(policy: PricingPolicy): pbRegistry.PricingPolicy {
  return {
    utcOffsetHours: policy.utcOffsetHours,
    rules: policy.rules.map((rule) => ({
      level: rule.level === undefined ? pbTypes.Level.LEVEL_UNSPECIFIED : levelToProto(rule.level),
      region: rule.region ?? '',
      model: rule.model ?? '',
      factor: rule.factor,
      windowed: rule.window !== undefined,
      fromHour: rule.window?.fromHour ?? 0,
      toHour: rule.window?.toHour ?? 0,
    })),
  };
}

export function scheduledPricingToProto(change: ScheduledPricing): pbRegistry.ScheduledPricing {
  return { id: change.id, at: new Date(change.atMs), policy: pricingPolicyToProto(change.policy) };
}
