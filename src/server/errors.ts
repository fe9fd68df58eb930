// The one place where outcomes become gRPC status codes.

import { type Metadata, status } from '@grpc/grpc-js';
import type { InfeasibleReason, Refusal } from '../core/routing/index.js';

/**
 * An error whose gRPC status and message go to the caller as they are. It is an expected outcome
 * (a refusal, a bad field), not a fault: no stack trace is captured, which would cost more than
 * the decision that led to it.
 */
export class ApiError extends Error {
  constructor(
    readonly code: status,
    message: string,
    /** Trailing metadata for the caller, e.g. the explain list of an infeasible Route. */
    readonly trailers?: Metadata,
  ) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = limit;
    this.name = 'ApiError';
  }
}

export const invalidArgument = (message: string): ApiError => new ApiError(status.INVALID_ARGUMENT, message);
export const notFound = (message: string): ApiError => new ApiError(status.NOT_FOUND, message);
export const failedPrecondition = (message: string): ApiError =>
  new ApiError(status.FAILED_PRECONDITION, message);

const INFEASIBLE_STATUS: Readonly<Record<InfeasibleReason, status>> = {
  NO_LIVE_NODE: status.NOT_FOUND,
  NO_NODE_WITHIN_CONSTRAINTS: status.FAILED_PRECONDITION,
  ALL_FULL: status.RESOURCE_EXHAUSTED,
};

const INFEASIBLE_ADVICE: Readonly<Record<InfeasibleReason, string>> = {
  NO_LIVE_NODE: 'register a node that serves the model, or check that its agent is reporting',
  NO_NODE_WITHIN_CONSTRAINTS:
    'raise latency_budget_ms, widen allowed_levels/allowed_regions, or set allow_degraded',
  ALL_FULL: 'retry shortly, raise latency_budget_ms, or set allow_degraded',
};

export function infeasibleError(reason: InfeasibleReason, summary: string, trailers?: Metadata): ApiError {
  return new ApiError(INFEASIBLE_STATUS[reason], `${summary}; ${INFEASIBLE_ADVICE[reason]}`, trailers);
}

/** An admission rule turned the request away (quota, rate): RESOURCE_EXHAUSTED, with when to retry. */
export function refusedError(refusal: Refusal, summary: string): ApiError {
  const retry =
    refusal.retryAfterMs === undefined ? '' : `; retry after ${Math.ceil(refusal.retryAfterMs / 1000)} s`;
  return new ApiError(status.RESOURCE_EXHAUSTED, `${summary}${retry}`);
}
