// Bad bytes on the wire are the caller's mistake: every method answers INVALID_ARGUMENT (never
// INTERNAL or UNKNOWN) to bytes that are not its request message, including 64-bit numbers beyond
// what the server accepts, and keeps serving.
import {
  credentials,
  Metadata,
  makeGenericClientConstructor,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccountsService } from '../../src/gen/cpn/v1/accounts.js';
import { RegistryService } from '../../src/gen/cpn/v1/registry.js';
import { SchedulerService } from '../../src/gen/cpn/v1/scheduler.js';
import { ok, startTestServer, TEST_OPERATOR_KEY, type TestServer } from '../helpers/grpc.js';

const METHODS = [RegistryService, SchedulerService, AccountsService].flatMap((service) =>
  Object.values(service).map((method) => method.path),
);

/** A client that sends raw bytes to any method path. */
const RawClient = makeGenericClientConstructor(
  Object.fromEntries(
    METHODS.map((path) => [
      path,
      {
        path,
        requestStream: false,
        responseStream: false,
        requestSerialize: (bytes: Buffer) => bytes,
        requestDeserialize: (bytes: Buffer) => bytes,
        responseSerialize: (bytes: Buffer) => bytes,
        responseDeserialize: (bytes: Buffer) => bytes,
      },
    ]),
  ),
  'raw',
);

function varint(value: bigint): number[] {
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80n) {
    bytes.push(Number((rest & 0x7fn) | 0x80n));
    rest >>= 7n;
  }
  bytes.push(Number(rest));
  return bytes;
}

type RawCall = (
  bytes: Buffer,
  metadata: Metadata,
  options: { deadline: Date },
  callback: (error: ServiceError | null) => void,
) => void;

describe('wire handling', () => {
  let t: TestServer;
  let raw: InstanceType<typeof RawClient>;
  const send = (path: string, bytes: Buffer) =>
    new Promise<number>((resolve) => {
      const metadata = new Metadata();
      metadata.set('authorization', `Bearer ${TEST_OPERATOR_KEY}`);
      (raw as unknown as Record<string, RawCall>)[path]?.(
        bytes,
        metadata,
        { deadline: new Date(Date.now() + 10_000) },
        (error: ServiceError | null) => resolve(error === null ? status.OK : error.code),
      );
    });

  beforeAll(async () => {
    t = await startTestServer();
    raw = new RawClient(t.address, credentials.createInsecure());
  });
  afterAll(async () => {
    raw.close();
    await t.close();
  });

  it('a uint64 beyond 2^53 is INVALID_ARGUMENT naming the limit', async () => {
    // RouteRequest field 6 (input_tokens) as a varint of 2^60.
    const bytes = Buffer.from([0x30, ...varint(2n ** 60n)]);
    const code = await new Promise<ServiceError | null>((resolve) => {
      const metadata = new Metadata();
      metadata.set('authorization', `Bearer ${TEST_OPERATOR_KEY}`);
      (raw as unknown as Record<string, RawCall>)['/cpn.v1.Scheduler/Route']?.(
        bytes,
        metadata,
        { deadline: new Date(Date.now() + 10_000) },
        (error: ServiceError | null) => resolve(error),
      );
    });
    expect(code?.code).toBe(status.INVALID_ARGUMENT);
    expect(code?.details).toMatch(/larger than 9007199254740991/);
  });

  it('5,000 random byte strings to every method: never INTERNAL or UNKNOWN, and the server keeps serving', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...METHODS), fc.uint8Array({ maxLength: 64 }), async (path, bytes) => {
        const code = await send(path, Buffer.from(bytes));
        expect(
          [status.INTERNAL, status.UNKNOWN],
          `${path} ${Buffer.from(bytes).toString('hex')}`,
        ).not.toContain(code);
      }),
      { numRuns: 5000 },
    );
    expect(await ok(t.registry, t.registry.getStoreStatus, {})).toMatchObject({ kind: 'memory' });
  }, 120_000);
});
