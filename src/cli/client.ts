// gRPC clients for the CLI: promise wrappers with a deadline on every call, and errors that
// print as one line.

import { credentials, type Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { RegistryClient } from '../gen/cpn/v1/registry.js';
import { SchedulerClient } from '../gen/cpn/v1/scheduler.js';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    readonly trailers?: Metadata,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export interface Clients {
  readonly registry: RegistryClient;
  readonly scheduler: SchedulerClient;
  readonly deadline: () => Date;
  close(): void;
}

export function connect(server: string, timeoutMs: number): Clients {
  const creds = credentials.createInsecure();
  const registry = new RegistryClient(server, creds);
  const scheduler = new SchedulerClient(server, creds);
  return {
    registry,
    scheduler,
    deadline: () => new Date(Date.now() + timeoutMs),
    close() {
      registry.close();
      scheduler.close();
    },
  };
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: { deadline: Date },
  callback: (error: ServiceError | null, response: Res) => void,
) => unknown;

/** Calls a generated unary method; turns failures into a CliError naming the status code. */
export function call<Req, Res>(
  client: object,
  method: UnaryMethod<Req, Res>,
  request: Req,
  metadata: Metadata,
  deadline: Date,
  server: string,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, request, metadata, { deadline }, (error, response) => {
      if (error === null) {
        resolve(response);
        return;
      }
      const name = status[error.code] ?? String(error.code);
      const hint =
        error.code === status.UNAVAILABLE
          ? ` (is the control plane running at ${server}? start it with: npx cpn serve --demo)`
          : error.code === status.DEADLINE_EXCEEDED
            ? ` (no answer from ${server} in time; raise --timeout-ms)`
            : '';
      reject(new CliError(`${name}: ${error.details}${hint}`, 1, error.metadata));
    });
  });
}
