// OpenAI-shaped errors: `{"error": {"message", "type", "code"}}` with the HTTP status the OpenAI
// SDKs act on (401 bad key, 403 not allowed, 429 quota or capacity, 400 bad request, 503 nothing
// to route to, 504 a budget nothing can meet).

import type { RouteDecision } from '../core/routing/index.js';

export interface GatewayError {
  readonly status: number;
  readonly type: string;
  readonly code: string;
  readonly message: string;
  /** Seconds, for Retry-After. */
  readonly retryAfterS?: number;
}

/** A request the gateway answers with an error instead of forwarding. */
export class GatewayRefusal extends Error {
  constructor(readonly detail: GatewayError) {
    super(detail.message);
  }
}

export const gatewayError = (
  status: number,
  type: string,
  code: string,
  message: string,
  retryAfterS?: number,
): GatewayError => ({ status, type, code, message, retryAfterS });

export const badRequest = (message: string, code = 'invalid_request'): GatewayError =>
  gatewayError(400, 'invalid_request_error', code, message);

export function errorBody(error: GatewayError): string {
  return JSON.stringify({
    error: { message: error.message, type: error.type, code: error.code, param: null },
  });
}

/** The error for a decision that placed nothing. */
export function decisionError(decision: Exclude<RouteDecision, { kind: 'placed' }>): GatewayError {
  if (decision.kind === 'refused') {
    const { refusal } = decision;
    const retryAfterS =
      refusal.retryAfterMs === undefined ? undefined : Math.max(1, Math.ceil(refusal.retryAfterMs / 1000));
    switch (refusal.reason) {
      case 'MODEL_NOT_IN_PACKAGE':
        return gatewayError(403, 'permission_error', 'model_not_in_package', refusal.message);
      case 'QUOTA_EXCEEDED':
        return gatewayError(429, 'insufficient_quota', 'quota_exceeded', refusal.message, retryAfterS);
      case 'RATE_LIMITED':
        return gatewayError(429, 'rate_limit_error', 'rate_limited', refusal.message, retryAfterS);
      default:
        return gatewayError(
          429,
          'rate_limit_error',
          (refusal.reason ?? 'refused').toLowerCase(),
          refusal.message,
          retryAfterS,
        );
    }
  }
  switch (decision.reason) {
    case 'ALL_FULL':
      return gatewayError(429, 'rate_limit_error', 'capacity_exhausted', decision.summary, 1);
    case 'NO_NODE_WITHIN_CONSTRAINTS':
      return gatewayError(504, 'server_error', 'latency_budget_impossible', decision.summary);
    default:
      return gatewayError(503, 'server_error', 'no_node', decision.summary);
  }
}
