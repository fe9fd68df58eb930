// The control plane: the only door to routing, releasing, registry commands, pricing and usage,
// for the gRPC server and the simulator alike. It owns the clocks (wall time for records, a
// monotonic one for reservation expiry), this replica's reservations and the admission rules,
// and keeps its store private. No proto types, no transport: the server validates, calls a
// method here, and converts the answer.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { PriceMultiplier } from '../core/cost.js';
import { DEFAULT_LATENCY_MODEL, type LatencyModel } from '../core/latency.js';
import {
  LEVELS,
  type Level,
  type NodeRecord,
  type NodeSpec,
  type NodeState,
  type NodeStatus,
  nodeState,
  type Usage,
} from '../core/model.js';
import {
  effectivePolicy,
  type PricingPolicy,
  type PricingState,
  policyMultiplier,
  type ScheduledPricing,
} from '../core/pricing.js';
import { expireLedger, type Ledger } from '../core/quota.js';
import {
  issuedSecond,
  parseReservationId,
  type Reservation,
  ReservationBook,
  type ReservationId,
} from '../core/reservations.js';
import {
  type AdmissionRule,
  CHEAPEST_FEASIBLE,
  DEFAULT_MAX_EXPLAIN_NODES,
  decideRoute,
  type RouteDecision,
  type RouteRequest,
  type RoutingPolicy,
  refusedDecision,
  type SessionRule,
} from '../core/routing/index.js';
import {
  type Clock,
  type LatencyReport,
  matchesFilter,
  type NodeFilter,
  type NodePage,
  type RegisterOptions,
  type Store,
  type StoreHealth,
} from '../store/store.js';
import { Accounts } from './accounts.js';
import { DEFAULT_LATE_RELEASE_GRACE_MS, Metering, unitPrices } from './metering.js';
import { SessionManager, type SessionObserver } from './sessions.js';
import { sipHash24Hex, sipHashKey } from './siphash.js';

export interface ControlPlaneOptions {
  readonly store: Store;
  /** Wall clock (ms since the epoch): timestamps, leases, pricing windows. */
  readonly clock: Clock;
  /** Never steps back; reservation expiry runs on it. performance.now() unless given. */
  readonly monotonicClock?: Clock;
  readonly reservationTtlMs: number;
  /** Unique per replica ([a-z0-9-], at most 24 characters); starts every reservation id. */
  readonly replicaId: string;
  readonly latency?: Partial<LatencyModel>;
  /** Fixed pricing hook (tests, simulations); by default the store's time-of-use policy. */
  readonly priceMultiplier?: PriceMultiplier;
  /** Rules run before every decision (quota, throttling). */
  readonly admission?: readonly AdmissionRule[];
  /** Explain evaluates at most this many nodes. */
  readonly maxExplainNodes?: number;
  /**
   * Record usage in the store at Release (default). A simulation turns it off: it counts usage
   * itself, and millions of records would only fill memory.
   */
  readonly meterUsage?: boolean;
  /**
   * Reservation tokens for a simulation (deterministic); by default a MAC under the cluster's
   * secret, which Release checks — with this option it cannot, so never give it to a server.
   */
  readonly newReservationToken?: () => string;
  /** A metered reservation can still be released (and billed) this long after it expired. */
  readonly lateReleaseGraceMs?: number;
  /** Mobility sessions: the handover rule, the most sessions held, and who hears of handovers. */
  readonly sessionRule?: SessionRule;
  readonly maxSessions?: number;
  readonly maxSessionsPerTenant?: number;
  readonly sessionObserver?: SessionObserver;
}

/** The decision, and the reservation made for it (undefined when not placed or the caller left). */
export interface RouteResult {
  readonly decision: RouteDecision;
  readonly reservation: Reservation | undefined;
}

export interface RouteOptions {
  /** Cheapest-feasible unless given (the simulator's baselines pass theirs). */
  readonly policy?: RoutingPolicy;
  /** Asked after deciding: if the caller has gone, nothing is reserved. */
  readonly isCancelled?: () => boolean;
}

