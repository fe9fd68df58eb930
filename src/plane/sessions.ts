// Mobility sessions in the control plane: open, update, close and watch, and the sweep that hands
// over the sessions of a node that drained or went away. The rule is the core's (routing/sessions.ts);
// here are the records (in the store, versioned, on their own TTL), the slot each session holds on
// its node (a reservation of this replica, renewed at each update, moved at a handover) and the
// notices to watchers. Any replica can serve any session: a record read, decided, and written back
// only if nobody wrote it meanwhile.

import { randomBytes } from 'node:crypto';
import type { ClientPosition } from '../core/latency.js';
import type { ReservationBook } from '../core/reservations.js';
import {
  DEFAULT_SESSION_RULE,
  type Fix,
  type Motion,
  type Placement,
  placementOn,
  placeSession,
  type Refusal,
  type RouteDecision,
  type RouteRequest,
  reconsider,
  type SessionContext,
  type SessionOutcome,
  type SessionRule,
  type SessionState,
  stayEstimate,
} from '../core/routing/index.js';
import type { HandoverRecord, SessionRecord, SessionStore, VersionedSession } from '../store/sessions.js';

export const DEFAULT_SESSION_TTL_S = 300;
export const MAX_SESSION_TTL_S = 3600;
export const DEFAULT_MAX_SESSIONS = 100_000;
/** One tenant's share: no tenant can take every session the cluster holds. */
export const DEFAULT_MAX_SESSIONS_PER_TENANT = 10_000;
/** The sweep decides at most this many sessions per run (the next run goes on), yielding every SWEEP_BATCH. */
const SWEEP_DECISIONS_PER_RUN = 2000;
const SWEEP_BATCH = 50;
/** A session with nowhere to go is looked at again by the sweep after this long (its updates still decide at once). */
const STRANDED_RETRY_MS = 10_000;
/** A write that lost to another replica is decided again this many times. */
const MAX_ATTEMPTS = 8;

export type OpenSessionInput = Pick<
  SessionRecord,
  | 'tenant'
  | 'model'
  | 'client'
  | 'latencyBudgetMs'
  | 'inputTokens'
  | 'maxOutputTokens'
  | 'contextTokens'
  | 'allowedLevels'
  | 'allowedRegions'
  | 'motion'
> & {
  /** 0: DEFAULT_SESSION_TTL_S. */
  readonly ttlS: number;
};

export interface UpdateSessionInput {
  readonly tenant: string;
  readonly id: string;
  readonly client: ClientPosition;
  readonly contextTokens: number | undefined;
  readonly motion: Motion | undefined;
}

/** A session as callers see it: its record and the placement to use now. */
export interface SessionView {
  readonly record: SessionRecord;
  /** Undefined when stranded on a node that is gone. */
  readonly placement: Placement | undefined;
  /** Set when this call moved it. */
  readonly handover: HandoverRecord | undefined;
}

export type OpenResult =
  | { readonly kind: 'opened'; readonly session: SessionView }
  | { readonly kind: 'refused'; readonly refusal: Refusal }
  | { readonly kind: 'infeasible'; readonly decision: Exclude<RouteDecision, { kind: 'placed' }> }
  | { readonly kind: 'limit'; readonly limit: number; readonly scope: 'cluster' | 'tenant' };

export type UpdateResult =
  | { readonly kind: 'updated'; readonly session: SessionView }
  | { readonly kind: 'not_found' }
  /** Other writes (other replicas) kept winning: try again. */
  | { readonly kind: 'contended'; readonly attempts: number };

export interface SessionObserver {
  handover(reason: HandoverRecord['reason']): void;
}

export interface SessionManagerOptions {
  readonly store: SessionStore;
  readonly reservations: ReservationBook;
  /** The routing context at `nowMs`, with the registry's nodes by id. */
  readonly context: (nowMs: number) => SessionContext;
  readonly clock: () => number;
  readonly monotonicClock: () => number;
  readonly rule?: SessionRule;
  readonly maxSessions?: number;
  readonly maxSessionsPerTenant?: number;
  readonly observer?: SessionObserver;
  /**
   * The tenant's package, asked before a session opens: a refusal (a model outside the package,
   * quota spent under REJECT) refuses the session; otherwise the request as the package allows it
   * (its levels). Undefined: no packages (the simulator).
   */
  readonly admit?: (
    request: RouteRequest,
  ) => { readonly refused: Refusal } | { readonly request: RouteRequest };
}

function fixOf(client: ClientPosition, atMs: number): Fix | undefined {
  return client.location === undefined
    ? undefined
    : { lat: client.location.lat, lon: client.location.lon, atMs };
}

