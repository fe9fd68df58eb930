// What an etcd failure means. Three kinds matter to callers and to the client's fault handling:
//   refused     etcd answered and said no (request too large, out of space): not an outage, and
//               retrying will not help; it must never open the circuit breaker for healthy traffic
//   unreachable etcd could not be reached in time (connection refused or reset, deadline, closed
//               channel, an open circuit): the caller sees UNAVAILABLE naming etcd
//   anything else: a bug or bad data, passed on as it is

import { isBrokenCircuitError } from 'cockatiel';
import {
  ClientClosedError,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  isRecoverableError,
} from 'etcd3';

/** A keepalive stream that gave no answer within the call deadline. */
export class KeepaliveTimeout extends Error {}

const REFUSED = /request is too large|NOSPACE|no space|message larger than max|exceeds maximum/i;

/** Transport failures that etcd3 passes on as generic errors, recognised by their words. */
const TRANSPORT_FAILURE =
  /UNAVAILABLE|Channel closed|ECONNREFUSED|ECONNRESET|EPIPE|No connection established|Connection dropped|Deadline exceeded/i;

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error ?? ''));

/** etcd answered and refused the request itself. */
export function isRefused(error: unknown): boolean {
  return REFUSED.test(messageOf(error));
}

/** etcd could not be reached in time. */
export function isUnreachable(error: unknown): boolean {
  if (!(error instanceof Error) || isRefused(error)) return false;
  return (
    isRecoverableError(error) ||
    isBrokenCircuitError(error) ||
    error instanceof GRPCDeadlineExceededError ||
    error instanceof GRPCUnavailableError ||
    error instanceof GRPCCancelledError ||
    error instanceof ClientClosedError ||
    error instanceof KeepaliveTimeout ||
    TRANSPORT_FAILURE.test(error.message)
  );
}

/**
 * What the etcd3 client's retry and circuit breaker may count as a host failure: its own
 * "recoverable" errors, except refusals (etcd3 files NOSPACE, a RESOURCE_EXHAUSTED, as recoverable).
 */
export function isHostFailure(error: Error): boolean {
  return isRecoverableError(error) && !isRefused(error);
}
