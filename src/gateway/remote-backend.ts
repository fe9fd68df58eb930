// The gateway's control plane over gRPC (`cpn gateway --server HOST:PORT`): a gateway at an edge
// site, in front of a remote control plane.
//
// Each request's own key goes with its Route, so the plane authenticates the tenant and applies
// its package exactly as for a gRPC client. The gateway's own key (an operator's) settles usage —
// the gateway is the trusted meter — gives back abandoned placements and reads packages and the
// models nodes serve. Who a key is (WhoAmI) and the model list are cached for a few seconds.

import { createHash } from 'node:crypto';
import { type ChannelCredentials, credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { callUnary } from '../common/grpc-unary.js';
import type { Logger } from '../common/logger.js';
import { LEVELS, type Usage } from '../core/model.js';
import type { ReservationId } from '../core/reservations.js';
import type { RouteRequest } from '../core/routing/index.js';
import { AccountsClient, Role } from '../gen/cpn/v1/accounts.js';
import { ListNodesRequest, RegistryClient } from '../gen/cpn/v1/registry.js';
import { SchedulerClient } from '../gen/cpn/v1/scheduler.js';
import { NodeState, type Level as ProtoLevel } from '../gen/cpn/v1/types.js';
import { ErrorInfo, Status } from '../gen/google/rpc/error_details.js';
import {
  type Caller,
  type GatewayBackend,
  notATenant,
  operatorTenant,
  type Placed,
  unknownTenant,
} from './backend.js';
import { type GatewayError, GatewayRefusal, gatewayError } from './openai-errors.js';

export interface RemoteBackendOptions {
  /** host:port of a control plane replica (or a load balancer in front of them). */
  readonly server: string;
  /** The gateway's own key: an operator's (settles usage as the trusted meter). */
  readonly apiKey: string;
  readonly credentials?: ChannelCredentials;
  /** Deadline of calls other than Route (default 5 s). */
  readonly timeoutMs?: number;
  readonly logger: Logger;
}

const CACHE_MS = 5000;
const MAX_CACHED_KEYS = 10_000;

const bearer = (authorization: string | undefined) => {
  const metadata = new Metadata();
  if (authorization !== undefined && authorization !== '') metadata.set('authorization', authorization);
  return metadata;
};

/** The ErrorInfo reason and retry_after_ms of a failed call, if it carries them. */
function reasonOf(error: ServiceError): { reason?: string; retryAfterMs?: number } {
  const raw = error.metadata?.get('grpc-status-details-bin')[0];
  if (!(raw instanceof Buffer)) return {};
  try {
    const info = Status.decode(raw).details.find((d) => d.typeUrl.endsWith('google.rpc.ErrorInfo'));
    if (info === undefined) return {};
    const decoded = ErrorInfo.decode(info.value);
    const retry = Number(decoded.metadata.retry_after_ms);
    return { reason: decoded.reason, retryAfterMs: Number.isFinite(retry) ? retry : undefined };
  } catch {
    return {};
  }
}

/** The OpenAI-shaped error for a control plane's gRPC refusal. */
export function grpcToGateway(error: ServiceError): GatewayError {
  const { reason, retryAfterMs } = reasonOf(error);
  const retryAfterS = retryAfterMs === undefined ? undefined : Math.max(1, Math.ceil(retryAfterMs / 1000));
  const message = error.details || error.message;
  switch (error.code) {
    case status.UNAUTHENTICATED:
      return gatewayError(401, 'invalid_request_error', 'invalid_api_key', message);
    case status.PERMISSION_DENIED:
      return reason === 'MODEL_NOT_IN_PACKAGE'
        ? gatewayError(403, 'permission_error', 'model_not_in_package', message)
        : gatewayError(403, 'permission_error', 'permission_denied', message);
    case status.RESOURCE_EXHAUSTED:
      if (reason === 'QUOTA_EXCEEDED')
        return gatewayError(429, 'insufficient_quota', 'quota_exceeded', message, retryAfterS);
      if (reason === 'CAPACITY_EXHAUSTED')
        return gatewayError(429, 'rate_limit_error', 'capacity_exhausted', message, 1);
      return gatewayError(
        429,
        'rate_limit_error',
        (reason ?? 'resource_exhausted').toLowerCase(),
        message,
        retryAfterS,
      );
    case status.FAILED_PRECONDITION:
      return gatewayError(504, 'server_error', 'latency_budget_impossible', message);
    case status.NOT_FOUND:
      return gatewayError(503, 'server_error', 'no_node', message);
    case status.INVALID_ARGUMENT:
      return gatewayError(400, 'invalid_request_error', 'invalid_request', message);
    default:
      return gatewayError(
        503,
        'server_error',
        'control_plane_unavailable',
        `the control plane: ${status[error.code]} ${message}`,
        1,
      );
  }
}

const isServiceError = (error: unknown): error is ServiceError =>
  error instanceof Error && typeof (error as ServiceError).code === 'number';

export function remoteBackend(options: RemoteBackendOptions): GatewayBackend {
  const creds = options.credentials ?? credentials.createInsecure();
  const scheduler = new SchedulerClient(options.server, creds);
  const registry = new RegistryClient(options.server, creds);
  const accounts = new AccountsClient(options.server, creds);
  const own = bearer(`Bearer ${options.apiKey}`);
  const timeoutMs = options.timeoutMs ?? 5000;
  /** WhoAmI answers by SHA-256 of the credential (never the credential itself). */
  const identities = new Map<string, { caller: Omit<Caller, 'authorization'>; untilMs: number }>();
  let served: { models: Set<string>; untilMs: number } | undefined;

  const refuse = (error: unknown): never => {
    if (isServiceError(error)) throw new GatewayRefusal(grpcToGateway(error));
    throw error;
  };

  /** Tenants an operator's x-cpn-tenant named that exist, for a few seconds. */
  const tenantsSeen = new Map<string, number>();
  async function knownTenant(tenant: string): Promise<string> {
    if (tenant === '' || (tenantsSeen.get(tenant) ?? 0) > Date.now()) return tenant;
    try {
      await callUnary(accounts, accounts.getTenant, { name: tenant }, own, timeoutMs);
    } catch (error) {
      if (isServiceError(error) && error.code === status.NOT_FOUND) throw unknownTenant(tenant);
      refuse(error);
    }
    if (tenantsSeen.size >= MAX_CACHED_KEYS) tenantsSeen.clear();
    tenantsSeen.set(tenant, Date.now() + CACHE_MS);
    return tenant;
  }

  async function servedModels(): Promise<Set<string>> {
    if (served !== undefined && served.untilMs > Date.now()) return served.models;
    const models = new Set<string>();
    let pageToken = '';
    for (let page = 0; page < 1000; page += 1) {
      const response = await callUnary(
        registry,
        registry.listNodes,
        ListNodesRequest.fromPartial({ pageSize: 5000, pageToken }),
        own,
        timeoutMs,
      ).catch(refuse);
      for (const node of response.nodes) {
        if (node.state !== NodeState.NODE_STATE_READY) continue;
        for (const offer of node.spec?.models ?? []) models.add(offer.model);
      }
      pageToken = response.nextPageToken;
      if (pageToken === '') break;
    }
    served = { models, untilMs: Date.now() + CACHE_MS };
    return models;
  }

  return {
    async identify(authorization, tenantHeader) {
      const digest = createHash('sha256')
        .update(authorization ?? '')
        .digest('base64url');
      const cached = identities.get(digest);
      if (cached !== undefined && cached.untilMs > Date.now()) {
        const tenant =
          cached.caller.tenant === '\u0000operator'
            ? await knownTenant(operatorTenant(tenantHeader))
            : cached.caller.tenant;
        return { tenant, authorization };
      }
      const who = await callUnary(accounts, accounts.whoAmI, {}, bearer(authorization), timeoutMs).catch(
        refuse,
      );
      let tenant: string;
      if (who.role === Role.ROLE_CLIENT) tenant = who.tenant;
      else if (who.role === Role.ROLE_OPERATOR) tenant = '\u0000operator';
      else throw notATenant(`${Role[who.role]} ${who.subject}`);
      if (identities.size >= MAX_CACHED_KEYS) identities.clear();
      identities.set(digest, { caller: { tenant }, untilMs: Date.now() + CACHE_MS });
      return {
        tenant: tenant === '\u0000operator' ? await knownTenant(operatorTenant(tenantHeader)) : tenant,
        authorization,
      };
    },

    async route(caller, request: RouteRequest, isCancelled) {
      const response = await callUnary(
        scheduler,
        scheduler.route,
        {
          requestId: request.requestId,
          tenant: caller.tenant,
          model: request.model,
          client: {
            region: request.client.region,
            accessPoint: request.client.accessPoint,
            location: undefined,
          },
          latencyBudgetMs: request.latencyBudgetMs,
          inputTokens: request.inputTokens,
          cachedInputTokens: request.cachedInputTokens,
          maxOutputTokens: request.maxOutputTokens,
          allowedLevels: request.allowedLevels.map((level) => (LEVELS.indexOf(level) + 1) as ProtoLevel),
          allowedRegions: [...request.allowedRegions],
          allowDegraded: request.allowDegraded,
          explain: false,
          maxFallbacks: 0,
          avoid: request.failedNodes === undefined ? undefined : { nodeIds: [...request.failedNodes] },
        },
        bearer(caller.authorization),
        timeoutMs,
      ).catch(refuse);
      const placement = response.placement;
      if (placement === undefined)
        throw new Error('the control plane placed the request without a placement');
      if (isCancelled()) {
        await this.abandon(response.reservationId as ReservationId);
        return undefined;
      }
      const placed: Placed = {
        nodeId: placement.nodeId,
        endpoint: placement.endpoint,
        level: LEVELS[placement.level - 1] ?? 'PROVINCE',
        ttftMs: placement.estimate?.ttftMs ?? 0,
        reservationId: response.reservationId as ReservationId,
      };
      return placed;
    },

    async settle(reservationId, usage: Usage, success) {
      await callUnary(scheduler, scheduler.release, { reservationId, usage, success }, own, timeoutMs).catch(
        (error: Error) =>
          options.logger.warn('could not settle a gateway request', {
            reservation: reservationId,
            err: error.message,
          }),
      );
    },

    async abandon(reservationId) {
      await callUnary(
        scheduler,
        scheduler.release,
        { reservationId, usage: undefined, success: false, abandoned: true },
        own,
        timeoutMs,
      ).catch((error: Error) =>
        options.logger.warn('could not give back a reservation', {
          reservation: reservationId,
          err: error.message,
        }),
      );
    },

    async models(caller) {
      const models = await servedModels();
      if (caller.tenant === '') return [...models].sort();
      const tenant = await callUnary(
        accounts,
        accounts.getTenant,
        { name: caller.tenant },
        own,
        timeoutMs,
      ).catch(refuse);
      const weights = new Set(tenant.tenant?.package?.weights.map((w) => w.model) ?? []);
      if (tenant.tenant?.package === undefined || weights.has('*')) return [...models].sort();
      return [...models].filter((model) => weights.has(model)).sort();
    },

    close() {
      scheduler.close();
      registry.close();
      accounts.close();
    },
  };
}