function routeRequestOf(record: SessionRecord): RouteRequest {
  return {
    requestId: record.id,
    tenant: record.tenant,
    model: record.model,
    client: record.client,
    latencyBudgetMs: record.latencyBudgetMs,
    inputTokens: record.inputTokens,
    cachedInputTokens: 0,
    maxOutputTokens: record.maxOutputTokens,
    allowedLevels: record.allowedLevels,
    allowedRegions: record.allowedRegions,
    ...(record.packageLevels === undefined ? {} : { packageLevels: record.packageLevels }),
    allowDegraded: false,
    explain: false,
    maxFallbacks: 0,
  };
}

function stateOf(record: SessionRecord): SessionState {
  return {
    request: routeRequestOf(record),
    contextTokens: record.contextTokens,
    nodeId: record.nodeId,
    placedAtMs: record.placedAtMs,
    track: record.track,
    motion: record.motion,
  };
}

export class SessionManager {
  readonly rule: SessionRule;
  private readonly maxSessions: number;
  private readonly maxPerTenant: number;
  /** The slot each session holds through this replica: session id → reservation id. */
  private readonly slots = new Map<string, { nodeId: string; reservationId: string }>();

  constructor(private readonly options: SessionManagerOptions) {
    this.rule = options.rule ?? DEFAULT_SESSION_RULE;
    this.maxSessions = options.maxSessions ?? DEFAULT_MAX_SESSIONS;
    this.maxPerTenant = options.maxSessionsPerTenant ?? DEFAULT_MAX_SESSIONS_PER_TENANT;
  }

  count(): number {
    return this.options.store.count();
  }

  async open(input: OpenSessionInput): Promise<OpenResult> {
    if (this.options.store.count() >= this.maxSessions)
      return { kind: 'limit', limit: this.maxSessions, scope: 'cluster' };
    if (this.options.store.countFor(input.tenant) >= this.maxPerTenant)
      return { kind: 'limit', limit: this.maxPerTenant, scope: 'tenant' };
    const nowMs = this.options.clock();
    const ctx = this.options.context(nowMs);
    const id = randomBytes(16).toString('hex');
    const first = fixOf(input.client, nowMs);
    const ttlS = input.ttlS === 0 ? DEFAULT_SESSION_TTL_S : input.ttlS;
    let record: SessionRecord = {
      id,
      tenant: input.tenant,
      model: input.model,
      client: input.client,
      latencyBudgetMs: input.latencyBudgetMs,
      inputTokens: input.inputTokens,
      maxOutputTokens: input.maxOutputTokens,
      contextTokens: input.contextTokens,
      allowedLevels: input.allowedLevels,
      allowedRegions: input.allowedRegions,
      track: first === undefined ? [] : [first],
      motion: input.motion,
      nodeId: undefined,
      placedAtMs: nowMs,
      degraded: false,
      lastHandover: undefined,
      handovers: 0,
      ttlS,
      openedAtMs: nowMs,
      expiresAtMs: nowMs + ttlS * 1000,
    };
    let state = stateOf(record);
    const admitted = this.options.admit?.(state.request);
    if (admitted !== undefined && 'refused' in admitted)
      return { kind: 'refused', refusal: admitted.refused };
    if (admitted !== undefined && (admitted.request.packageLevels ?? []).length > 0) {
      // The package's levels hold for the whole session.
      record = { ...record, packageLevels: admitted.request.packageLevels };
      state = stateOf(record);
    }
    const decision = placeSession(state, input.client, ctx);
    if (decision.kind !== 'placed') return { kind: 'infeasible', decision };
    const placed = { ...record, nodeId: decision.placement.nodeId };
    this.hold(id, decision.placement.nodeId, input.model, input.tenant);
    try {
      await this.options.store.put(placed, undefined);
    } catch (error) {
      this.letGo(id);
      throw error;
    }
    return {
      kind: 'opened',
      session: { record: placed, placement: decision.placement, handover: undefined },
    };
  }

  /** Updates of one session on this replica run one after another (no write lost to a sibling). */
  private readonly updating = new Map<string, Promise<unknown>>();

  /** The client's new position: stay or hand over, written back unless another write came first. */
  update(input: UpdateSessionInput): Promise<UpdateResult> {
    const before = this.updating.get(input.id) ?? Promise.resolve();
    const run = before.then(
      () => this.updateNow(input),
      () => this.updateNow(input),
    );
    this.updating.set(input.id, run);
    const cleanup = () => {
      if (this.updating.get(input.id) === run) this.updating.delete(input.id);
    };
    run.then(cleanup, cleanup);
    return run;
  }