/** A node as callers see it: its record, its state now and this replica's pending reservations. */
export interface NodeView {
  readonly record: NodeRecord;
  readonly state: NodeState;
  readonly reserved: ReadonlyMap<string, number>;
}

/** Nodes of one level and region, counted per state. */
export interface NodeGroup {
  readonly level: Level;
  readonly region: string;
  readonly states: Record<NodeState, number>;
}

export type StatusResult =
  | { readonly kind: 'accepted'; readonly node: NodeView }
  | { readonly kind: 'unknown_node' }
  | { readonly kind: 'expired'; readonly expiredAtMs: number };

export interface ReleaseResult {
  /** True only for the call that freed the reservation, on whichever replica it arrived. */
  readonly released: boolean;
  readonly nodeId: string;
  /** Metered tenants: the points counted, and those given back (held − counted). */
  readonly settledPoints?: number;
  readonly returnedPoints?: number;
  /** A client's Release under a package that requires a trusted meter: the slot is freed, the quota waits. */
  readonly awaitingTrustedMeter?: boolean;
}

/** A routed request of a tenant: metered against its package when it has one. */
export interface MeteredRouteResult extends RouteResult {
  /** Over quota under THROTTLE: rate-limited and placed within the package's throttle budget. */
  readonly throttled: boolean;
  /** Over quota under PAY_AS_YOU_GO (or THROTTLE): billed at list price / counted as over quota. */
  readonly overQuota: boolean;
  /** Points of the tenant's quota held until Release. */
  readonly reservedPoints: number;
  /** The tenant has a package: the route was admitted (or refused) by it. */
  readonly metered: boolean;
  /** A refused explained request: the decision it would have had, for its explain list. */
  readonly explained?: Extract<RouteDecision, { kind: 'infeasible' }>;
}

/**
 * A Release refused, nothing freed, nothing recorded: the id was not issued by this cluster (its
 * token does not verify), or the reservation is another tenant's.
 */
/** Who reports a Release: the tenant's client, the agent of a node, or an operator. */
export type ReleaseBy =
  | { readonly kind: 'client'; readonly tenant: string }
  | { readonly kind: 'agent'; readonly nodeId: string }
  | { readonly kind: 'operator' };

export interface ReleaseRefused {
  readonly refused: 'not_issued' | 'other_tenant' | 'other_node';
  /** The tenant the reservation belongs to ('' for an untenanted one). */
  readonly owner: string;
}

export interface PricingView {
  readonly effective: PricingPolicy;
  readonly current: PricingPolicy;
  readonly scheduled: readonly ScheduledPricing[];
}

const performanceClock: Clock = () => performance.now();

/** What a Route that no package admitted (or one refused or cancelled) says of its metering. */
const UNMETERED = { throttled: false, overQuota: false, reservedPoints: 0, metered: false } as const;

/**
 * A reservation token: a SipHash-2-4 of the rest of the id (64 bits), keyed by 128 bits derived
 * from the cluster's secret (so every replica signs and checks alike). A keyed PRF made for short
 * inputs: an HMAC-SHA256 cost a tenth of the server's extra work per Route over a no-work server.
 */
export function reservationSigner(secret: Buffer): (signed: string) => string {
  const key = sipHashKey(
    createHmac('sha256', secret).update('cpn reservation token: SipHash-2-4 key').digest().subarray(0, 16),
  );
  return (signed) => sipHash24Hex(key, signed);
}

export class ControlPlane {
  /** Tenants and API keys. */
  readonly accounts: Accounts;
  /** Mobility sessions. */
  readonly sessions: SessionManager;
  private readonly metering: Metering;
  /** Signs reservation ids with the cluster's secret, so that every replica can check them. */
  private readonly sign: (signed: string) => string;
  private readonly verifiesTokens: boolean;
  private readonly lateReleaseGraceMs: number;
  /** A reservation can be released this long after it was issued (TTL + late grace), no longer. */
  private readonly releasableForMs: number;
  private readonly store: Store;
  private readonly reservations: ReservationBook;
  readonly latency: LatencyModel;
  private readonly clock: Clock;
  private readonly monotonicClock: Clock;
  private readonly fixedMultiplier: PriceMultiplier | undefined;
  private readonly admission: readonly AdmissionRule[];
  private readonly maxExplainNodes: number;
  private readonly meterUsage: boolean;
  private multiplierFor: { policy: PricingPolicy; multiplier: PriceMultiplier } | undefined;

