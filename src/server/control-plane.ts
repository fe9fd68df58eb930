// The control plane's domain operations, between the gRPC adapters and the core: it owns this
// replica's reservations, reads the clock, and asks the store. No proto types here.

import type { PriceMultiplier } from '../core/cost.js';
import { DEFAULT_LATENCY_MODEL, type LatencyModel } from '../core/latency.js';
import { type NodeRecord, type NodeState, nodeState, type Usage } from '../core/model.js';
import { effectivePolicy, type PricingPolicy, policyMultiplier } from '../core/pricing.js';
import { parseReservationId, type Reservation, ReservationBook } from '../core/reservations.js';
import { decideRoute, type RouteDecision, type RouteRequest } from '../core/scheduler.js';
import type { Clock, Store } from '../store/store.js';

export interface ControlPlaneOptions {
  readonly store: Store;
  readonly clock: Clock;
  readonly reservationTtlMs: number;
  /** Unique per replica; prefixes reservation ids. */
  readonly replicaId: string;
  readonly latency?: Partial<LatencyModel>;
  /** Fixed pricing hook (tests, simulations); by default the store's time-of-use policy. */
  readonly priceMultiplier?: PriceMultiplier;
}

/** The decision, and the reservation made for it (undefined when infeasible or the caller left). */
export interface RouteResult {
  readonly decision: RouteDecision;
  readonly reservation: Reservation | undefined;
}

export class ControlPlane {
  readonly store: Store;
  readonly reservations: ReservationBook;
  readonly latency: LatencyModel;
  private readonly clock: Clock;
  private readonly fixedMultiplier: PriceMultiplier | undefined;
  private multiplierFor: { policy: PricingPolicy; multiplier: PriceMultiplier } | undefined;

  constructor(options: ControlPlaneOptions) {
    this.store = options.store;
    this.clock = options.clock;
    this.reservations = new ReservationBook(options.reservationTtlMs, `${options.replicaId}-`);
    this.fixedMultiplier = options.priceMultiplier;
    this.latency = {
      ...DEFAULT_LATENCY_MODEL,
      regionCentroids: options.store.regionCentroids(),
      ...options.latency,
    };
  }

  now(): number {
    return this.clock();
  }

  /**
   * Decides and, if placed, reserves a slot — unless `isCancelled()` says the caller has gone,
   * in which case nothing is reserved.
   */
  route(request: RouteRequest, isCancelled: () => boolean = () => false): RouteResult {
    const nowMs = this.clock();
    this.reservations.expire(nowMs);
    const decision = decideRoute(request, {
      view: this.store.view,
      reservations: this.reservations,
      latency: this.latency,
      priceMultiplier: this.priceMultiplierAt(nowMs),
      nowMs,
    });
    if (decision.kind === 'infeasible' || isCancelled()) return { decision, reservation: undefined };
    const reservation = this.reservations.reserve(
      decision.placement.nodeId,
      request.model,
      request.tenant,
      nowMs,
    );
    return { decision, reservation };
  }

  /**
   * Frees the slot if this replica made the reservation, and records usage in the shared store
   * whichever replica made it (the id names the node and model). Idempotent: usage is recorded
   * once per reservation, and a repeated Release answers released = false.
   */
  async release(
    reservationId: string,
    usage: Usage,
    success: boolean,
  ): Promise<{ released: boolean; nodeId: string }> {
    const local = this.reservations.release(reservationId);
    const where = local ?? parseReservationId(reservationId);
    if (where === undefined) return { released: false, nodeId: '' };
    const node = this.store.getNode(where.nodeId);
    const recorded = await this.store.recordUsage({
      reservationId,
      tenant: local?.tenant ?? '',
      nodeId: where.nodeId,
      level: node?.spec.level,
      region: node?.spec.region ?? '',
      model: where.model,
      usage,
      success,
      atMs: this.clock(),
    });
    return { released: local !== undefined || recorded, nodeId: where.nodeId };
  }

  /** The pricing hook in force at `nowMs`: the store's policy, switching exactly at scheduled times. */
  priceMultiplierAt(nowMs: number): PriceMultiplier {
    if (this.fixedMultiplier !== undefined) return this.fixedMultiplier;
    const policy = effectivePolicy(this.store.pricing(), nowMs);
    if (this.multiplierFor?.policy !== policy)
      this.multiplierFor = { policy, multiplier: policyMultiplier(policy) };
    return this.multiplierFor.multiplier;
  }

  stateOf(node: NodeRecord): NodeState {
    return nodeState(node, this.clock());
  }

  /** Reservations on the node not yet covered by its last status report, per model. */
  reservedOn(node: NodeRecord): Map<string, number> {
    this.reservations.expire(this.clock());
    return this.reservations.pendingByModel(
      node.spec.id,
      node.statusAtMs,
      node.spec.models.map((offer) => offer.model),
    );
  }

  /** This replica's housekeeping: drops reservations whose TTL has ended. */
  expireReservations(): number {
    return this.reservations.expire(this.clock()).length;
  }
}