  private async updateNow(input: UpdateSessionInput): Promise<UpdateResult> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt += 1) {
      const current = await this.mine(input.tenant, input.id);
      if (current === undefined) return { kind: 'not_found' };
      const nowMs = this.options.clock();
      const fix = fixOf(input.client, nowMs);
      const previous = current.record.track[current.record.track.length - 1];
      const moved: SessionRecord = {
        ...current.record,
        client: input.client,
        track: fix === undefined ? [] : previous === undefined ? [fix] : [previous, fix],
        contextTokens: input.contextTokens ?? current.record.contextTokens,
        // Heading and speed are each kept until the client says otherwise.
        motion: { ...current.record.motion, ...input.motion },
        expiresAtMs: nowMs + current.record.ttlS * 1000,
      };
      const outcome = reconsider(stateOf(moved), input.client, this.options.context(nowMs), this.rule);
      const { record, placement, handover } = this.apply(moved, outcome, nowMs);
      const version = await this.options.store.put(record, current.version);
      if (version === undefined) continue;
      this.afterWrite(record, handover);
      return { kind: 'updated', session: { record, placement, handover } };
    }
    return { kind: 'contended', attempts: MAX_ATTEMPTS };
  }

  async close(tenant: string, id: string): Promise<boolean> {
    const current = await this.mine(tenant, id);
    if (current === undefined) return false;
    this.letGo(id);
    return this.options.store.remove(id);
  }

  /**
   * The session now, and every later version (handovers included) until it ends; undefined when
   * the session is not the tenant's (or unknown). Call the returned function to stop.
   */
  async watch(
    tenant: string,
    id: string,
    listener: (session: SessionView | undefined) => void,
  ): Promise<{ initial: SessionView; stop: () => void } | undefined> {
    const current = await this.mine(tenant, id);
    if (current === undefined) return undefined;
    let lastVersion = current.version;
    let handovers = current.record.handovers;
    const stop = this.options.store.watch(id, (session) => {
      if (session === undefined) {
        listener(undefined);
        return;
      }
      if (session.version <= lastVersion) return;
      lastVersion = session.version;
      const moved = session.record.handovers > handovers ? session.record.lastHandover : undefined;
      handovers = session.record.handovers;
      listener({ record: session.record, placement: this.placementOf(session.record), handover: moved });
    });
    return {
      initial: { record: current.record, placement: this.placementOf(current.record), handover: undefined },
      stop,
    };
  }

  /**
   * Hands over every session whose node is no longer usable (drained, down, unhealthy, gone, or no
   * longer serving the model): run every second by the leader, and after a drain on this replica.
   * Bounded so that it never holds the event loop: it yields between small batches, a session left
   * with nowhere to go is looked at again only after STRANDED_RETRY_MS, and a run that finds too
   * much stops and is continued by the next. Returns how many moved.
   */
  async sweep(onlyNode?: string): Promise<number> {
    if (this.sweeping !== undefined)
      return this.sweeping.then(() => (onlyNode === undefined ? 0 : this.sweep(onlyNode)));
    this.sweeping = this.runSweep(onlyNode);
    try {
      return await this.sweeping;
    } finally {
      this.sweeping = undefined;
    }
  }

  private sweeping: Promise<number> | undefined;
  /** What the last sweep did: sessions it decided and sessions it moved. */
  lastSweep = { decided: 0, moved: 0 };
  /** Sessions found with nowhere to go: not looked at again before this time. */
  private readonly strandedUntil = new Map<string, number>();

  private async runSweep(onlyNode: string | undefined): Promise<number> {
    let nowMs = this.options.clock();
    let ctx = this.options.context(nowMs);
    let moved = 0;
    let decided = 0;
    for (const [id, until] of this.strandedUntil) if (until <= nowMs) this.strandedUntil.delete(id);
    for (const session of [...this.options.store.all()]) {
      const { record } = session;
      if (record.expiresAtMs <= nowMs) continue;
      if (onlyNode !== undefined && record.nodeId !== onlyNode) continue;
      if (this.strandedUntil.has(record.id)) continue;
      const node = record.nodeId === undefined ? undefined : ctx.node(record.nodeId);
      const usable =
        node !== undefined &&
        !node.draining &&
        node.expiresAtMs > nowMs &&
        node.status?.healthy !== false &&
        node.spec.models.some((offer) => offer.model === record.model);
      if (usable) continue;
      if (decided >= SWEEP_DECISIONS_PER_RUN) break;
      decided += 1;
      if (decided % SWEEP_BATCH === 0) {
        // Let calls waiting on this replica run; then decide against the registry as it is now.
        await new Promise<void>((resolve) => setImmediate(resolve));
        nowMs = this.options.clock();
        ctx = this.options.context(nowMs);
      }
      const outcome = reconsider(stateOf(record), record.client, ctx, this.rule);
      if (outcome.kind !== 'handover') {
        this.strandedUntil.set(record.id, nowMs + STRANDED_RETRY_MS);
        continue;
      }
      const next = this.apply(record, outcome, nowMs);
      // Lost to a concurrent update: that one decided with the same node state.
      const version = await this.options.store.put(next.record, session.version).catch(() => undefined);
      if (version === undefined) continue;
      this.afterWrite(next.record, next.handover);
      moved += 1;
    }
    this.lastSweep = { decided, moved };
    return moved;
  }

  /** The record after the outcome, the placement to use, and the handover if it moved. */
  private apply(
    record: SessionRecord,
    outcome: SessionOutcome,
    nowMs: number,
  ): { record: SessionRecord; placement: Placement | undefined; handover: HandoverRecord | undefined } {
    if (outcome.kind === 'handover') {
      const handover: HandoverRecord = {
        from: record.nodeId,
        to: outcome.to.nodeId,
        reason: outcome.reason,
        stayTtftMs: outcome.stayTtftMs,
        moveTtftMs: outcome.moveTtftMs,
        atMs: nowMs,
      };
      return {
        record: {
          ...record,
          nodeId: outcome.to.nodeId,
          placedAtMs: nowMs,
          degraded: false,
          lastHandover: handover,
          handovers: record.handovers + 1,
        },
        placement: outcome.to,
        handover,
      };
    }
    const degraded = outcome.kind === 'stranded';
    const next = { ...record, degraded };
    return { record: next, placement: this.placementOf(next), handover: undefined };
  }

  /** After a successful write: the slot follows the session, and metrics hear of a handover. */
  private afterWrite(record: SessionRecord, handover: HandoverRecord | undefined): void {
    if (handover !== undefined) this.options.observer?.handover(handover.reason);
    if (record.nodeId === undefined) this.letGo(record.id);
    else this.hold(record.id, record.nodeId, record.model, record.tenant);
  }

  /** The placement on the session's node now (its estimate from the client's last position). */
  private placementOf(record: SessionRecord): Placement | undefined {
    if (record.nodeId === undefined) return undefined;
    const ctx = this.options.context(this.options.clock());
    const node = ctx.node(record.nodeId);
    const last = record.track[record.track.length - 1];
    const client =
      last === undefined ? record.client : { ...record.client, location: { lat: last.lat, lon: last.lon } };
    const estimate = stayEstimate(stateOf(record), client, ctx);
    if (node === undefined || estimate === undefined) return undefined;
    return placementOn(node.spec, record.model, estimate);
  }

  /** The tenant's session, or undefined (unknown, expired or another tenant's: the same answer). */
  private async mine(tenant: string, id: string): Promise<VersionedSession | undefined> {
    const session = await this.options.store.get(id);
    if (session === undefined || session.record.tenant !== tenant) return undefined;
    if (session.record.expiresAtMs <= this.options.clock()) return undefined;
    return session;
  }

  /** Gives back the slots of sessions that are gone (expired without a close, or closed elsewhere). */
  pruneSlots(): number {
    if (this.slots.size === 0) return 0;
    const live = new Map<string, string | undefined>();
    const nowMs = this.options.clock();
    for (const session of this.options.store.all())
      if (session.record.expiresAtMs > nowMs) live.set(session.record.id, session.record.nodeId);
    let pruned = 0;
    for (const [id, slot] of [...this.slots.entries()]) {
      // Still open, and still on the node this slot is on (another replica may have moved it).
      if (live.has(id) && live.get(id) === slot.nodeId) continue;
      this.letGo(id);
      pruned += 1;
    }
    return pruned;
  }

  /** Slots this replica holds for sessions. */
  slotCount(): number {
    return this.slots.size;
  }

  /**
   * Holds (or renews) the session's slot on `nodeId`, giving back one held elsewhere. Stamped when
   * made, not when the caller began: a status report that arrived while it awaited a store write
   * does not count this request, so it must not cover the reservation.
   */
  private hold(id: string, nodeId: string, model: string, tenant: string): void {
    this.letGo(id);
    const reservation = this.options.reservations.reserve(
      nodeId,
      model,
      tenant,
      this.options.clock(),
      this.options.monotonicClock(),
    );
    this.slots.set(id, { nodeId, reservationId: reservation.id });
  }

  private letGo(id: string): void {
    const slot = this.slots.get(id);
    if (slot === undefined) return;
    this.options.reservations.release(slot.reservationId);
    this.slots.delete(id);
  }
}