  constructor(options: ControlPlaneOptions) {
    this.store = options.store;
    this.sign = reservationSigner(options.store.reservationSecret());
    this.verifiesTokens = options.newReservationToken === undefined;
    this.clock = options.clock;
    this.accounts = new Accounts(options.store.accounts, options.clock);
    this.lateReleaseGraceMs = options.lateReleaseGraceMs ?? DEFAULT_LATE_RELEASE_GRACE_MS;
    // Issue times are whole seconds: a second of slack.
    this.releasableForMs = options.reservationTtlMs + this.lateReleaseGraceMs + 1000;
    this.metering = new Metering(options.store.accounts, options.store.ledgers, {
      lateReleaseGraceMs: this.lateReleaseGraceMs,
      reservationTtlMs: options.reservationTtlMs,
    });
    this.monotonicClock = options.monotonicClock ?? performanceClock;
    this.reservations = new ReservationBook({
      ttlMs: options.reservationTtlMs,
      replicaId: options.replicaId,
      newToken: options.newReservationToken ?? this.sign,
    });
    this.fixedMultiplier = options.priceMultiplier;
    this.admission = options.admission ?? [];
    this.maxExplainNodes = options.maxExplainNodes ?? DEFAULT_MAX_EXPLAIN_NODES;
    this.meterUsage = options.meterUsage ?? true;
    this.latency = {
      ...DEFAULT_LATENCY_MODEL,
      regionCentroids: options.store.regionCentroids(),
      ...options.latency,
    };
    this.sessions = new SessionManager({
      store: options.store.sessions,
      reservations: this.reservations,
      context: (nowMs) => ({
        view: this.store.view,
        reservations: this.reservations,
        latency: this.latency,
        priceMultiplier: this.priceMultiplierAt(nowMs),
        nowMs,
        maxExplainNodes: this.maxExplainNodes,
        node: (nodeId) => this.store.getNode(nodeId),
      }),
      clock: this.clock,
      monotonicClock: this.monotonicClock,
      rule: options.sessionRule,
      maxSessions: options.maxSessions,
      maxSessionsPerTenant: options.maxSessionsPerTenant,
      observer: options.sessionObserver,
      ...(options.meterUsage === false
        ? {}
        : {
            admit: (request: RouteRequest) => {
              const admission = this.metering.admit(request, this.clock());
              if (admission.kind === 'refused') return { refused: admission.refusal };
              return { request: admission.kind === 'unmetered' ? request : admission.request };
            },
          }),
    });
    // A Release that reached another replica frees the slot here, where it was taken: unmetered
    // ones through their usage record, metered ones through the ledger's recent log.
    if (this.meterUsage) {
      options.store.onUsageRecorded((id) => this.reservations.release(id));
      options.store.ledgers.onLedgerChanged((ledger) => {
        for (const id of this.metering.newlySettled(ledger)) this.reservations.release(id);
      });
    }
  }

  /** Wall-clock time now (ms). */
  now(): number {
    return this.clock();
  }

  // --- Scheduling -------------------------------------------------------------------------------

  /**
   * Builds the routing index's trees for every model served now, so that the first decisions
   * after a start do not wait for them (at 100,000 nodes, about 2.8 s in all).
   * Returns how many models it warmed.
   */
  warmIndex(): number {
    const models = new Set<string>();
    for (const node of this.store.view.allNodes())
      for (const offer of node.spec.models) models.add(offer.model);
    const nowMs = this.clock();
    const pricing = { multiplier: this.priceMultiplierAt(nowMs), nowMs };
    for (const model of models) this.store.view.candidates(model)?.warm(pricing);
    return models.size;
  }

