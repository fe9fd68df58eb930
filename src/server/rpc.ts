// The wrapper every unary RPC runs in: the gate (credential and role) first, then the handler;
// ApiErrors go to the caller with their code, an unreachable store becomes UNAVAILABLE, anything
// else is a bug and becomes INTERNAL (logged with its stack, never its details sent to the caller).

import { type ServerUnaryCall, type ServiceDefinition, type sendUnaryData, status } from '@grpc/grpc-js';
import type { Identity } from '../auth/identity.js';
import { StoreRejectedError, StoreUnavailableError } from '../store/store.js';
import type { CallGate, MethodName } from './access.js';
import { ApiError, invalidArgument } from './errors.js';

/** A request whose bytes did not decode: handed to the handler's wrapper instead of an exception. */
const MALFORMED = Symbol('malformed request');
interface Malformed {
  readonly [MALFORMED]: string;
}

function describeDecodeError(error: unknown): string {
  const message = String((error as Error)?.message ?? error);
  if (/MAX_SAFE_INTEGER/.test(message))
    return `a 64-bit integer field is larger than ${Number.MAX_SAFE_INTEGER} (2^53 - 1), the most this server accepts`;
  return `the bytes are not a valid protobuf message of this method (${message.slice(0, 80)})`;
}

/**
 * A service definition whose request decoding never throws: grpc-js answers a decoding exception
 * with INTERNAL, but bad bytes are the caller's mistake. The handler wrapper (unaryMethods)
 * answers INVALID_ARGUMENT instead, after the credential check.
 */
export function tolerantDecoding<T extends ServiceDefinition>(definition: T): T {
  return Object.fromEntries(
    Object.entries(definition).map(([name, method]) => [
      name,
      {
        ...method,
        requestDeserialize: (bytes: Buffer) => {
          try {
            return method.requestDeserialize(bytes);
          } catch (error) {
            return { [MALFORMED]: describeDecodeError(error) } satisfies Malformed;
          }
        },
      },
    ]),
  ) as T;
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

export interface RpcContext {
  readonly sink: ErrorSink;
  readonly gate: CallGate;
  readonly observer?: RpcObserver;
}

export type UnaryHandler<Req, Res> = (
  request: Req,
  call: ServerUnaryCall<Req, Res>,
  caller: Identity,
) => Promise<Res>;

/** Builds the grpc-js handlers of one service: `unary('Route', handler)`. */
export function unaryMethods(context: RpcContext) {
  const observer = context.observer ?? NO_OBSERVER;
  return function unary<Req, Res>(
    method: MethodName,
    handler: UnaryHandler<Req, Res>,
  ): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
    const fail = (error: unknown, callback: sendUnaryData<Res>) => {
      if (error instanceof StoreUnavailableError) {
        observer.storeError();
        observer.rpcDone(method, status.UNAVAILABLE);
        callback({
          code: status.UNAVAILABLE,
          details: `${method} failed: ${error.message}; retry when the store is back`,
        });
        return;
      }
      if (error instanceof StoreRejectedError) {
        observer.rpcDone(method, status.RESOURCE_EXHAUSTED);
        callback({ code: status.RESOURCE_EXHAUSTED, details: `${method} failed: ${error.message}` });
        return;
      }
      if (error instanceof ApiError) {
        observer.rpcDone(method, error.code);
        callback({ code: error.code, details: error.message, metadata: error.trailers });
        return;
      }
      context.sink.error('internal error in RPC handler', {
        method,
        err: String((error as Error)?.stack ?? error),
      });
      observer.rpcDone(method, status.INTERNAL);
      callback({ code: status.INTERNAL, details: `internal error in ${method}; see the server log` });
    };
    return (call, callback) => {
      let admitted: Identity | Promise<Identity>;
      try {
        admitted = context.gate.admit(method, call.metadata, () => call.getAuthContext()?.sslPeerCertificate);
      } catch (error) {
        fail(error, callback);
        return;
      }
      const request = call.request as Req | Malformed;
      const run = (caller: Identity): Promise<Res> =>
        typeof request === 'object' && request !== null && MALFORMED in request
          ? Promise.reject(invalidArgument(`${method}: ${(request as Malformed)[MALFORMED]}`))
          : handler(call.request, call, caller);
      const result = admitted instanceof Promise ? admitted.then(run) : run(admitted);
      result.then(
        (response) => {
          observer.rpcDone(method, status.OK);
          callback(null, response);
        },
        (error: unknown) => fail(error, callback),
      );
    };
  };
}
