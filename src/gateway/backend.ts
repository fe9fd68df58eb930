// What the gateway needs from a control plane, and the in-process implementation (the gateway
// inside `cpn serve`). remote-backend.ts is the same over gRPC (`cpn gateway --server`).

import type { Authenticator } from '../auth/authenticator.js';
import type { Logger } from '../common/logger.js';
import { type Level, nodeState, TENANT_PATTERN, type Usage } from '../core/model.js';
import type { ReservationId } from '../core/reservations.js';
import type { RouteRequest } from '../core/routing/index.js';
import type { ControlPlane } from '../plane/control-plane.js';
import { StoreUnavailableError } from '../store/store.js';
import { badRequest, decisionError, GatewayRefusal, gatewayError } from './openai-errors.js';

/** Who a request acts for. */
export interface Caller {
  /** '' for an unmetered request (an operator's without x-cpn-tenant). */
  readonly tenant: string;
  /** The request's credential, as it came. */
  readonly authorization: string | undefined;
}

/** A placement with its reservation. */
export interface Placed {
  readonly nodeId: string;
  readonly endpoint: string;
  readonly level: Level;
  readonly ttftMs: number;
  readonly reservationId: ReservationId;
}

export interface GatewayBackend {
  /** Authenticates a request; throws GatewayRefusal (401, 403, 503) when it may not proceed. */
  identify(authorization: string | undefined, tenantHeader: string | undefined): Promise<Caller>;
  /** Places the request; undefined if the client left first (nothing reserved). Throws GatewayRefusal. */
  route(caller: Caller, request: RouteRequest, isCancelled: () => boolean): Promise<Placed | undefined>;
  /** Settles a placement with the engine's usage (the gateway is the trusted meter). */
  settle(reservationId: ReservationId, usage: Usage, success: boolean): Promise<void>;
  /** Gives back a placement nothing was served on: no usage line. */
  abandon(reservationId: ReservationId): Promise<void>;
  /** Models the caller's package includes that a live node serves, sorted. */
  models(caller: Caller): Promise<string[]>;
  close(): void;
}

/** An operator (or anyone, with auth off) acts for the tenant named in x-cpn-tenant, if any. */
export function operatorTenant(tenantHeader: string | undefined): string {
  const tenant = tenantHeader ?? '';
  if (tenant !== '' && !TENANT_PATTERN.test(tenant))
    throw new GatewayRefusal(badRequest('x-cpn-tenant must be a tenant name'));
  return tenant;
}

export const unknownTenant = (tenant: string) =>
  new GatewayRefusal(
    gatewayError(404, 'invalid_request_error', 'tenant_not_found', `x-cpn-tenant: no tenant ${tenant}`),
  );

export const notATenant = (what: string) =>
  new GatewayRefusal(
    gatewayError(
      403,
      'permission_error',
      'not_a_tenant_key',
      `the gateway serves tenants: use a client key (this is ${what})`,
    ),
  );

export function inProcessBackend(
  plane: ControlPlane,
  authenticator: Authenticator,
  logger: Logger,
): GatewayBackend {
  return {
    async identify(authorization, tenantHeader) {
      const outcome = await authenticator.authenticate(authorization, undefined);
      if (!outcome.ok) {
        throw new GatewayRefusal(
          outcome.failure === 'busy'
            ? gatewayError(503, 'server_error', 'busy', outcome.message)
            : gatewayError(401, 'invalid_request_error', 'invalid_api_key', outcome.message),
        );
      }
      const { identity } = outcome;
      if (identity.role === 'client') return { tenant: identity.tenant, authorization };
      if (identity.role === 'operator') {
        const tenant = operatorTenant(tenantHeader);
        if (tenant !== '' && plane.accounts.tenant(tenant) === undefined) throw unknownTenant(tenant);
        return { tenant, authorization };
      }
      throw notATenant(`${identity.role} ${identity.subject}`);
    },

    async route(caller, request, isCancelled) {
      let routed: Awaited<ReturnType<ControlPlane['routeMetered']>>;
      try {
        routed = await plane.routeMetered({ ...request, tenant: caller.tenant }, { isCancelled });
      } catch (error) {
        if (error instanceof StoreUnavailableError)
          throw new GatewayRefusal(
            gatewayError(503, 'server_error', 'control_plane_unavailable', error.message, 1),
          );
        throw error;
      }
      const { decision } = routed;
      if (decision.kind !== 'placed') throw new GatewayRefusal(decisionError(decision));
      if (routed.reservation === undefined) return undefined;
      const { placement } = decision;
      return {
        nodeId: placement.nodeId,
        endpoint: placement.endpoint,
        level: placement.level,
        ttftMs: placement.estimate.ttftMs,
        reservationId: routed.reservation.id,
      };
    },

    async settle(reservationId, usage, success) {
      await plane.release(reservationId, usage, success, { kind: 'operator' }).catch((error: Error) =>
        logger.warn('could not settle a gateway request', {
          reservation: reservationId,
          err: error.message,
        }),
      );
    },

    async abandon(reservationId) {
      await plane.abandon(reservationId).catch((error: Error) =>
        logger.warn('could not give back a reservation', {
          reservation: reservationId,
          err: error.message,
        }),
      );
    },

    async models(caller) {
      const weights =
        caller.tenant === '' ? undefined : plane.accounts.tenant(caller.tenant)?.package?.weights;
      const nowMs = Date.now();
      const served = new Set<string>();
      for (const view of plane.listNodes({})) {
        if (nodeState(view.record, nowMs) !== 'READY') continue;
        for (const offer of view.record.spec.models) served.add(offer.model);
      }
      return [...served]
        .filter((model) => weights === undefined || model in weights || '*' in weights)
        .sort();
    },

    close() {},
  };
}