  /** Decides and, if placed, reserves a slot — unless the caller has gone by then. */
  route(request: RouteRequest, options: RouteOptions = {}): RouteResult {
    const nowMs = this.clock();
    const monotonicMs = this.monotonicClock();
    this.reservations.expire(monotonicMs);
    const decision = decideRoute(request, {
      view: this.store.view,
      reservations: this.reservations,
      latency: this.latency,
      priceMultiplier: this.priceMultiplierAt(nowMs),
      nowMs,
      policy: options.policy ?? CHEAPEST_FEASIBLE,
      admission: this.admission,
      maxExplainNodes: this.maxExplainNodes,
    });
    if (decision.kind !== 'placed' || options.isCancelled?.() === true)
      return { decision, reservation: undefined };
    const reservation = this.reservations.reserve(
      decision.placement.nodeId,
      request.model,
      request.tenant,
      nowMs,
      monotonicMs,
    );
    return { decision, reservation };
  }

  /** Reserves a slot on a node chosen by the caller, without a decision (the simulator's sticky clients). */
  reserveOn(nodeId: string, model: string, tenant: string): Reservation {
    return this.reservations.reserve(nodeId, model, tenant, this.clock(), this.monotonicClock());
  }

  /**
   * Frees the slot of a reservation that `route` or `reserveOn` returned, given that very object:
   * true if this call freed it (false when released or expired before). What a Release of its id
   * does on a plane that meters no usage — the simulator's — without writing out or reading the
   * id. A metering plane settles usage at Release: it refuses this.
   */
  freeHeld(reservation: Reservation): boolean {
    if (this.meterUsage)
      throw new Error('freeHeld: this plane meters usage; release the reservation by its id');
    return this.freed(reservation);
  }

  /**
   * Routes a tenant's request: admission by its package (model, quota, throttle) before the
   * decision, the points held in the shared ledger after it. A tenant without a package is routed
   * as `route` does. The slot is reserved before the (asynchronous) hold, so that concurrent
   * requests see it; it is given back if the hold is refused.
   */
  async routeMetered(request: RouteRequest, options: RouteOptions = {}): Promise<MeteredRouteResult> {
    const admission = this.metering.admit(request, this.clock());
    if (admission.kind === 'unmetered') {
      // Not spread from the route's result: this is every untenanted Route's path.
      const { decision, reservation } = this.route(request, options);
      return { decision, reservation, ...UNMETERED };
    }
    if (admission.kind === 'refused') {
      // An explained request for a model outside the package still lists the nodes, each with
      // the package as its verdict (no node can be reserved: every one is refused).
      const explained =
        admission.refusal.reason === 'MODEL_NOT_IN_PACKAGE' && request.explain
          ? this.route({ ...request, packageExcludesModel: true }, options).decision
          : undefined;
      return {
        decision: refusedDecision(request, admission.refusal),
        reservation: undefined,
        ...UNMETERED,
        ...(explained?.kind === 'infeasible' ? { explained } : {}),
      };
    }
    const routed = this.route(admission.request, options);
    const reservation = routed.reservation;
    if (reservation === undefined || routed.decision.kind !== 'placed')
      return { ...routed, ...UNMETERED, throttled: admission.throttled };
    const placement = routed.decision.placement;
    const offer = this.store.getNode(placement.nodeId)?.spec.models.find((o) => o.model === request.model);
    let held: Awaited<ReturnType<Metering['hold']>>;
    try {
      held = await this.metering.hold(
        admission,
        reservation.id,
        {
          level: placement.level,
          model: request.model,
          prices: unitPrices(offer?.price ?? { inputPerMtok: 0, outputPerMtok: 0, cachedInputPerMtok: 0 }),
        },
        reservation.expiresAtMs,
        this.clock(),
      );
    } catch (error) {
      this.reservations.release(reservation.id);
      throw error;
    }
    if (held.kind === 'refused') {
      this.reservations.release(reservation.id);
      return { decision: refusedDecision(request, held.refusal), reservation: undefined, ...UNMETERED };
    }
    if (options.isCancelled?.() === true) {
      this.reservations.release(reservation.id);
      await this.metering.cancel(admission, reservation.id);
      return { decision: routed.decision, reservation: undefined, ...UNMETERED };
    }
    return {
      ...routed,
      throttled: admission.throttled,
      overQuota: held.overQuota,
      reservedPoints: admission.points,
      metered: true,
    };
  }

