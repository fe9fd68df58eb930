// gRPC adapters for Registry and Scheduler: validate → control plane → convert. No logic here
// beyond mapping; decisions live in the core, status codes in errors.ts.

import { Metadata, status } from '@grpc/grpc-js';
import { BoundedQueue } from '../common/bounded-queue.js';
import { KeyCounts } from '../common/key-counts.js';
import { parseReservationId } from '../core/reservations.js';
import type { RouteDecision } from '../core/routing/index.js';
import type { HeartbeatRequest, HeartbeatResponse, RegistryServer } from '../gen/cpn/v1/registry.js';
import {
  type RouteRequest,
  RouteResponse,
  type SchedulerServer,
  type WatchSessionRequest,
  type WatchSessionResponse,
} from '../gen/cpn/v1/scheduler.js';
import { NodeState, type NodeStatus as pbNodeStatus } from '../gen/cpn/v1/types.js';
import type { ControlPlane, NodeView } from '../plane/control-plane.js';
import type { SessionView } from '../plane/sessions.js';
import { ownNode, tenantFor } from './access.js';
import {
  explainToProto,
  handoverToProto,
  levelToProto,
  nodeStateToProto,
  nodeToProto,
  placementToProto,
  pricingPolicyToProto,
  scheduledPricingToProto,
} from './convert.js';
import {
  ApiError,
  failedPrecondition,
  infeasibleError,
  invalidArgument,
  notFound,
  refusedError,
} from './errors.js';
import {
  bidiMethods,
  type ErrorSink,
  latestOnly,
  type RpcContext,
  serverStreamMethods,
  unaryMethods,
} from './rpc.js';
import {
  checkNodeId,
  LIMITS,
  pageTokenAfter,
  toLatencyReports,
  toNodeFilter,
  toNodePage,
  toNodeSpec,
  toNodeStatus,
  toOpenSession,
  toPricingId,
  toPricingPolicy,
  toRegisterOptions,
  toReservationId,
  toRouteRequest,
  toScheduleTime,
  toSessionId,
  toUpdateSession,
  toUsage,
} from './validate.js';

/** Trailing-metadata key that carries a serialized RouteResponse (explain list) on a failed Route. */
export const ROUTE_RESPONSE_TRAILER = 'cpn-route-response-bin';

export interface EventSink extends ErrorSink {
  info(message: string, fields: Record<string, unknown>): void;
  debug(message: string, fields: Record<string, unknown>): void;
}

const viewToProto = (view: NodeView) => nodeToProto(view.record, view.state, view.reserved);

export interface HeartbeatLimits {
  /** Heartbeat streams open at once on one replica. */
  readonly maxStreams: number;
  /** … and per node: an agent needs one; a reconnect may briefly overlap the old stream. */
  readonly maxStreamsPerNode: number;
  /** A stream must name its node (its first status) this soon after opening. */
  readonly firstMessageMs: number;
}

export const DEFAULT_HEARTBEAT_LIMITS: HeartbeatLimits = {
  maxStreams: 50_000,
  maxStreamsPerNode: 4,
  firstMessageMs: 10_000,
};

/** A registry this large refuses new nodes (re-registrations still go through). */
export const DEFAULT_MAX_NODES = 200_000;

