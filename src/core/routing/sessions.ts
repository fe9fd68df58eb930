// Mobility sessions: one placement that follows a moving client. Pure: the caller passes the time,
// the client's fixes and the routing context; the rule answers stay or hand over, and why.
//
// Affinity is in the estimate, not in a constant: the session's node keeps the conversation's
// context warm, so staying prefills only the new tokens (and bills the context at the cache-hit
// price), while any other node must prefill the whole context again. A move must be worth that.
//
// The rule, at each update (position P now; P' where the client will be one look-ahead later, from
// its last two fixes or its heading and speed):
// 1. The current node is gone, down, unhealthy or draining → hand over now (NODE_UNAVAILABLE).
// 2. Staying breaks the budget at P → hand over now (BUDGET_BROKEN), to the cheapest node that keeps
//    the margin at P (and meets the budget at P' if one does), else — after the dwell time only —
//    the cheapest merely within it.
// 3. A client that is not moving, or within the dwell time after the last handover, stays.
// 4. Staying keeps the budget's margin at P' → stay.
// 5. Otherwise move before the budget breaks (PREDICTED_BREAK when staying would break it at P',
//    LOST_MARGIN when it would only lose the margin): to the cheapest node that keeps the margin
//    at P' and meets the budget at P, else one that meets the budget at both; with none, stay.
// With nowhere to go in 1–2 the session is stranded: it keeps its node, marked degraded.

import { type ClientPosition, EARTH_RADIUS_KM, greatCircleKm } from '../latency.js';
import { findOffer, type LatLon, type NodeRecord, nodeState } from '../model.js';
import { decideRoute, estimateOn, offerLoad, type RouteContext } from './pipeline.js';
import type { Estimate, Placement, RouteRequest } from './types.js';

/** The routing context, and the registry's nodes by id. */
export interface SessionContext extends RouteContext {
  node(nodeId: string): NodeRecord | undefined;
}

/** A position of the client at a time. */
export interface Fix {
  readonly lat: number;
  readonly lon: number;
  readonly atMs: number;
}

export interface Motion {
  /** Degrees clockwise from north. */
  readonly headingDeg?: number;
  readonly speedKmh?: number;
}

export interface SessionRule {
  /** Staying must leave this fraction of the budget spare, or a node that does is sought (0..0.9). */
  readonly margin: number;
  /** After a handover, no proactive handover for this long. */
  readonly dwellMs: number;
  /** How far ahead to predict: the gap between the last two fixes, else this. */
  readonly lookaheadMs: number;
}

export const DEFAULT_SESSION_RULE: SessionRule = { margin: 0.1, dwellMs: 60_000, lookaheadMs: 30_000 };

/** The most a prediction looks ahead, whatever the gap between fixes. */
export const MAX_LOOKAHEAD_MS = 10 * 60_000;

export type HandoverReason = 'NODE_UNAVAILABLE' | 'BUDGET_BROKEN' | 'PREDICTED_BREAK' | 'LOST_MARGIN';

/** What the rule needs to know of a session. */
export interface SessionState {
  /** Every request of the session: model, budget, new tokens, constraints, tenant. */
  readonly request: RouteRequest;
  /** Tokens of conversation state the session's node keeps warm. */
  readonly contextTokens: number;
  /** The node now; undefined when stranded with nowhere to go. */
  readonly nodeId: string | undefined;
  /** When the session last moved (or opened). */
  readonly placedAtMs: number;
  /** The client's latest fixes, oldest first (the last one is where it is now). */
  readonly track: readonly Fix[];
  readonly motion: Motion;
}

export type SessionOutcome =
  | {
      readonly kind: 'stay';
      /** Staying, at the client's position now. */
      readonly estimate: Estimate;
      /** Staying, at the predicted position (undefined without a prediction). */
      readonly predicted: Estimate | undefined;
    }
  | {
      readonly kind: 'handover';
      readonly reason: HandoverReason;
      readonly to: Placement;
      /** TTFT of staying where the decision looked (P for 1–2, P' for 4–5); undefined if the node is gone. */
      readonly stayTtftMs: number | undefined;
      /** TTFT of moving there, the context prefilled again. */
      readonly moveTtftMs: number;
    }
  | {
      readonly kind: 'stranded';
      readonly reason: 'NODE_UNAVAILABLE' | 'BUDGET_BROKEN';
      /** Staying at P, if the node still exists. */
      readonly estimate: Estimate | undefined;
    };

