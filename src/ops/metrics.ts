// Prometheus metrics for one control-plane process (prom-client, on its own Registry so several
// servers in one process — tests — do not collide). The core never records: the server hands each
// decision (its trace) to recordDecision, and gauges are read from the store at scrape time.

import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { LEVELS, nodeState } from '../core/model.js';
import type { InfeasibleReason, RouteDecision } from '../core/routing/index.js';
import type { Store } from '../store/store.js';

export interface MetricsSources {
  readonly store: Store;
  readonly clock: () => number;
  /** Reservations this replica holds, per node and model (see ControlPlane.reservedOn). */
  readonly reservedOn: (nodeId: string) => ReadonlyMap<string, number>;
  readonly isLeader: () => boolean;
  /** Regions labelled by name at most; the rest are summed under region="other" (default 64). */
  readonly maxRegionLabels?: number;
  /** Mobility sessions open (every replica's, as this one knows them). */
  readonly sessions?: () => number;
}

export const DEFAULT_MAX_REGION_LABELS = 64;
export const OTHER_REGION = 'other';

/**
 * The region label of each node: its region if that is one of the `max` regions with the most
 * nodes (ties by name), else "other". Whatever regions clients register, a scrape holds at most
 * max + 1 region values per metric.
 */
export function regionLabels(
  nodes: Iterable<{ spec: { region: string } }>,
  max: number,
): (region: string) => string {
  const counts = new Map<string, number>();
  for (const node of nodes) counts.set(node.spec.region, (counts.get(node.spec.region) ?? 0) + 1);
  if (counts.size <= max) return (region) => region;
  const kept = new Set(
    [...counts.entries()]
      .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0))
      .slice(0, max)
      .map(([region]) => region),
  );
  return (region) => (kept.has(region) ? region : OTHER_REGION);
}

/** Observations a batch holds at most before it hands them on (see Batch). */
const BATCH_SIZE = 1024;

/**
 * Observations on the request path, kept as (series, value) pairs in typed arrays and handed to
 * prom-client in one loop when the batch is full or a scrape reads the metrics. A prom-client
 * observe (label hashing and checks, a closure, bucket keys made from numbers) cost 7 µs of a
 * busy server's Route, in code the rest of the Route had pushed out of the CPU's caches; in a
 * loop it costs a fraction of that. Series are the indices of `apply`'s label sets.
 */
class Batch {
  private readonly series = new Int32Array(BATCH_SIZE);
  private readonly values = new Float64Array(BATCH_SIZE);
  private size = 0;

  constructor(private readonly apply: (series: number, value: number) => void) {}

  add(series: number, value: number): void {
    this.series[this.size] = series;
    this.values[this.size] = value;
    this.size += 1;
    if (this.size === BATCH_SIZE) this.flush();
  }

  flush(): void {
    const size = this.size;
    this.size = 0;
    for (let i = 0; i < size; i += 1) this.apply(this.series[i] as number, this.values[i] as number);
  }
}

/** The outcome label of an infeasible decision, by its reason (every reason has one). */
const INFEASIBLE_OUTCOME: Readonly<Record<InfeasibleReason, string>> = {
  NO_LIVE_NODE: 'no_live_node',
  NO_NODE_WITHIN_CONSTRAINTS: 'no_node_within_constraints',
  ALL_FULL: 'all_full',
};
/** The outcome and level labels of cpn_route_decisions_total, by index. */
const OUTCOMES = ['placed', 'degraded', 'refused', ...Object.values(INFEASIBLE_OUTCOME)];
const LEVEL_LABELS = [...LEVELS, 'none'];
/**
 * Series of the decision batch: outcome × level (each a count of decisions), then the decision
 * time, then the slack at each level.
 */
const outcomeSeries = (outcome: string, level: string): number =>
  OUTCOMES.indexOf(outcome) * LEVEL_LABELS.length + LEVEL_LABELS.indexOf(level);
const DECISION_SECONDS = OUTCOMES.length * LEVEL_LABELS.length;
const SLACK_SERIES = DECISION_SECONDS + 1;
/** The series a decision counts in, worked out once rather than per Route. */
const PLACED_AT = LEVELS.map((level) => outcomeSeries('placed', level));
const DEGRADED_AT = LEVELS.map((level) => outcomeSeries('degraded', level));
const REFUSED = outcomeSeries('refused', 'none');
const INFEASIBLE = Object.fromEntries(
  Object.entries(INFEASIBLE_OUTCOME).map(([reason, outcome]) => [reason, outcomeSeries(outcome, 'none')]),
) as Readonly<Record<InfeasibleReason, number>>;