export function registryService(
  plane: ControlPlane,
  log: EventSink,
  context: RpcContext,
  maxNodes = DEFAULT_MAX_NODES,
  heartbeatLimits: Partial<HeartbeatLimits> = {},
): RegistryServer {
  const limits: HeartbeatLimits = { ...DEFAULT_HEARTBEAT_LIMITS, ...heartbeatLimits };
  const unary = unaryMethods(context);
  const bidi = bidiMethods(context);
  /** Heartbeat streams open, in all and per node. */
  const heartbeats = { open: 0, perNode: new KeyCounts() };
  /** Applies one status report (ReportStatus or a heartbeat): the node's state after it. */
  const report = async (request: pbNodeStatus, nodeId: string): Promise<NodeState> => {
    const outcome = await plane.reportStatus(toNodeStatus(request, plane.specOf(nodeId)));
    if (outcome.kind === 'unknown_node')
      throw notFound(`node ${nodeId} is not registered; call RegisterNode first`);
    if (outcome.kind === 'expired') {
      throw failedPrecondition(
        `node ${nodeId}'s registration expired at ${new Date(outcome.expiredAtMs).toISOString()}; call RegisterNode again`,
      );
    }
    return nodeStateToProto(outcome.node.state);
  };
  return {
    registerNode: unary('RegisterNode', async (request, _call, caller) => {
      const spec = toNodeSpec(request.spec);
      ownNode(caller, 'RegisterNode', spec.id);
      if (spec.parentId !== '' && plane.getNode(spec.parentId) === undefined)
        throw invalidArgument(
          `spec.parent_id ${spec.parentId} is not registered; register the parent first, or leave it empty`,
        );
      const count = plane.storeStatus().nodes;
      if (count >= maxNodes && plane.getNode(spec.id) === undefined) {
        throw new ApiError(
          status.RESOURCE_EXHAUSTED,
          `the registry holds ${count} nodes, the most this control plane accepts (--max-nodes ${maxNodes}); deregister nodes or raise the limit`,
        );
      }
      const { node, created } = await plane.registerNode(spec, toRegisterOptions(request));
      log.info(created ? 'node registered' : 'node re-registered', {
        node: spec.id,
        level: spec.level,
        region: spec.region,
      });
      return { node: viewToProto(node), created };
    }),
    reportStatus: unary('ReportStatus', async (request, _call, caller) => {
      const nodeId = checkNodeId('node_id', request.nodeId);
      ownNode(caller, 'ReportStatus', nodeId);
      return { state: await report(request, nodeId) };
    }),
    heartbeat: bidi<HeartbeatRequest, HeartbeatResponse>(
      'Heartbeat',
      async (messages, send, caller) => {
        if (heartbeats.open >= limits.maxStreams)
          throw new ApiError(
            status.RESOURCE_EXHAUSTED,
            `Heartbeat: ${heartbeats.open} streams are open on this replica, the most it serves (${limits.maxStreams}); use another replica`,
          );
        heartbeats.open += 1;
        let nodeId: string | undefined;
        try {
          const bound = (kind: string): string => {
            if (nodeId === undefined)
              throw invalidArgument(
                `Heartbeat: the first message must be a status (it names the node), not ${kind}`,
              );
            return nodeId;
          };
          for await (const message of messages) {
            if (message.status !== undefined) {
              const id = checkNodeId('status.node_id', message.status.nodeId);
              if (nodeId === undefined) {
                ownNode(caller, 'Heartbeat', id);
                if (heartbeats.perNode.of(id) >= limits.maxStreamsPerNode)
                  throw new ApiError(
                    status.RESOURCE_EXHAUSTED,
                    `Heartbeat: node ${id} already has ${limits.maxStreamsPerNode} streams open on this replica, the most it allows; close the others`,
                  );
                heartbeats.perNode.add(id);
              } else if (id !== nodeId)
                throw invalidArgument(
                  `Heartbeat: status.node_id ${id}, but this stream is for node ${nodeId}; open one stream per node`,
                );
              nodeId = id;
              await send({ state: await report(message.status, id) });
            } else if (message.drain !== undefined) {
              const id = bound('a drain');
              const node = await plane.setDraining(id, true);
              if (node === undefined) throw notFound(`node ${id} is not registered`);
              log.info('node draining', { node: id, by: 'heartbeat' });
              await send({ state: nodeStateToProto(node.state) });
            } else if (message.goodbye !== undefined) {
              const id = bound('a goodbye');
              const removed = await plane.deregisterNode(id);
              log.info(removed ? 'node deregistered' : 'goodbye from a node already gone', {
                node: id,
                by: 'heartbeat',
              });
              await send({ state: NodeState.NODE_STATE_UNSPECIFIED });
              return;
            } else throw invalidArgument('Heartbeat: a message must hold a status, a drain or a goodbye');
          }
          if (nodeId !== undefined)
            log.debug(
              'heartbeat stream ended without a goodbye; the node expires after its TTL unless it reports',
              {
                node: nodeId,
              },
            );
        } finally {
          heartbeats.open -= 1;
          if (nodeId !== undefined) heartbeats.perNode.remove(nodeId);
        }
      },
      limits.firstMessageMs,
    ),
    deregisterNode: unary('DeregisterNode', async (request, _call, caller) => {
      const nodeId = checkNodeId('node_id', request.nodeId);
      ownNode(caller, 'DeregisterNode', nodeId);
      if (!(await plane.deregisterNode(nodeId))) throw notFound(`node ${nodeId} is not registered`);
      log.info('node deregistered', { node: nodeId });
      return {};
    }),
    drainNode: unary('DrainNode', async (request, _call, caller) => {
      const nodeId = checkNodeId('node_id', request.nodeId);
      ownNode(caller, 'DrainNode', nodeId);
      if (caller.role === 'agent' && !request.drain)
        throw new ApiError(
          status.PERMISSION_DENIED,
          `DrainNode: an agent may drain its node (${nodeId}) but not lift a drain; that is an operator's call`,
        );
      const node = await plane.setDraining(nodeId, request.drain);
      if (node === undefined) throw notFound(`node ${nodeId} is not registered`);
      log.info(request.drain ? 'node draining' : 'node drain lifted', { node: nodeId });
      return { node: viewToProto(node) };
    }),
    getNode: unary('GetNode', async (request) => {
      const nodeId = checkNodeId('node_id', request.nodeId);
      const node = plane.getNode(nodeId);
      if (node === undefined) throw notFound(`node ${nodeId} is not registered`);
      return { node: viewToProto(node) };
    }),
    listNodes: unary('ListNodes', async (request) => {
      const filter = toNodeFilter(request);
      const page = toNodePage(request);
      if (request.summary) {
        const groups = plane.nodeGroups(filter);
        return {
          nodes: [],
          nextPageToken: '',
          total: groups.reduce(
            (sum, g) => sum + g.states.READY + g.states.DRAINING + g.states.DOWN + g.states.UNHEALTHY,
            0,
          ),
          groups: groups.map((g) => ({
            level: levelToProto(g.level),
            region: g.region,
            ready: g.states.READY,
            draining: g.states.DRAINING,
            down: g.states.DOWN,
            unhealthy: g.states.UNHEALTHY,
          })),
        };
      }
      const { views, total, more } = plane.listNodePage(filter, page);
      const last = views[views.length - 1];
      return {
        nodes: views.map(viewToProto),
        nextPageToken: more && last !== undefined ? pageTokenAfter(last.record.spec.id) : '',
        total,
        groups: [],
      };
    }),
    reportLatency: unary('ReportLatency', async (request, _call, caller) => {
      const reports = toLatencyReports(request);
      for (const report of reports) ownNode(caller, 'ReportLatency', report.nodeId);
      // Each distinct `from` is a map the router keeps: bounded, whatever clients send.
      const sources = plane.latencySourcesAfter(reports);
      if (sources.added > 0 && sources.known + sources.added > LIMITS.latencySources) {
        throw new ApiError(
          status.RESOURCE_EXHAUSTED,
          `at most ${LIMITS.latencySources} distinct from names (access points, regions) can hold latency samples (${sources.known} do); report from known ones`,
        );
      }
      return { accepted: await plane.reportLatency(reports) };
    }),
    getStoreStatus: unary('GetStoreStatus', async () => {
      const { health, nodes } = plane.storeStatus();
      return {
        kind: health.kind,
        reachable: health.reachable,
        stalenessS: health.stalenessMs / 1000,
        unreachableSince:
          health.unreachableSinceMs === undefined ? undefined : new Date(health.unreachableSinceMs),
        nodes,
      };
    }),
    schedulePricing: unary('SchedulePricing', async (request) => {
      const policy = toPricingPolicy(request.policy);
      const atMs = toScheduleTime(request.at, plane.now());
      const pending = plane.pricing().scheduled.length;
      if (pending >= LIMITS.scheduledPricing) {
        throw new ApiError(
          status.RESOURCE_EXHAUSTED,
          `at most ${LIMITS.scheduledPricing} price changes can wait to take effect (${pending} do); cancel some with CancelPricing (cpn pricing cancel)`,
        );
      }
      const change = await plane.schedulePricing(policy, atMs);
      log.info('price change scheduled', {
        id: change.id,
        at: new Date(change.atMs).toISOString(),
        rules: change.policy.rules.length,
      });
      return { scheduled: scheduledPricingToProto(change) };
    }),
    getPricing: unary('GetPricing', async () => {
      const pricing = plane.pricing();
      return {
        effective: pricingPolicyToProto(pricing.effective),
        current: pricingPolicyToProto(pricing.current),
        scheduled: pricing.scheduled.map(scheduledPricingToProto),
      };
    }),
    cancelPricing: unary('CancelPricing', async (request) => {
      const id = toPricingId(request.id);
      if (!(await plane.cancelPricing(id))) throw notFound(`no scheduled price change ${id}`);
      log.info('price change cancelled', { id });
      return {};
    }),
  };
}

