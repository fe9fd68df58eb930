// The one place where outcomes become gRPC status codes.

import { type Metadata, type ServerUnaryCall, type sendUnaryData, status } from '@grpc/grpc-js';
import type { InfeasibleReason, Refusal } from '../core/routing/index.js';
import { StoreUnavailableError } from '../store/store.js';

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

export interface ErrorSink {
  error(message: string, fields: Record<string, unknown>): void;
}

/** Told about every finished RPC (for metrics). */
export interface RpcObserver {
  rpcDone(method: string, code: status): void;
  storeError(): void;
}

const NO_OBSERVER: RpcObserver = { rpcDone() {}, storeError() {} };

/**
 * Wraps a unary handler: ApiErrors go to the caller with their code; anything else is a bug and
 * becomes INTERNAL (logged with its stack, never its details sent to the caller).
 */
export function unary<Req, Res>(
  method: string,
  sink: ErrorSink,
  handler: (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
  observer: RpcObserver = NO_OBSERVER,
): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) => {
    handler(call.request, call).then(
      (response) => {
        observer.rpcDone(method, status.OK);
        callback(null, response);
      },
      (error: unknown) => {
        if (error instanceof StoreUnavailableError) {
          observer.storeError();
          observer.rpcDone(method, status.UNAVAILABLE);
          callback({
            code: status.UNAVAILABLE,
            details: `${method} failed: ${error.message}; retry when the store is back`,
          });
          return;
        }
        if (error instanceof ApiError) {
          observer.rpcDone(method, error.code);
          callback({ code: error.code, details: error.message, metadata: error.trailers });
          return;
        }
        sink.error('internal error in RPC handler', {
          method,
          err: String((error as Error)?.stack ?? error),
        });
        observer.rpcDone(method, status.INTERNAL);
        callback({ code: status.INTERNAL, details: `internal error in ${method}; see the server log` });
      },
    );
  };
}