export class ControlPlaneMetrics {
  readonly registry = new Registry();
  private readonly decisions: Counter<'outcome' | 'level'>;
  private readonly decisionSeconds: Histogram;
  private readonly slackSeconds: Histogram<'level'>;
  private readonly rpcs: Counter<'method' | 'code'>;
  private readonly streamMessages: Counter<'method'>;
  private readonly handovers: Counter<'reason'>;
  private readonly storeErrors: Counter;
  private readonly authFailures: Counter<'reason'>;
  private readonly quotaAdmissions: Counter<'outcome'>;
  private readonly quotaPoints: Counter<'kind'>;
  /** Decisions (outcome and level, time, slack) and finished RPCs, recorded in batches. */
  private readonly decisionBatch = new Batch((series, value) => this.applyDecision(series, value));
  private readonly rpcBatch = new Batch((series) => this.applyRpc(series));
  /** The (method, code) label pairs of rpcBatch's series, and their indices (bounded: see recordRpc). */
  private readonly rpcSeries: { method: string; code: string }[] = [];
  private readonly rpcSeriesIndex = new Map<string, Map<string, number>>();

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    const maxRegions = sources.maxRegionLabels ?? DEFAULT_MAX_REGION_LABELS;
    const labeller = () => regionLabels(sources.store.view.allNodes(), maxRegions);
    collectDefaultMetrics({ register: this.registry, prefix: 'cpn_' });
    // prom-client exports these gauges with a counter's _total suffix, which promtool rejects.
    this.registry.removeSingleMetric('cpn_nodejs_active_handles_total');
    this.registry.removeSingleMetric('cpn_nodejs_active_requests_total');
    this.registry.removeSingleMetric('cpn_nodejs_active_resources_total');
    this.decisions = new Counter({
      name: 'cpn_route_decisions_total',
      help: 'Route decisions by outcome (placed, degraded, or why not) and chosen level',
      labelNames: ['outcome', 'level'],
      registers,
      collect: () => this.decisionBatch.flush(),
    });
    this.decisionSeconds = new Histogram({
      name: 'cpn_route_decision_seconds',
      help: 'Time to decide a route (core decision and reservation), seconds',
      buckets: [
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
        0.1,
      ],
      registers,
      collect: () => this.decisionBatch.flush(),
    });
    this.slackSeconds = new Histogram({
      name: 'cpn_placement_slack_seconds',
      help: 'Latency budget minus estimated TTFT of placements, seconds (negative when degraded)',
      labelNames: ['level'],
      buckets: [-1, -0.1, 0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
      collect: () => this.decisionBatch.flush(),
    });
    this.rpcs = new Counter({
      name: 'cpn_rpc_requests_total',
      help: 'gRPC requests handled, by method and status code',
      labelNames: ['method', 'code'],
      registers,
      collect: () => this.rpcBatch.flush(),
    });
    this.handovers = new Counter({
      name: 'cpn_session_handovers_total',
      help: 'Mobility sessions moved to another node by this replica, by reason (node_unavailable, budget_broken, predicted_break, lost_margin)',
      labelNames: ['reason'],
      registers,
    });
    new Gauge({
      name: 'cpn_sessions',
      help: 'Mobility sessions open',
      registers,
      collect() {
        this.set(sources.sessions?.() ?? 0);
      },
    });
    this.streamMessages = new Counter({
      name: 'cpn_rpc_stream_messages_total',
      help: 'Messages read from clients on streaming RPCs (Heartbeat: one per status, drain or goodbye), by method',
      labelNames: ['method'],
      registers,
    });
    this.storeErrors = new Counter({
      name: 'cpn_store_errors_total',
      help: 'Store operations that failed because the store was unreachable',
      registers,
    });
    this.quotaAdmissions = new Counter({
      name: 'cpn_quota_admissions_total',
      help: 'Routes of metered tenants by quota outcome: within, over_quota (PAY_AS_YOU_GO), throttled, quota_exceeded, rate_limited, model_not_in_package',
      labelNames: ['outcome'],
      registers,
    });
    this.quotaPoints = new Counter({
      name: 'cpn_quota_points_total',
      help: 'Quota points held at Route (reserved) and counted at Release (settled)',
      labelNames: ['kind'],
      registers,
    });
    this.authFailures = new Counter({
      name: 'cpn_auth_failures_total',
      help: 'Calls refused by authentication (missing, malformed, unknown_key, wrong_secret, revoked, expired, busy, bad_certificate) or by role (forbidden)',
      labelNames: ['reason'],
      registers,
    });
    new Gauge({
      name: 'cpn_nodes',
      help: 'Registered nodes by level, region and state',
      labelNames: ['level', 'region', 'state'],
      registers,
      collect() {
        this.reset();
        const regionOf = labeller();
        const nowMs = sources.clock();
        for (const node of sources.store.view.allNodes()) {
          this.inc({
            level: node.spec.level,
            region: regionOf(node.spec.region),
            state: nodeState(node, nowMs),
          });
        }
      },
    });
    new Gauge({
      name: 'cpn_slots',
      help: 'Inference slots (max_concurrency summed over models) by level and region',
      labelNames: ['level', 'region'],
      registers,
      collect() {
        this.reset();
        const regionOf = labeller();
        for (const node of sources.store.view.allNodes()) {
          const slots = node.spec.models.reduce((sum, offer) => sum + offer.maxConcurrency, 0);
          this.inc({ level: node.spec.level, region: regionOf(node.spec.region) }, slots);
        }
      },
    });
    new Gauge({
      name: 'cpn_gpus',
      help: 'GPUs of registered nodes by level and region',
      labelNames: ['level', 'region'],
      registers,
      collect() {
        this.reset();
        const regionOf = labeller();
        for (const node of sources.store.view.allNodes()) {
          const gpus = node.spec.gpus.reduce((sum, gpu) => sum + gpu.count, 0);
          this.inc({ level: node.spec.level, region: regionOf(node.spec.region) }, gpus);
        }
      },
    });
    new Gauge({
      name: 'cpn_reserved_slots',
      help: 'Slots reserved by this replica and not yet covered by a status report, by level and region',
      labelNames: ['level', 'region'],
      registers,
      collect() {
        this.reset();
        const regionOf = labeller();
        for (const node of sources.store.view.allNodes()) {
          let reserved = 0;
          for (const count of sources.reservedOn(node.spec.id).values()) reserved += count;
          if (reserved > 0)
            this.inc({ level: node.spec.level, region: regionOf(node.spec.region) }, reserved);
        }
      },
    });
    new Gauge({
      name: 'cpn_store_staleness_seconds',
      help: 'Seconds since the registry cache last confirmed it is current with its store',
      registers,
      collect() {
        this.set(sources.store.health().stalenessMs / 1000);
      },
    });
    new Gauge({
      name: 'cpn_store_reachable',
      help: '1 when the last call to the store succeeded',
      registers,
      collect() {
        this.set(sources.store.health().reachable ? 1 : 0);
      },
    });
    new Gauge({
      name: 'cpn_leader',
      help: '1 while this replica runs the cluster-wide jobs',
      registers,
      collect() {
        this.set(sources.isLeader() ? 1 : 0);
      },
    });
    // Make every level appear from the start, so dashboards have series before the first route.
    for (const level of LEVELS) this.decisions.inc({ outcome: 'placed', level }, 0);
  }

