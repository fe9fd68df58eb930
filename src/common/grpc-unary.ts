// One unary gRPC call on a generated client, with metadata and a deadline, as a promise.

import type { Metadata, ServiceError } from '@grpc/grpc-js';

export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: { deadline: Date },
  callback: (error: ServiceError | null, response: Res) => void,
) => unknown;

/** Calls `method` of `client`; rejects with the ServiceError as grpc-js gives it. */
export function callUnary<Req, Res>(
  client: object,
  method: UnaryMethod<Req, Res>,
  request: Req,
  metadata: Metadata,
  timeoutMs: number,
): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    method.call(
      client,
      request,
      metadata,
      { deadline: new Date(Date.now() + timeoutMs) },
      (error, response) => (error === null ? resolve(response) : reject(error)),
    );
  });
}
