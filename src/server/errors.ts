// The one place where outcomes become gRPC status codes.

import { Metadata, status } from '@grpc/grpc-js';
import type { InfeasibleReason, Refusal } from '../core/routing/index.js';
import { ErrorInfo, QuotaFailure, Status } from '../gen/google/rpc/error_details.js';

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

/** The domain of cpn's google.rpc.ErrorInfo reasons. */
export const ERROR_DOMAIN = 'cpn.dev';
/** The standard trailer that carries a serialized google.rpc.Status with details. */
export const STATUS_DETAILS_TRAILER = 'grpc-status-details-bin';

/**
 * Adds google.rpc.Status details (ErrorInfo, QuotaFailure) to `trailers`, so that a program can
 * tell "over quota" from "every node is full" without parsing the message.
 */
function withDetails(
  code: status,
  message: string,
  details: { errorInfo?: ErrorInfo; quotaFailure?: QuotaFailure },
  trailers: Metadata = new Metadata(),
): Metadata {
  const any = [];
  if (details.quotaFailure !== undefined)
    any.push({
      typeUrl: 'type.googleapis.com/google.rpc.QuotaFailure',
      value: Buffer.from(QuotaFailure.encode(details.quotaFailure).finish()),
    });
  if (details.errorInfo !== undefined)
    any.push({
      typeUrl: 'type.googleapis.com/google.rpc.ErrorInfo',
      value: Buffer.from(ErrorInfo.encode(details.errorInfo).finish()),
    });
  trailers.set(STATUS_DETAILS_TRAILER, Buffer.from(Status.encode({ code, message, details: any }).finish()));
  return trailers;
}

export function infeasibleError(reason: InfeasibleReason, summary: string, trailers?: Metadata): ApiError {
  const code = INFEASIBLE_STATUS[reason];
  const message = `${summary}; ${INFEASIBLE_ADVICE[reason]}`;
  if (reason !== 'ALL_FULL') return new ApiError(code, message, trailers);
  return new ApiError(
    code,
    message,
    withDetails(
      code,
      message,
      { errorInfo: { reason: 'CAPACITY_EXHAUSTED', domain: ERROR_DOMAIN, metadata: {} } },
      trailers,
    ),
  );
}

/**
 * An admission rule turned the request away: over quota or rate-limited (RESOURCE_EXHAUSTED, with
 * when to retry), or a model outside the package (PERMISSION_DENIED); ErrorInfo names the reason.
 */
export function refusedError(refusal: Refusal, summary: string, subject = ''): ApiError {
  const retry =
    refusal.retryAfterMs === undefined ? '' : `; retry after ${Math.ceil(refusal.retryAfterMs / 1000)} s`;
  const message = `${summary}${retry}`;
  const code =
    refusal.reason === 'MODEL_NOT_IN_PACKAGE' ? status.PERMISSION_DENIED : status.RESOURCE_EXHAUSTED;
  if (refusal.reason === undefined) return new ApiError(code, message);
  const metadata: Record<string, string> = { rule: refusal.rule };
  if (refusal.retryAfterMs !== undefined) metadata.retry_after_ms = String(refusal.retryAfterMs);
  return new ApiError(
    code,
    message,
    withDetails(code, message, {
      errorInfo: { reason: refusal.reason, domain: ERROR_DOMAIN, metadata },
      quotaFailure:
        refusal.reason === 'QUOTA_EXCEEDED'
          ? { violations: [{ subject, description: refusal.message }] }
          : undefined,
    }),
  );
}
