// The wrappers every RPC runs in (unary and bidirectional streams): the gate (credential and role) first, then the handler;
// ApiErrors go to the caller with their code, an unreachable store becomes UNAVAILABLE, anything
// else is a bug and becomes INTERNAL (logged with its stack, never its details sent to the caller).

import type { PeerCertificate } from 'node:tls';
import {
  type Metadata,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
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
  /** A message read from a client's stream. */
  messageReceived?(method: string): void;
}

const NO_OBSERVER: RpcObserver = { rpcDone() {}, storeError() {} };

export interface RpcContext {
  readonly sink: ErrorSink;
  readonly gate: CallGate;
  readonly observer?: RpcObserver;
  /** Resolves when the server starts shutting down: long-lived streams end then (UNAVAILABLE). */
  readonly closing?: Promise<void>;
}

export type UnaryHandler<Req, Res> = (
  request: Req,
  call: ServerUnaryCall<Req, Res>,
  caller: Identity,
) => Promise<Res>;

/** The status a failed call ends with; tells the observer and logs bugs. */
function failureStatus(
  context: RpcContext,
  method: MethodName,
  error: unknown,
): { code: status; details: string; metadata?: Metadata } {
  const observer = context.observer ?? NO_OBSERVER;
  let failure: { code: status; details: string; metadata?: Metadata };
  if (error instanceof StoreUnavailableError) {
    observer.storeError();
    failure = {
      code: status.UNAVAILABLE,
      details: `${method} failed: ${error.message}; retry when the store is back`,
    };
  } else if (error instanceof StoreRejectedError)
    failure = { code: status.RESOURCE_EXHAUSTED, details: `${method} failed: ${error.message}` };
  else if (error instanceof ApiError)
    failure = { code: error.code, details: error.message, metadata: error.trailers };
  else {
    context.sink.error('internal error in RPC handler', {
      method,
      err: String((error as Error)?.stack ?? error),
    });
    failure = { code: status.INTERNAL, details: `internal error in ${method}; see the server log` };
  }
  observer.rpcDone(method, failure.code);
  return failure;
}

const isMalformed = (request: unknown): request is Malformed =>
  typeof request === 'object' && request !== null && MALFORMED in request;

