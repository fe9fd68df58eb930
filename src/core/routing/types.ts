// The vocabulary of a routing decision: the request, the estimate of one node, the verdicts, and
// the decision with its trace. Every stage of the pipeline (see pipeline.ts) speaks these.

import type { RequestSize } from '../cost.js';
import type { ClientPosition, LatencySource } from '../latency.js';
import type { Level } from '../model.js';

export const MAX_FALLBACKS = 16;

export interface RouteRequest extends RequestSize {
  readonly requestId: string;
  readonly tenant: string;
  readonly model: string;
  readonly client: ClientPosition;
  readonly latencyBudgetMs: number;
  /** Empty: any level. */
  readonly allowedLevels: readonly Level[];
  /** Empty: any region. */
  readonly allowedRegions: readonly string[];
  /** The levels the tenant's package includes; undefined or empty: every level. */
  readonly packageLevels?: readonly Level[];
  /** The tenant's package does not include the model: every node is refused for it. */
  readonly packageExcludesModel?: boolean;
  /** Nodes that already failed this request before answering (a retry places it elsewhere). */
  readonly failedNodes?: ReadonlySet<string>;
  readonly allowDegraded: boolean;
  readonly explain: boolean;
  /** 0..MAX_FALLBACKS */
  readonly maxFallbacks: number;
}

export interface Estimate {
  readonly networkRttMs: number;
  readonly queueMs: number;
  readonly prefillMs: number;
  readonly ttftMs: number;
  readonly cost: number;
  readonly latencySource: LatencySource;
}

/** Why a node was refused: one per entry of the checks list (checks.ts), in no particular order. */
export type RejectionVerdict =
  | 'MODEL_NOT_SERVED'
  | 'MODEL_NOT_IN_PACKAGE'
  | 'LEVEL_EXCLUDED'
  | 'LEVEL_NOT_IN_PACKAGE'
  | 'REGION_EXCLUDED'
  | 'DOWN'
  | 'UNHEALTHY'
  | 'DRAINING'
  | 'FAILED_THIS_REQUEST'
  | 'OVER_BUDGET'
  | 'AT_CAPACITY'
  | 'QUEUE_OVER_BUDGET';

/** What happened to a node in a decision. */
export type Verdict = 'SELECTED' | 'FALLBACK' | 'FEASIBLE' | 'DEGRADED_SELECTED' | RejectionVerdict;

export interface Placement {
  readonly nodeId: string;
  readonly endpoint: string;
  readonly level: Level;
  readonly region: string;
  readonly model: string;
  readonly estimate: Estimate;
}

export interface ExplainEntry {
  readonly nodeId: string;
  readonly level: Level;
  readonly region: string;
  readonly verdict: Verdict;
  /** Absent for nodes rejected before estimation. */
  readonly estimate: Estimate | undefined;
}

/**
 * What the decision saw. `rejected` and `feasible` count the nodes that were evaluated (or, for
 * level and region exclusions, counted from the index without a visit). `unevaluated` nodes were
 * never looked at: they are too far to meet the budget on distance alone, or dearer than the
 * placements already found. So each count is a lower bound of what a full scan would find, and
 * `serving = feasible + Σ rejected + unevaluated` always holds. With explain over every serving
 * node the counts are exact and `unevaluated` is 0.
 */
export interface DecisionCounts {
  readonly serving: number;
  readonly evaluated: number;
  readonly unevaluated: number;
  readonly feasible: number;
  readonly rejected: Readonly<Partial<Record<RejectionVerdict, number>>>;
  /**
   * The search stopped at its work cap (RouteContext.maxVisits) before it could rule the rest
   * out: the placement is the best of the nodes examined, and the reason is judged from them.
   * Happens only when a huge number of nodes are within reach yet refused (a saturated fleet).
   */
  readonly truncated: boolean;
}

/**
 * - NO_LIVE_NODE: no node that serves the model is up and healthy (→ NOT_FOUND);
 * - NO_NODE_WITHIN_CONSTRAINTS: live nodes serve it but none meets budget and constraints even
 *   idle (→ FAILED_PRECONDITION);
 * - ALL_FULL: some would meet budget and constraints but have no usable slot (→ RESOURCE_EXHAUSTED).
 */
export type InfeasibleReason = 'NO_LIVE_NODE' | 'NO_NODE_WITHIN_CONSTRAINTS' | 'ALL_FULL';

/** A request turned away before any node was looked at (quota, rate): see admission.ts. */
/** Stable reasons a program can switch on (google.rpc.ErrorInfo reason). */
export type RefusalReason =
  | 'QUOTA_EXCEEDED'
  | 'MODEL_NOT_IN_PACKAGE'
  | 'RATE_LIMITED'
  | 'TOO_MANY_RESERVATIONS';

export interface Refusal {
  /** The admission rule that refused, e.g. "quota". */
  readonly rule: string;
  readonly reason?: RefusalReason;
  /** What the caller should change, for the error message. */
  readonly message: string;
  /** When trying again may succeed; undefined when it will not by waiting. */
  readonly retryAfterMs: number | undefined;
}

export type RouteDecision =
  | {
      readonly kind: 'placed';
      readonly placement: Placement;
      /** Ordered feasible alternatives; not reserved. Empty when degraded. */
      readonly fallbacks: readonly Placement[];
      readonly degraded: boolean;
      readonly counts: DecisionCounts;
      readonly explain: readonly ExplainEntry[];
      /** Nodes the explain list left out because of the cap (0 when complete). */
      readonly explainOmitted: number;
      readonly summary: string;
    }
  | {
      readonly kind: 'infeasible';
      readonly reason: InfeasibleReason;
      /** Lowest TTFT of any node that is ready and within the level/region constraints. */
      readonly bestTtftMs: number | undefined;
      readonly counts: DecisionCounts;
      readonly explain: readonly ExplainEntry[];
      readonly explainOmitted: number;
      readonly summary: string;
    }
  | {
      readonly kind: 'refused';
      readonly refusal: Refusal;
      readonly summary: string;
    };