/** Told of metered routes and releases (for metrics). */
export interface QuotaObserver {
  admitted(outcome: string, reservedPoints: number): void;
  settled(points: number): void;
}

export interface SchedulerOptions {
  /** At most this many explain entries are returned (explain_total says how many there were). */
  readonly explainLimit: number;
  /** Explained routes wait in a queue of at most this many behind the one running. */
  readonly explainQueue: number;
  /** WatchSession streams open at once on this replica (DEFAULT_MAX_SESSION_WATCHES); a tenant gets a tenth. */
  readonly maxSessionWatches?: number;
}

export const DEFAULT_MAX_SESSION_WATCHES = 10_000;

/**
 * Explained routes evaluate thousands of nodes each: they run one at a time, each after the event
 * loop has served what was waiting, so a client asking for explain cannot starve plain routes;
 * beyond `maxWaiting` queued ones the call is refused with the limit named.
 */
export class ExplainGate {
  private readonly queue: BoundedQueue;

  constructor(private readonly maxWaiting: number) {
    this.queue = new BoundedQueue(1, maxWaiting);
  }

  async run<T>(work: () => T): Promise<T> {
    const slot = this.queue.acquire();
    if (slot === undefined) {
      throw new ApiError(
        status.RESOURCE_EXHAUSTED,
        `explain is limited to ${this.maxWaiting + 1} requests at once (one runs, ${this.maxWaiting} wait); retry shortly, or route without explain`,
      );
    }
    const release = await slot;
    try {
      await new Promise<void>((resolve) => setImmediate(resolve));
      return work();
    } finally {
      release();
    }
  }
}