  /**
   * The tenant's quota ledgers this replica knows (all tenants' when undefined), as of now:
   * reservations past their TTL no longer hold points.
   */
  ledgers(tenant?: string): Ledger[] {
    const nowMs = this.clock();
    return this.store.ledgers
      .cachedAll(tenant)
      .map((ledger) => expireLedger(ledger, nowMs, this.lateReleaseGraceMs));
  }

  /**
   * What a reservation id names: undefined when it does not have the format Route issues,
   * `forged` (with the tenant it names) when its token is not this cluster's. An id this replica
   * holds is read from its book — the same string Route issued here, so neither parsed nor checked
   * again.
   */
  private issued(reservationId: ReservationId):
    | {
        nodeId: string;
        model: string;
        tenant: string;
        issuedAtMs: number;
        forged?: true;
        /** This replica's live reservation with that id, if it holds one. */
        held?: Reservation;
      }
    | undefined {
    const held = this.reservations.held(reservationId);
    if (held !== undefined)
      return {
        nodeId: held.nodeId,
        model: held.model,
        tenant: held.tenant,
        issuedAtMs: issuedSecond(held.createdAtMs) * 1000,
        held,
      };
    const where = parseReservationId(reservationId);
    if (where === undefined) return undefined;
    if (this.verifiesTokens) {
      const expected = Buffer.from(this.sign(where.signed));
      if (!timingSafeEqual(expected, Buffer.from(where.token))) return { ...where, forged: true };
    }
    return where;
  }

  /**
   * Frees the slot `issued` found this replica holding: whether it did. Nothing held, nothing to
   * free (this book issued no live reservation with that id).
   */
  private freed(held: Reservation | undefined): boolean {
    return held !== undefined && this.reservations.free(held) !== undefined;
  }

  /**
   * Frees a reservation that nothing was served on — its caller tried the node and it failed
   * before answering — and gives its quota hold back without a usage line. Only a trusted caller
   * (the gateway, in this process) may, as it alone knows nothing was served.
   */
  async abandon(reservationId: ReservationId): Promise<boolean | 'not_issued'> {
    const where = this.issued(reservationId);
    if (where === undefined) return false;
    if (where.forged) return 'not_issued';
    const freed = this.freed(where.held);
    if (this.meterUsage && where.tenant !== '')
      await this.metering.abandon(where.tenant, reservationId, where.issuedAtMs);
    return freed;
  }

  /**
   * Frees the slot if this replica made the reservation, and records usage once in the shared
   * store whichever replica the call reached (the id names the node and model); the replica that
   * made it frees its slot when it learns of the record. `released` is true only for the call that
   * did it: a repeat — here or on another replica — answers false.
   *
   * `by` says who reports (undefined: an operator or the simulator). A client may release only its
   * tenant's reservations; an agent only those on its node. Exactly one report settles a metered
   * reservation, the first that may: any caller's for a client-metered package, only a trusted
   * meter's (agent, operator) for a package that requires one — a client's Release then frees the
   * slot and settles nothing.
   */
  release(reservationId: ReservationId, usage: Usage, success: boolean): Promise<ReleaseResult>;
  release(
    reservationId: ReservationId,
    usage: Usage,
    success: boolean,
    by: ReleaseBy | undefined,
  ): Promise<ReleaseResult | ReleaseRefused>;