/** Builds the grpc-js handlers of one service: `unary('Route', handler)`. */
export function unaryMethods(context: RpcContext) {
  const observer = context.observer ?? NO_OBSERVER;
  return function unary<Req, Res>(
    method: MethodName,
    handler: UnaryHandler<Req, Res>,
  ): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
    const fail = (error: unknown, callback: sendUnaryData<Res>) => {
      callback(failureStatus(context, method, error));
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
        isMalformed(request)
          ? Promise.reject(invalidArgument(`${method}: ${request[MALFORMED]}`))
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

/**
 * A bidirectional stream's handler: it reads `messages` (each decoded; a malformed one throws
 * INVALID_ARGUMENT) one at a time — the next is not read from the wire until the handler asks, so
 * a fast sender is held back by flow control, not buffered — and answers with `send`. Returning
 * ends the stream with OK; throwing ends it with the error's status (as for unary calls).
 */
export type BidiHandler<Req, Res> = (
  messages: AsyncIterable<Req>,
  send: (response: Res) => Promise<void>,
  caller: Identity,
  call: ServerDuplexStream<Req, Res>,
) => Promise<void>;

/** What a stream handler's wrapper needs of a grpc-js server stream (duplex or writable). */
interface ServerStream<Res> {
  readonly metadata: Metadata;
  getAuthContext(): { sslPeerCertificate?: PeerCertificate } | undefined;
  write(response: Res): boolean;
  end(): void;
  emit(event: 'error', status: { code: status; details: string }): boolean;
  on(event: 'cancelled' | 'close', listener: () => void): unknown;
  once(event: 'drain', listener: () => void): unknown;
}

/**
 * The parts every streaming call shares: the gate, `send` with back-pressure, and the end — OK when
 * the handler returns, the error's status when it throws, nothing once the client has gone.
 */
function runStream<Res>(
  context: RpcContext,
  method: MethodName,
  call: ServerStream<Res>,
  run: (
    caller: Identity,
    send: (response: Res) => Promise<void>,
    gone: Promise<void>,
    /** Checks the credential again (cached: no hashing); throws when it no longer holds. */
    recheck: () => Identity | Promise<Identity>,
  ) => Promise<void>,
  /**
   * When the credential is checked again: at every answer (server streams, which read nothing
   * more), or never here because `run` checks at every message it reads (bidirectional streams).
   */
  recheckOnSend: boolean,
): void {
  const observer = context.observer ?? NO_OBSERVER;
  let cancelled = false;
  let finished = false;
  const gone = new Promise<void>((resolve) => {
    call.on('cancelled', () => {
      cancelled = true;
      resolve();
    });
    call.on('close', () => resolve());
  });
  const finish = (error?: unknown) => {
    if (finished) return;
    finished = true;
    // A client that cancels ends the incoming messages before grpc-js says 'cancelled': look after
    // the events already queued.
    setImmediate(() => {
      if (cancelled) observer.rpcDone(method, status.CANCELLED);
      else if (error === undefined) {
        observer.rpcDone(method, status.OK);
        call.end();
      } else call.emit('error', failureStatus(context, method, error));
    });
  };
  const admit = () =>
    context.gate.admit(method, call.metadata, () => call.getAuthContext()?.sslPeerCertificate);
  // The credential is checked again while the stream is open, so a key revoked or expired
  // meanwhile stops working at once, as it would for a unary call.
  const send = async (response: Res): Promise<void> => {
    if (recheckOnSend) {
      const again = admit();
      if (again instanceof Promise) await again;
    }
    if (cancelled || finished) return;
    await new Promise<void>((resolve) => {
      if (call.write(response)) resolve();
      else {
        call.once('drain', () => resolve());
        // A client that stopped reading and went away never drains.
        gone.then(resolve);
      }
    });
  };
  context.closing?.then(() =>
    finish(
      new ApiError(status.UNAVAILABLE, `${method}: this replica is shutting down; reconnect to another`),
    ),
  );
  let admitted: Identity | Promise<Identity>;
  try {
    admitted = admit();
  } catch (error) {
    finish(error);
    return;
  }
  const start = (caller: Identity) => run(caller, send, gone, admit);
  (admitted instanceof Promise ? admitted.then(start) : start(admitted)).then(() => finish(), finish);
}

/** Builds the grpc-js handlers of bidirectional streams: `bidi('Heartbeat', handler)`. */
export function bidiMethods(context: RpcContext) {
  const observer = context.observer ?? NO_OBSERVER;
  return function bidi<Req, Res>(
    method: MethodName,
    handler: BidiHandler<Req, Res>,
    /** A stream whose first message does not come this soon ends with DEADLINE_EXCEEDED. */
    firstMessageWithinMs?: number,
  ): (call: ServerDuplexStream<Req, Res>) => void {
    return (call) => {
      let cancelled = false;
      call.on('cancelled', () => {
        cancelled = true;
      });
      async function* messages(recheck: () => Identity | Promise<Identity>): AsyncGenerator<Req> {
        let timer: NodeJS.Timeout | undefined;
        try {
          // Returning early must not destroy the call: its status is still to be sent.
          const incoming = (call.iterator({ destroyOnReturn: false }) as AsyncIterable<Req | Malformed>)[
            Symbol.asyncIterator
          ]();
          let first = firstMessageWithinMs !== undefined;
          for (;;) {
            const next = first
              ? await Promise.race([
                  incoming.next(),
                  new Promise<never>((_, reject) => {
                    timer = setTimeout(
                      () =>
                        reject(
                          new ApiError(
                            status.DEADLINE_EXCEEDED,
                            `${method}: no message within ${firstMessageWithinMs} ms of opening the stream`,
                          ),
                        ),
                      firstMessageWithinMs,
                    );
                  }),
                ])
              : await incoming.next();
            clearTimeout(timer);
            first = false;
            if (next.done) return;
            const message = next.value;
            if (isMalformed(message)) throw invalidArgument(`${method}: ${message[MALFORMED]}`);
            // The credential again: a key revoked while the stream is open stops here.
            const again = recheck();
            if (again instanceof Promise) await again;
            observer.messageReceived?.(method);
            yield message;
          }
        } catch (error) {
          if (cancelled || (error as NodeJS.ErrnoException)?.code === 'ERR_STREAM_PREMATURE_CLOSE') return;
          throw error;
        } finally {
          clearTimeout(timer);
        }
      }
      runStream(
        context,
        method,
        call,
        (caller, send, _gone, recheck) => handler(messages(recheck), send, caller, call),
        false,
      );
    };
  };
}

/**
 * A server-streaming handler: it answers with `send` until it returns (the stream ends with OK) or
 * throws (it ends with the error's status). `cancelled` resolves when the client goes away; the
 * handler must then return.
 */
export type ServerStreamHandler<Req, Res> = (
  request: Req,
  send: (response: Res) => Promise<void>,
  caller: Identity,
  cancelled: Promise<void>,
) => Promise<void>;

/** Builds the grpc-js handlers of server streams: `serverStream('WatchSession', handler)`. */
export function serverStreamMethods(context: RpcContext) {
  return function serverStream<Req, Res>(
    method: MethodName,
    handler: ServerStreamHandler<Req, Res>,
  ): (call: ServerWritableStream<Req, Res>) => void {
    return (call) => {
      const request = call.request as Req | Malformed;
      runStream(
        context,
        method,
        call,
        (caller, send, gone) =>
          isMalformed(request)
            ? Promise.reject(invalidArgument(`${method}: ${request[MALFORMED]}`))
            : handler(request, send, caller, gone),
        true,
      );
    };
  };
}

/**
 * A server stream's sender that keeps only the latest message while the client is slow to read:
 * nothing piles up. `over` resolves once a message for which `last` holds is sent, or a send fails
 * (the credential no longer holds); `throwIfFailed` then rethrows that failure.
 */
export function latestOnly<Res>(send: (response: Res) => Promise<void>, last: (response: Res) => boolean) {
  let pending: Res | undefined;
  let sending = false;
  let failure: unknown;
  let ended!: () => void;
  const over = new Promise<void>((resolve) => {
    ended = resolve;
  });
  const flush = async () => {
    if (sending) return;
    sending = true;
    try {
      while (pending !== undefined) {
        const next = pending;
        pending = undefined;
        await send(next);
        if (last(next)) ended();
      }
    } catch (error) {
      failure = error;
      ended();
    } finally {
      sending = false;
    }
  };
  return {
    over,
    /** Replaces any message not sent yet with `response`, and sends when the client can take it. */
    offer(response: Res): void {
      pending = response;
      void flush();
    },
    /** Sends `response` unless another is already waiting. */
    offerUnlessPending(response: Res): void {
      pending ??= response;
      void flush();
    },
    throwIfFailed(): void {
      if (failure !== undefined) throw failure;
    },
  };
}
