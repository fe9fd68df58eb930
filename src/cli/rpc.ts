// gRPC for the client commands: the common options (--server, --timeout-ms, --api-key), a session
// whose every call carries the deadline and the credential, errors that print as one line, and
// the "call, then print a table or --json" helper every read command uses.

import { credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { type Command, Option } from 'commander';
import type { UnaryMethod } from '../common/grpc-unary.js';
import { AccountsClient } from '../gen/cpn/v1/accounts.js';
import { RegistryClient } from '../gen/cpn/v1/registry.js';
import { SchedulerClient } from '../gen/cpn/v1/scheduler.js';
import { integer } from './args.js';

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

/** The options every client command takes. */
export interface ClientFlags {
  readonly server: string;
  readonly timeoutMs: number;
  readonly apiKey?: string;
}

/** Adds --server, --timeout-ms and --api-key to a client command. */
export function withClientOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--server <host:port>', 'control plane address')
        .default('localhost:50051')
        .env('CPN_SERVER'),
    )
    .addOption(
      new Option('--timeout-ms <ms>', 'deadline for the call').default(5000).argParser(integer(1, 3_600_000)),
    )
    .addOption(
      new Option(
        '--api-key <key>',
        'API key sent as "authorization: Bearer <key>" (prefer the variable: flags show in ps)',
      ).env('CPN_API_KEY'),
    );
}

export interface Session {
  readonly registry: RegistryClient;
  readonly scheduler: SchedulerClient;
  readonly accounts: AccountsClient;
  /** The credential, for streaming calls (which have no deadline). */
  metadata(): Metadata;
  /** Calls a generated unary method with the deadline and the credential; failures → CliError. */
  call<Req, Res>(client: object, method: UnaryMethod<Req, Res>, request: Req): Promise<Res>;
}

export function describeFailure(error: ServiceError, flags: ClientFlags): string {
  const name = status[error.code] ?? String(error.code);
  const hint =
    error.code === status.UNAVAILABLE
      ? ` (is the control plane running at ${flags.server}? start it with: npx cpn serve --demo)`
      : error.code === status.DEADLINE_EXCEEDED
        ? ` (no answer from ${flags.server} in time; raise --timeout-ms)`
        : error.code === status.UNAUTHENTICATED && flags.apiKey === undefined
          ? ' (set CPN_API_KEY or pass --api-key; `cpn serve --demo` prints a demo key)'
          : '';
  return `${name}: ${error.details}${hint}`;
}

/** Opens clients to `flags.server`, runs `body`, closes them whatever happens. */
export async function withSession<T>(flags: ClientFlags, body: (session: Session) => Promise<T>): Promise<T> {
  const creds = credentials.createInsecure();
  const registry = new RegistryClient(flags.server, creds);
  const scheduler = new SchedulerClient(flags.server, creds);
  const accounts = new AccountsClient(flags.server, creds);
  const metadata = new Metadata();
  if (flags.apiKey !== undefined && flags.apiKey !== '')
    metadata.set('authorization', `Bearer ${flags.apiKey}`);
  const session: Session = {
    registry,
    scheduler,
    accounts,
    metadata: () => metadata.clone(),
    call<Req, Res>(client: object, method: UnaryMethod<Req, Res>, request: Req): Promise<Res> {
      return new Promise((resolve, reject) => {
        const deadline = new Date(Date.now() + flags.timeoutMs);
        method.call(client, request, metadata.clone(), { deadline }, (error, response) => {
          if (error === null) resolve(response);
          else reject(new CliError(describeFailure(error, flags), 1, error.metadata));
        });
      });
    },
  };
  try {
    return await body(session);
  } finally {
    registry.close();
    scheduler.close();
    accounts.close();
  }
}

/** Prints a response as indented JSON (`--json`) or as the command's text. */
export function printResponse<Res>(
  json: boolean | undefined,
  response: Res,
  toJSON: (response: Res) => unknown,
  text: (response: Res) => string,
): void {
  process.stdout.write(json ? `${JSON.stringify(toJSON(response), null, 2)}\n` : `${text(response)}\n`);
}

/** The read-command pattern: one call in a session, then a table or `--json`. */
export async function callAndPrint<Res>(
  flags: ClientFlags & { readonly json?: boolean },
  invoke: (session: Session) => Promise<Res>,
  toJSON: (response: Res) => unknown,
  text: (response: Res) => string,
): Promise<void> {
  const response = await withSession(flags, invoke);
  printResponse(flags.json, response, toJSON, text);
}