  async release(
    reservationId: ReservationId,
    usage: Usage,
    success: boolean,
    by?: ReleaseBy,
  ): Promise<ReleaseResult | ReleaseRefused> {
    const where = this.issued(reservationId);
    if (where === undefined) return { released: false, nodeId: '' };
    if (where.forged) return { refused: 'not_issued', owner: where.tenant };
    // Older than any reservation can be released: refused without a lookup, so that the
    // records that make a Release count once need to be kept only for that long.
    if (this.meterUsage && this.clock() > where.issuedAtMs + this.releasableForMs)
      return { released: false, nodeId: where.nodeId };
    // The id names its tenant and node (and cannot be forged: its token is a MAC).
    if (by?.kind === 'client' && where.tenant !== by.tenant)
      return { refused: 'other_tenant', owner: where.tenant };
    if (by?.kind === 'agent' && where.nodeId !== by.nodeId)
      return { refused: 'other_node', owner: where.tenant };
    if (by?.kind === 'client' && this.metering.packageOf(where.tenant)?.meter === 'trusted') {
      return { released: this.freed(where.held), nodeId: where.nodeId, awaitingTrustedMeter: true };
    }
    const local = this.freed(where.held);
    if (!this.meterUsage) return { released: local, nodeId: where.nodeId };
    const settled = await this.metering.settle(where.tenant, reservationId, where.model, usage, this.clock());
    if (settled.kind === 'settled') {
      return {
        released: true,
        nodeId: where.nodeId,
        settledPoints: settled.points,
        returnedPoints: settled.returned,
      };
    }
    if (settled.kind === 'unknown') return { released: false, nodeId: where.nodeId };
    const node = this.store.getNode(where.nodeId);
    const recorded = await this.store.recordUsage(
      {
        reservationId,
        tenant: where.tenant,
        nodeId: where.nodeId,
        level: node?.spec.level,
        region: node?.spec.region ?? '',
        model: where.model,
        usage,
        success,
        atMs: this.clock(),
      },
      this.releasableForMs,
    );
    return { released: recorded, nodeId: where.nodeId };
  }

  /** This replica's housekeeping: drops reservations whose TTL has ended; returns how many. */
  expireReservations(): number {
    // Sessions that ended without a close (their TTL ran out) give their slots back too.
    this.sessions.pruneSlots();
    return this.reservations.expire(this.monotonicClock()).length;
  }

  /** Reservations this replica holds (not released, not yet swept). */
  reservationCount(): number {
    return this.reservations.size;
  }

  // --- Registry ---------------------------------------------------------------------------------

  async registerNode(
    spec: NodeSpec,
    options: RegisterOptions,
  ): Promise<{ node: NodeView; created: boolean }> {
    const { node, created } = await this.store.registerNode(spec, options);
    return { node: this.viewOf(node), created };
  }

  async reportStatus(status: NodeStatus): Promise<StatusResult> {
    const outcome = await this.store.reportStatus(status);
    return outcome.kind === 'accepted' ? { kind: 'accepted', node: this.viewOf(outcome.node) } : outcome;
  }

  /** Returns false if the node was not registered. */
  async deregisterNode(nodeId: string): Promise<boolean> {
    const removed = await this.store.deregisterNode(nodeId);
    if (removed) void this.sessions.sweep(nodeId).catch(() => 0);
    return removed;
  }

  /** Sets or clears DRAINING; undefined if the node is not registered. */
  async setDraining(nodeId: string, draining: boolean): Promise<NodeView | undefined> {
    const node = await this.store.setDraining(nodeId, draining);
    // Its sessions start moving at once, in the background (the leader's sweep goes on with them).
    if (node !== undefined && draining) void this.sessions.sweep(nodeId).catch(() => 0);
    return node === undefined ? undefined : this.viewOf(node);
  }

  getNode(nodeId: string): NodeView | undefined {
    const node = this.store.getNode(nodeId);
    return node === undefined ? undefined : this.viewOf(node);
  }

  /** The registered spec of a node, for validating its status report; undefined if unknown. */
  specOf(nodeId: string): NodeSpec | undefined {
    return this.store.getNode(nodeId)?.spec;
  }

  listNodes(filter: NodeFilter): NodeView[] {
    this.reservations.expire(this.monotonicClock());
    const nowMs = this.clock();
    return this.store.listNodes(filter).map((node) => this.viewAt(node, nowMs));
  }

  /** One page of `listNodes` (id order, after `page.afterId`). */
  listNodePage(filter: NodeFilter, page: NodePage): { views: NodeView[]; total: number; more: boolean } {
    this.reservations.expire(this.monotonicClock());
    const nowMs = this.clock();
    const listing = this.store.listNodePage(filter, page);
    return { ...listing, views: listing.nodes.map((node) => this.viewAt(node, nowMs)) };
  }