  recordDecision(decision: RouteDecision, budgetMs: number, seconds: number): void {
    const batch = this.decisionBatch;
    batch.add(DECISION_SECONDS, seconds);
    if (decision.kind === 'refused') {
      batch.add(REFUSED, 1);
      return;
    }
    if (decision.kind === 'infeasible') {
      batch.add(INFEASIBLE[decision.reason], 1);
      return;
    }
    const level = LEVELS.indexOf(decision.placement.level);
    batch.add((decision.degraded ? DEGRADED_AT : PLACED_AT)[level] as number, 1);
    batch.add(SLACK_SERIES + level, (budgetMs - decision.placement.estimate.ttftMs) / 1000);
  }

  private applyDecision(series: number, value: number): void {
    if (series === DECISION_SECONDS) this.decisionSeconds.observe(value);
    else if (series >= SLACK_SERIES)
      this.slackSeconds.observe({ level: LEVEL_LABELS[series - SLACK_SERIES] as string }, value);
    else
      this.decisions.inc({
        outcome: OUTCOMES[Math.floor(series / LEVEL_LABELS.length)] as string,
        level: LEVEL_LABELS[series % LEVEL_LABELS.length] as string,
      });
  }

  /** `method` and `code` come from the server's own method table and gRPC's status codes: bounded. */
  recordRpc(method: string, code: string): void {
    let byCode = this.rpcSeriesIndex.get(method);
    if (byCode === undefined) {
      byCode = new Map();
      this.rpcSeriesIndex.set(method, byCode);
    }
    let series = byCode.get(code);
    if (series === undefined) {
      series = this.rpcSeries.length;
      this.rpcSeries.push({ method, code });
      byCode.set(code, series);
    }
    this.rpcBatch.add(series, 1);
  }

  private applyRpc(series: number): void {
    this.rpcs.inc(this.rpcSeries[series] as { method: string; code: string });
  }

  recordHandover(reason: string): void {
    this.handovers.inc({ reason: reason.toLowerCase() });
  }

  recordStreamMessage(method: string): void {
    this.streamMessages.inc({ method });
  }

  recordStoreError(): void {
    this.storeErrors.inc();
  }

  /** One metered Route: its quota outcome and the points it held. */
  recordQuotaAdmission(outcome: string, reservedPoints: number): void {
    this.quotaAdmissions.inc({ outcome });
    if (reservedPoints > 0) this.quotaPoints.inc({ kind: 'reserved' }, reservedPoints);
  }

  recordSettledPoints(points: number): void {
    if (points > 0) this.quotaPoints.inc({ kind: 'settled' }, points);
  }

  recordAuthFailure(reason: string): void {
    this.authFailures.inc({ reason });
  }
}
