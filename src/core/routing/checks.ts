// The feasibility checks, in the order they run: the first that rejects a node is its verdict.
// This list is the single source of that order. The explain ordering, the words of a summary,
// which checks run before the estimate and which can be answered per index group all derive from
// it, so a new rule (labels, quota, session affinity) is one entry here and its test.

import type { Level, ModelOffer, NodeRecord, NodeState } from '../model.js';
import type { Estimate, RejectionVerdict, RouteRequest, Verdict } from './types.js';

/** A node about to be checked; estimated once it has passed every check that needs no estimate. */
export type Candidate =
  | {
      readonly stage: 'listed';
      readonly node: NodeRecord;
      readonly offer: ModelOffer;
      readonly state: NodeState;
    }
  | {
      readonly stage: 'estimated';
      readonly node: NodeRecord;
      readonly offer: ModelOffer;
      readonly state: NodeState;
      readonly estimate: Estimate;
      /** Requests on the offer: the last report plus reservations made since. */
      readonly load: number;
      readonly hasSlot: boolean;
    };

export type EstimatedCandidate = Extract<Candidate, { stage: 'estimated' }>;

/** What a check may read about a request, prepared once per request. */
export interface CheckScope {
  readonly request: RouteRequest;
  readonly levels: ReadonlySet<Level> | undefined;
  readonly regions: ReadonlySet<string> | undefined;
  readonly packageLevels: ReadonlySet<Level> | undefined;
}

/** Where every node of an index group agrees: same level, same region. */
export interface GroupKey {
  readonly level: Level;
  readonly region: string;
}

interface CheckBase {
  readonly verdict: RejectionVerdict;
  /** Completes "N nodes …" in a summary. */
  readonly words: string;
}

/** Whether the node offers the model: the index answers it, since it lists only nodes that do. */
export interface ModelCheck extends CheckBase {
  readonly phase: 'model';
  rejects(offer: ModelOffer | undefined): boolean;
}

/** Decided by the node's level and region alone: the index answers it for a whole group at once. */
export interface GroupCheck extends CheckBase {
  readonly phase: 'group';
  /** Whether the request constrains this at all; when not, no group is visited for it. */
  active(scope: CheckScope): boolean;
  rejects(group: GroupKey, scope: CheckScope): boolean;
}

export interface ListedCheck extends CheckBase {
  readonly phase: 'before-estimate';
  rejects(candidate: Extract<Candidate, { stage: 'listed' }>, scope: CheckScope): boolean;
}

export interface EstimatedCheck extends CheckBase {
  readonly phase: 'after-estimate';
  rejects(candidate: EstimatedCandidate, scope: CheckScope): boolean;
}

export type Check = ModelCheck | GroupCheck | ListedCheck | EstimatedCheck;

/**
 * Every check in order, phases in PHASE_ORDER (a test holds the list to that shape): what the
 * index answers without a visit, then what a node's record answers, then what needs the estimate.
 */
export const CHECKS = [
  {
    verdict: 'MODEL_NOT_SERVED',
    phase: 'model',
    words: 'do not serve the model',
    rejects: (offer) => offer === undefined,
  },
  {
    verdict: 'MODEL_NOT_IN_PACKAGE',
    phase: 'group',
    words: "serve a model the tenant's package does not include",
    active: (scope) => scope.request.packageExcludesModel === true,
    rejects: (_group, scope) => scope.request.packageExcludesModel === true,
  },
  {
    verdict: 'LEVEL_EXCLUDED',
    phase: 'group',
    words: 'at an excluded level',
    active: (scope) => scope.levels !== undefined,
    rejects: (group, scope) => scope.levels !== undefined && !scope.levels.has(group.level),
  },
  {
    verdict: 'LEVEL_NOT_IN_PACKAGE',
    phase: 'group',
    words: "at a level the tenant's package does not include",
    active: (scope) => scope.packageLevels !== undefined,
    rejects: (group, scope) => scope.packageLevels !== undefined && !scope.packageLevels.has(group.level),
  },
  {
    verdict: 'REGION_EXCLUDED',
    phase: 'group',
    words: 'in an excluded region',
    active: (scope) => scope.regions !== undefined,
    rejects: (group, scope) => scope.regions !== undefined && !scope.regions.has(group.region),
  },
  { verdict: 'DOWN', phase: 'before-estimate', words: 'down', rejects: (c) => c.state === 'DOWN' },
  {
    verdict: 'UNHEALTHY',
    phase: 'before-estimate',
    words: 'unhealthy',
    rejects: (c) => c.state === 'UNHEALTHY',
  },
  {
    verdict: 'DRAINING',
    phase: 'before-estimate',
    words: 'draining',
    rejects: (c) => c.state === 'DRAINING',
  },
  {
    verdict: 'FAILED_THIS_REQUEST',
    phase: 'before-estimate',
    words: 'already failed this request',
    rejects: (c, scope) => scope.request.failedNodes?.has(c.node.spec.id) === true,
  },
  {
    verdict: 'OVER_BUDGET',
    phase: 'after-estimate',
    words: 'over budget',
    // Even idle the node would be late: network and prefill alone exceed the budget. (Summed
    // directly, not as TTFT − queue, which rounds differently: the index bounds this very sum.)
    rejects: (c, scope) => c.estimate.networkRttMs + c.estimate.prefillMs > scope.request.latencyBudgetMs,
  },
  {
    verdict: 'AT_CAPACITY',
    phase: 'after-estimate',
    words: 'at capacity',
    rejects: (c) => !c.hasSlot,
  },
  {
    verdict: 'QUEUE_OVER_BUDGET',
    phase: 'after-estimate',
    words: 'over budget because of their queue',
    rejects: (c, scope) => c.estimate.ttftMs > scope.request.latencyBudgetMs,
  },
] as const satisfies readonly Check[];

export type Checks = readonly Check[];

/** The group checks of `checks`, in order. */
export const groupChecks = (checks: Checks): GroupCheck[] =>
  checks.filter((check): check is GroupCheck => check.phase === 'group');
export const listedChecks = (checks: Checks): ListedCheck[] =>
  checks.filter((check): check is ListedCheck => check.phase === 'before-estimate');
export const estimatedChecks = (checks: Checks): EstimatedCheck[] =>
  checks.filter((check): check is EstimatedCheck => check.phase === 'after-estimate');

export const PHASE_ORDER: readonly Check['phase'][] = ['model', 'group', 'before-estimate', 'after-estimate'];

/**
 * Explain order: the chosen first, then the near misses (the last checks), then the rest — the
 * checks list read backwards.
 */
export const VERDICT_ORDER: readonly Verdict[] = [
  'SELECTED',
  'DEGRADED_SELECTED',
  'FALLBACK',
  'FEASIBLE',
  ...[...CHECKS].reverse().map((check) => check.verdict),
];

export const VERDICT_RANK: ReadonlyMap<Verdict, number> = new Map(
  VERDICT_ORDER.map((verdict, index) => [verdict, index]),
);

/** Summary words per rejection verdict, in check order. */
export const VERDICT_WORDS: readonly (readonly [RejectionVerdict, string])[] = CHECKS.map((check) => [
  check.verdict,
  check.words,
]);