  /** How many nodes matching `filter` are in each state, per level and region, in that order. */
  nodeGroups(filter: NodeFilter): NodeGroup[] {
    const nowMs = this.clock();
    const groups = new Map<string, NodeGroup>();
    for (const node of this.store.view.allNodes()) {
      if (!matchesFilter(node, filter)) continue;
      const { level, region } = node.spec;
      const key = `${LEVELS.indexOf(level)}\u0000${region}`;
      let group = groups.get(key);
      if (group === undefined) {
        group = { level, region, states: { READY: 0, DRAINING: 0, DOWN: 0, UNHEALTHY: 0 } };
        groups.set(key, group);
      }
      group.states[nodeState(node, nowMs)] += 1;
    }
    return [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, group]) => group);
  }

  reportLatency(reports: readonly LatencyReport[]): Promise<number> {
    return this.store.reportLatency(reports);
  }

  /** How many `from` names of `reports` hold no samples yet, and how many do already. */
  latencySourcesAfter(reports: readonly LatencyReport[]): { readonly known: number; readonly added: number } {
    const added = new Set<string>();
    for (const { from } of reports) if (this.store.view.samplesFrom(from) === undefined) added.add(from);
    return { known: this.store.latencySources(), added: added.size };
  }

  storeStatus(): { readonly health: StoreHealth; readonly nodes: number } {
    return { health: this.store.health(), nodes: this.store.view.nodeCount() };
  }

  // --- Pricing ----------------------------------------------------------------------------------

  /**
   * Schedules `policy` to take effect at `atMs` on every replica; returns the change with its id
   * (a fresh one unless `id` is given — a simulation names its changes after its events).
   */
  async schedulePricing(policy: PricingPolicy, atMs: number, id?: string): Promise<ScheduledPricing> {
    const change = {
      id: id ?? `p-${this.clock().toString(36)}-${randomBytes(3).toString('hex')}`,
      atMs,
      policy,
    };
    await this.store.schedulePricing(change);
    return change;
  }

  /** Returns false if no such scheduled change exists. */
  cancelPricing(id: string): Promise<boolean> {
    return this.store.cancelPricing(id);
  }

  pricing(): PricingView {
    const state: PricingState = this.store.pricing();
    return {
      effective: effectivePolicy(state, this.clock()),
      current: state.current,
      scheduled: [...state.scheduled].sort((a, b) => a.atMs - b.atMs),
    };
  }

  /** The pricing hook in force at `nowMs`: the store's policy, switching exactly at scheduled times. */
  priceMultiplierAt(nowMs: number): PriceMultiplier {
    if (this.fixedMultiplier !== undefined) return this.fixedMultiplier;
    const policy = effectivePolicy(this.store.pricing(), nowMs);
    if (this.multiplierFor?.policy !== policy)
      this.multiplierFor = { policy, multiplier: policyMultiplier(policy) };
    return this.multiplierFor.multiplier;
  }

  // --- Views ------------------------------------------------------------------------------------

  /** Reservations on the node not yet covered by its last status report, per model. */
  reservedOn(nodeId: string): Map<string, number> {
    const node = this.store.getNode(nodeId);
    if (node === undefined) return new Map();
    this.reservations.expire(this.monotonicClock());
    return this.pendingOn(node);
  }

  private pendingOn(node: NodeRecord): Map<string, number> {
    return this.reservations.pendingByModel(
      node.spec.id,
      node.statusAtMs,
      node.spec.models.map((offer) => offer.model),
    );
  }

  private viewOf(node: NodeRecord): NodeView {
    this.reservations.expire(this.monotonicClock());
    return this.viewAt(node, this.clock());
  }

  /** The view of `node` at `nowMs`; reservations must have been expired first. */
  private viewAt(node: NodeRecord, nowMs: number): NodeView {
    return { record: node, state: nodeState(node, nowMs), reserved: this.pendingOn(node) };
  }
}