export function schedulerService(
  plane: ControlPlane,
  options: SchedulerOptions,
  context: RpcContext,
  recordDecision?: (decision: RouteDecision, budgetMs: number, seconds: number) => void,
  quota?: QuotaObserver,
): SchedulerServer {
  const unary = unaryMethods(context);
  const serverStream = serverStreamMethods(context);
  let watching = 0;
  const watchingBy = new KeyCounts();
  const maxWatches = options.maxSessionWatches ?? DEFAULT_MAX_SESSION_WATCHES;
  const maxWatchesPerTenant = Math.max(1, Math.floor(maxWatches / 10));
  const explainGate = new ExplainGate(options.explainQueue);
  const explainOf = (decision: Exclude<RouteDecision, { kind: 'refused' }>) => ({
    explain: decision.explain.slice(0, options.explainLimit).map(explainToProto),
    explainTotal: decision.explain.length + decision.explainOmitted,
  });
  return {
    route: unary('Route', async (request: RouteRequest, call, caller): Promise<RouteResponse> => {
      const validated = toRouteRequest(request);
      // The tenant comes from the credential, never from the body.
      const tenant = tenantFor(caller, 'Route', validated.tenant);
      const routeRequest = tenant === validated.tenant ? validated : { ...validated, tenant };
      const route = () => plane.routeMetered(routeRequest, { isCancelled: () => call.cancelled });
      const started = process.hrtime.bigint();
      const result = routeRequest.explain ? await explainGate.run(route) : await route();
      recordDecision?.(
        result.decision,
        routeRequest.latencyBudgetMs,
        Number(process.hrtime.bigint() - started) / 1e9,
      );
      const { decision } = result;
      if (decision.kind === 'refused' && decision.refusal.reason !== undefined)
        quota?.admitted(decision.refusal.reason.toLowerCase(), 0);
      else if (result.metered && result.reservation !== undefined)
        quota?.admitted(
          result.throttled ? 'throttled' : result.overQuota ? 'over_quota' : 'within',
          result.reservedPoints,
        );
      if (decision.kind === 'refused') {
        const refused = refusedError(
          decision.refusal,
          decision.summary,
          tenant === '' ? '' : `tenant:${tenant}`,
        );
        if (result.explained !== undefined && refused.trailers !== undefined) {
          const partial = RouteResponse.create({ summary: decision.summary, ...explainOf(result.explained) });
          refused.trailers.set(ROUTE_RESPONSE_TRAILER, Buffer.from(RouteResponse.encode(partial).finish()));
        }
        throw refused;
      }
      if (decision.kind === 'infeasible') {
        let trailers: Metadata | undefined;
        if (request.explain) {
          const partial = RouteResponse.create({ summary: decision.summary, ...explainOf(decision) });
          trailers = new Metadata();
          trailers.set(ROUTE_RESPONSE_TRAILER, Buffer.from(RouteResponse.encode(partial).finish()));
        }
        throw infeasibleError(decision.reason, decision.summary, trailers);
      }
      if (result.reservation === undefined) {
        // The caller cancelled or its deadline passed; grpc-js drops this answer, nothing was reserved.
        throw new ApiError(status.CANCELLED, 'call cancelled before a slot was reserved');
      }
      return {
        placement: placementToProto(decision.placement),
        reservationId: result.reservation.id,
        reservationExpiresAt: new Date(result.reservation.expiresAtMs),
        fallbacks: decision.fallbacks.map(placementToProto),
        degraded: decision.degraded,
        summary: decision.summary,
        ...explainOf(decision),
        throttled: result.throttled,
        overQuota: result.overQuota,
        reservedPoints: result.reservedPoints,
      };
    }),
    release: unary('Release', async (request, _call, caller) => {
      const reservationId = toReservationId(request.reservationId);
      if (request.abandoned === true) {
        if (caller.role !== 'operator')
          throw new ApiError(
            status.PERMISSION_DENIED,
            'Release with abandoned = true needs role operator (a trusted meter that knows nothing was served)',
          );
        const freed = await plane.abandon(reservationId);
        if (freed === 'not_issued')
          throw new ApiError(
            status.PERMISSION_DENIED,
            `Release: reservation ${reservationId} was not issued by this cluster (its token does not verify); nothing was recorded`,
          );
        return {
          released: freed,
          nodeId: parseReservationId(reservationId)?.nodeId ?? '',
          settledPoints: 0,
          returnedPoints: 0,
          awaitingTrustedMeter: false,
        };
      }
      const result = await plane.release(
        reservationId,
        toUsage(request.usage),
        request.success,
        caller.role === 'client'
          ? { kind: 'client', tenant: caller.tenant }
          : caller.role === 'agent'
            ? { kind: 'agent', nodeId: caller.nodeId }
            : { kind: 'operator' },
      );
      if ('refused' in result && result.refused === 'not_issued') {
        throw new ApiError(
          status.PERMISSION_DENIED,
          `Release: reservation ${reservationId} was not issued by this cluster (its token does not verify); nothing was recorded`,
        );
      }
      if ('refused' in result && result.refused === 'other_node') {
        throw new ApiError(
          status.PERMISSION_DENIED,
          `Release: reservation ${reservationId} is not on node ${caller.role === 'agent' ? caller.nodeId : ''}; an agent reports only its own node's requests`,
        );
      }
      if ('refused' in result) {
        throw new ApiError(
          status.PERMISSION_DENIED,
          `Release: reservation ${reservationId} is not tenant ${caller.role === 'client' ? caller.tenant : ''}'s; a client releases only its own tenant's reservations`,
        );
      }
      quota?.settled(result.settledPoints ?? 0);
      return {
        released: result.released,
        nodeId: result.nodeId,
        settledPoints: result.settledPoints ?? 0,
        returnedPoints: result.returnedPoints ?? 0,
        awaitingTrustedMeter: result.awaitingTrustedMeter ?? false,
      };
    }),
    openSession: unary('OpenSession', async (request, _call, caller) => {
      const input = toOpenSession(request);
      const opened = await plane.sessions.open({
        ...input,
        tenant: tenantFor(caller, 'OpenSession', input.tenant),
      });
      if (opened.kind === 'limit')
        throw new ApiError(
          status.RESOURCE_EXHAUSTED,
          opened.scope === 'cluster'
            ? `OpenSession: ${opened.limit} sessions are open, the most this control plane holds (--max-sessions); close sessions or raise the limit`
            : `OpenSession: this tenant has ${opened.limit} sessions open, the most one tenant may hold (--max-sessions-per-tenant); close some first`,
        );
      if (opened.kind === 'refused')
        throw refusedError(opened.refusal, `OpenSession refused: ${opened.refusal.message}`, '');
      if (opened.kind === 'infeasible') {
        if (opened.decision.kind === 'refused')
          throw refusedError(opened.decision.refusal, opened.decision.summary, '');
        throw infeasibleError(opened.decision.reason, opened.decision.summary);
      }
      const { record, placement } = opened.session;
      return {
        sessionId: record.id,
        placement: placement === undefined ? undefined : placementToProto(placement),
        expiresAt: new Date(record.expiresAtMs),
      };
    }),
    updateSession: unary('UpdateSession', async (request, _call, caller) => {
      const input = toUpdateSession(request);
      const updated = await plane.sessions.update({
        ...input,
        tenant: tenantFor(caller, 'UpdateSession', input.tenant),
      });
      if (updated.kind === 'not_found') throw sessionNotFound(input.id);
      if (updated.kind === 'contended')
        throw new ApiError(
          status.ABORTED,
          `UpdateSession: other writes to session ${input.id} won ${updated.attempts} times in a row (updates through several replicas at once); retry`,
        );
      const { record, placement, handover } = updated.session;
      return {
        placement: placement === undefined ? undefined : placementToProto(placement),
        handover: handover === undefined ? undefined : handoverToProto(handover),
        expiresAt: new Date(record.expiresAtMs),
        degraded: record.degraded,
      };
    }),
    closeSession: unary('CloseSession', async (request, _call, caller) => {
      const id = toSessionId(request.sessionId);
      if (!(await plane.sessions.close(tenantFor(caller, 'CloseSession', request.tenant), id)))
        throw sessionNotFound(id);
      return {};
    }),
    watchSession: serverStream<WatchSessionRequest, WatchSessionResponse>(
      'WatchSession',
      async (request, send, caller, cancelled) => {
        const id = toSessionId(request.sessionId);
        const tenant = tenantFor(caller, 'WatchSession', request.tenant);
        if (watching >= maxWatches)
          throw new ApiError(
            status.RESOURCE_EXHAUSTED,
            `WatchSession: ${watching} sessions are watched on this replica, the most it serves (${maxWatches}); watch fewer or use another replica`,
          );
        const mine = watchingBy.of(tenant);
        if (mine >= maxWatchesPerTenant)
          throw new ApiError(
            status.RESOURCE_EXHAUSTED,
            `WatchSession: this tenant watches ${mine} sessions on this replica, the most one tenant may (${maxWatchesPerTenant}); close some watches first`,
          );
        // Counted before the first await, so that concurrent watches cannot overshoot the caps.
        watching += 1;
        watchingBy.add(tenant);
        const events = latestOnly(send, (event: WatchSessionResponse) => event.ended);
        let watch: Awaited<ReturnType<typeof plane.sessions.watch>>;
        try {
          watch = await plane.sessions.watch(tenant, id, (session) =>
            events.offer(
              session === undefined
                ? { placement: undefined, handover: undefined, degraded: false, ended: true }
                : sessionEvent(session),
            ),
          );
          if (watch === undefined) throw sessionNotFound(id);
          // Unless an event came while the watch started, the session as it is comes first.
          events.offerUnlessPending(sessionEvent(watch.initial));
          await Promise.race([events.over, cancelled]);
          events.throwIfFailed();
        } finally {
          watching -= 1;
          watchingBy.remove(tenant);
          watch?.stop();
        }
      },
    ),
  };
}

/** The same answer for unknown, expired and other tenants' sessions: an id tells nothing. */
function sessionNotFound(id: string): ApiError {
  return notFound(`session ${id} is unknown or has expired (a session ends ttl_s after its last update)`);
}

function sessionEvent(session: SessionView): WatchSessionResponse {
  return {
    placement: session.placement === undefined ? undefined : placementToProto(session.placement),
    handover: session.handover === undefined ? undefined : handoverToProto(session.handover),
    degraded: session.record.degraded,
    ended: false,
  };
}