/** Where the client will be `lookahead` after its last fix: from its last two fixes, else heading and speed. */
export function predictFix(track: readonly Fix[], motion: Motion, rule: SessionRule): Fix | undefined {
  const last = track[track.length - 1];
  if (last === undefined) return undefined;
  const before = track[track.length - 2];
  if (before !== undefined && last.atMs > before.atMs) {
    const gap = last.atMs - before.atMs;
    const ahead = Math.min(gap, MAX_LOOKAHEAD_MS);
    const f = ahead / gap;
    return {
      lat: clampLat(last.lat + (last.lat - before.lat) * f),
      lon: wrapLon(last.lon + (last.lon - before.lon) * f),
      atMs: last.atMs + ahead,
    };
  }
  if (motion.headingDeg === undefined || motion.speedKmh === undefined || motion.speedKmh <= 0)
    return undefined;
  const ahead = Math.min(rule.lookaheadMs, MAX_LOOKAHEAD_MS);
  const km = (motion.speedKmh * ahead) / 3_600_000;
  return { ...destination(last, motion.headingDeg, km), atMs: last.atMs + ahead };
}

/** The point `km` from `from` along the initial bearing `bearingDeg` on a sphere. */
export function destination(from: LatLon, bearingDeg: number, km: number): LatLon {
  const rad = Math.PI / 180;
  const d = km / EARTH_RADIUS_KM;
  const lat1 = from.lat * rad;
  const lon1 = from.lon * rad;
  const brg = bearingDeg * rad;
  const lat2 = Math.asin(Math.sin(lat1) * Math.cos(d) + Math.cos(lat1) * Math.sin(d) * Math.cos(brg));
  const lon2 =
    lon1 +
    Math.atan2(Math.sin(brg) * Math.sin(d) * Math.cos(lat1), Math.cos(d) - Math.sin(lat1) * Math.sin(lat2));
  return { lat: clampLat(lat2 / rad), lon: wrapLon(lon2 / rad) };
}

const clampLat = (lat: number) => Math.max(-90, Math.min(90, lat));
const wrapLon = (lon: number) => ((((lon + 180) % 360) + 360) % 360) - 180;

function at(position: ClientPosition, fix: Fix): ClientPosition {
  return { ...position, location: { lat: fix.lat, lon: fix.lon } };
}

/** The request as seen from `client`, with the context warm on `warmNode` only. */
function sessionRequest(state: SessionState, client: ClientPosition): RouteRequest {
  return {
    ...state.request,
    client,
    inputTokens: state.request.inputTokens + state.contextTokens,
    cachedInputTokens: state.request.cachedInputTokens,
  };
}

/** Staying on the current node, seen from `client` (context warm); undefined if it cannot serve. */
export function stayEstimate(
  state: SessionState,
  client: ClientPosition,
  ctx: SessionContext,
): Estimate | undefined {
  if (state.nodeId === undefined) return undefined;
  const node = ctx.node(state.nodeId);
  const offer = node === undefined ? undefined : findOffer(node.spec, state.request.model);
  if (node === undefined || offer === undefined) return undefined;
  const warm = sessionRequest(state, client);
  const load = offerLoad(node, state.request.model, ctx.reservations);
  return estimateOn(
    { ...warm, cachedInputTokens: Math.min(warm.inputTokens, warm.cachedInputTokens + state.contextTokens) },
    node,
    offer,
    // The session's own slot is already counted in the load: staying adds nothing to it.
    Math.max(0, load - 1),
    ctx,
  );
}

function nodeAvailable(state: SessionState, ctx: SessionContext): boolean {
  if (state.nodeId === undefined) return false;
  const node = ctx.node(state.nodeId);
  return (
    node !== undefined &&
    nodeState(node, ctx.nowMs) === 'READY' &&
    findOffer(node.spec, state.request.model) !== undefined
  );
}

/**
 * The cheapest node other than the current one that is feasible seen from `target` (context
 * prefilled again) and, when `also` is given, within `budget` seen from `also` too.
 */
function bestMove(
  state: SessionState,
  target: ClientPosition,
  also: ClientPosition | undefined,
  budgetAt: (estimate: Estimate) => boolean,
  ctx: SessionContext,
  alsoAt: (estimate: Estimate) => boolean = budgetAt,
): { placement: Placement; alsoTtftMs: number | undefined } | undefined {
  const failed = new Set(state.request.failedNodes ?? []);
  if (state.nodeId !== undefined) failed.add(state.nodeId);
  const request: RouteRequest = {
    ...sessionRequest(state, target),
    failedNodes: failed,
    allowDegraded: false,
    explain: false,
    maxFallbacks: 16,
  };
  const decision = decideRoute(request, { ...ctx, admission: [] });
  if (decision.kind !== 'placed') return undefined;
  for (const placement of [decision.placement, ...decision.fallbacks]) {
    if (!budgetAt(placement.estimate)) continue;
    if (also === undefined) return { placement, alsoTtftMs: undefined };
    const node = ctx.node(placement.nodeId);
    const offer = node === undefined ? undefined : findOffer(node.spec, state.request.model);
    if (node === undefined || offer === undefined) continue;
    const load = offerLoad(node, state.request.model, ctx.reservations);
    const there = estimateOn(sessionRequest(state, also), node, offer, load, ctx);
    if (alsoAt(there)) return { placement, alsoTtftMs: there.ttftMs };
  }
  return undefined;
}

/** Stay or hand over, for the client's latest fix (state.track's last) at ctx.nowMs. */
export function reconsider(
  state: SessionState,
  position: ClientPosition,
  ctx: SessionContext,
  rule: SessionRule,
): SessionOutcome {
  const budget = state.request.latencyBudgetMs;
  const last = state.track[state.track.length - 1];
  const here = last === undefined ? position : at(position, last);
  const ahead = predictFix(state.track, state.motion, rule);
  const there = ahead === undefined ? undefined : at(position, ahead);
  const within = (limit: number) => (estimate: Estimate) => estimate.ttftMs <= limit;
  const withMargin = budget * (1 - rule.margin);

  const stay = nodeAvailable(state, ctx) ? stayEstimate(state, here, ctx) : undefined;
  const forced: 'NODE_UNAVAILABLE' | 'BUDGET_BROKEN' | undefined =
    stay === undefined ? 'NODE_UNAVAILABLE' : stay.ttftMs > budget ? 'BUDGET_BROKEN' : undefined;
  if (forced !== undefined) {
    // Now, to a node that keeps the margin here (so that jitter at a border does not bounce the
    // session straight back), ahead too if one does; else one merely within the budget — except
    // within the dwell time after a handover, when a node that only just broke the budget keeps
    // the session (degraded) rather than bouncing it to another that only just meets it.
    const settling = forced === 'BUDGET_BROKEN' && ctx.nowMs - state.placedAtMs < rule.dwellMs;
    const move =
      (there === undefined
        ? undefined
        : bestMove(state, here, there, within(withMargin), ctx, within(budget))) ??
      bestMove(state, here, undefined, within(withMargin), ctx) ??
      (settling
        ? undefined
        : ((there === undefined ? undefined : bestMove(state, here, there, within(budget), ctx)) ??
          bestMove(state, here, undefined, within(budget), ctx)));
    if (move === undefined) {
      const node = state.nodeId === undefined ? undefined : ctx.node(state.nodeId);
      return {
        kind: 'stranded',
        reason: forced,
        estimate: node === undefined ? undefined : stayEstimate(state, here, ctx),
      };
    }
    return {
      kind: 'handover',
      reason: forced,
      to: move.placement,
      stayTtftMs: stay?.ttftMs,
      moveTtftMs: move.placement.estimate.ttftMs,
    };
  }
  const current = stay as Estimate;
  // Moving: the prediction is more than a metre from where it is.
  const moving = ahead !== undefined && last !== undefined && greatCircleKm(ahead, last) > 0.001;
  const predicted = moving && there !== undefined ? stayEstimate(state, there, ctx) : undefined;
  const staying: SessionOutcome = { kind: 'stay', estimate: current, predicted };
  // A client that is not moving keeps its node while it is feasible; one that just moved keeps it
  // for the dwell time.
  if (there === undefined || predicted === undefined || ctx.nowMs - state.placedAtMs < rule.dwellMs)
    return staying;
  if (predicted.ttftMs <= withMargin) return staying;
  // Ahead, staying loses the margin (or breaks the budget): move before it breaks, to the cheapest
  // node that keeps the margin ahead and meets the budget here — or, failing that, one that meets
  // the budget at both.
  const move =
    bestMove(state, there, here, within(withMargin), ctx, within(budget)) ??
    bestMove(state, there, here, within(budget), ctx);
  if (move === undefined) return staying;
  return {
    kind: 'handover',
    reason: predicted.ttftMs > budget ? 'PREDICTED_BREAK' : 'LOST_MARGIN',
    to: move.placement,
    stayTtftMs: predicted.ttftMs,
    moveTtftMs: move.placement.estimate.ttftMs,
  };
}

/** Where a session opens: the cheapest feasible node for its first request, the context cold everywhere. */
export function placeSession(
  state: Omit<SessionState, 'nodeId' | 'placedAtMs'>,
  position: ClientPosition,
  ctx: SessionContext,
) {
  const last = state.track[state.track.length - 1];
  const here = last === undefined ? position : at(position, last);
  return decideRoute(sessionRequest({ ...state, nodeId: undefined, placedAtMs: 0 }, here), ctx);
}
