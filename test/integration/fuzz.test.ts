// Structured fuzzing of every RPC: well-formed protobuf whose fields hold hostile values — empty,
// huge, NUL/newline/bidi strings, negative, fractional, 2^53 and beyond, unknown enum values,
// dates far in the past and future, long repeated fields — built by mutating a plausible request
// of each method. The server must answer every one with a deliberate status (never INTERNAL or
// UNKNOWN), keep serving, and hold its memory. (Raw byte strings: wire.test.ts.)
import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccountsService } from '../../src/gen/cpn/v1/accounts.js';
import { RegistryService } from '../../src/gen/cpn/v1/registry.js';
import { SchedulerService } from '../../src/gen/cpn/v1/scheduler.js';
import { ok, protoSpec, startTestServer, TEST_OPERATOR_KEY, type TestServer } from '../helpers/grpc.js';

interface Method {
  readonly path: string;
  readonly requestSerialize: (value: never) => Buffer;
  readonly requestDeserialize: (bytes: Buffer) => unknown;
}
const METHODS = [RegistryService, SchedulerService, AccountsService].flatMap(
  (service) => Object.values(service) as unknown as Method[],
);

/** Plausible nested values, by field name, so that mutations reach past the first missing field. */
const NESTED: Record<string, unknown> = {
  spec: protoSpec('fz-node'),
  client: { region: 'CN-GD', accessPoint: 'ap-1', location: { lat: 23.1, lon: 113.3 } },
  usage: { inputTokens: 10, cachedInputTokens: 0, outputTokens: 5 },
  load: [{ model: 'm', active: 1, queued: 0 }],
  samples: [{ from: 'CN-GD', nodeId: 'fz-node', rttMs: 5 }],
  policy: {
    rules: [{ level: 2, region: 'CN-GD', model: 'm', factor: 0.5, windowed: true, fromHour: 0, toHour: 8 }],
    utcOffsetHours: 8,
  },
  at: new Date(Date.UTC(2026, 10, 23)),
  allowedLevels: [2, 3],
  allowedRegions: ['CN-GD'],
  package: {
    name: 'p',
    quotaPoints: 1000,
    timeZone: 'Asia/Shanghai',
    periodSeconds: 0,
    weights: [{ model: '*', inputPer1k: 1, cachedInputPer1k: 0.1, outputPer1k: 4 }],
    allowedLevels: [],
    overQuota: 1,
    throttleRequestsPerS: 1,
    throttleBudgetMs: 1000,
    meter: 1,
  },
};

/** Plausible scalars, by field name, so that most requests are valid but for what was mutated. */
const SCALARS: Record<string, unknown> = {
  nodeId: 'fz-node',
  model: 'm',
  tenant: 'fz',
  name: 'fz',
  displayName: 'Fuzz',
  region: 'CN-GD',
  latencyBudgetMs: 1000,
  inputTokens: 100,
  maxOutputTokens: 10,
  ttlS: 60,
  pageSize: 10,
  role: 3,
  drain: true,
  success: true,
};

const isDefault = (value: unknown) =>
  value === undefined ||
  value === '' ||
  value === 0 ||
  value === false ||
  (Array.isArray(value) && value.length === 0);

/** A method's request: defaults, then plausible scalars and nested messages by field name. */
function template(method: Method): Record<string, unknown> {
  const base = method.requestDeserialize(Buffer.alloc(0)) as Record<string, unknown>;
  return Object.fromEntries(
    Object.entries(base).map(([key, value]) => [
      key,
      isDefault(value) ? (NESTED[key] ?? SCALARS[key] ?? value) : value,
    ]),
  );
}

const hostileString = fc.oneof(
  fc.constantFrom(
    '',
    'm',
    'CN-GD',
    'fz-node',
    '\u0000',
    'a\nb',
    '\u202eevil',
    'javascript:alert(1)',
    '../../etc/passwd',
    '*',
    '💥'.repeat(40),
    'x'.repeat(64),
    'x'.repeat(5000),
    `cpn_0123456789abcdef_${'A'.repeat(43)}`,
  ),
  fc.string({ maxLength: 80 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
);
const hostileNumber = fc.oneof(
  fc.constantFrom(0, 1, -1, 0.5, 7, 99, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e15, 1e308, -1e308),
  fc.double({ noNaN: false }),
  fc.integer(),
);
const hostileDate = fc.constantFrom(
  new Date(0),
  new Date(Date.UTC(-1000, 0, 1)),
  new Date(Date.UTC(9999, 0, 1)),
  new Date(Date.UTC(2026, 10, 22)),
  new Date(Date.UTC(2026, 10, 22, 0, 0, 1)),
);

/** A mutation of `value` that keeps its type: each leaf is kept or replaced, arrays grow or shrink. */
function mutated(value: unknown, depth = 0, inArray = false): fc.Arbitrary<unknown> {
  // Most leaves keep their plausible value, so that each request carries a few hostile ones.
  const keepOr = (hostile: fc.Arbitrary<unknown>) =>
    fc.oneof({ arbitrary: fc.constant(value), weight: 5 }, { arbitrary: hostile, weight: 1 });
  if (typeof value === 'string') return keepOr(hostileString);
  if (typeof value === 'number') return keepOr(hostileNumber);
  if (typeof value === 'boolean') return fc.boolean();
  if (value instanceof Date) return keepOr(hostileDate);
  if (Array.isArray(value)) {
    const element = value[0];
    if (element === undefined) return fc.constant([]);
    return fc.oneof(
      { arbitrary: fc.array(mutated(element, depth + 1, true), { minLength: 1, maxLength: 3 }), weight: 4 },
      { arbitrary: fc.constant([]), weight: 1 },
      {
        arbitrary: fc.integer({ min: 2, max: 400 }).map((n) => Array.from({ length: n }, () => element)),
        weight: 1,
      },
    );
  }
  if (value !== null && typeof value === 'object' && depth < 4) {
    const entries = Object.entries(value);
    // An optional message is now and then left out altogether.
    return fc
      .tuple(...entries.map(([, v]) => mutated(v, depth + 1)), fc.integer({ min: 0, max: 9 }))
      .map((values) =>
        values[values.length - 1] === 0 && depth > 0 && !inArray
          ? undefined
          : Object.fromEntries(entries.map(([key], i) => [key, values[i]])),
      );
  }
  return fc.constant(value);
}

/** Integers for every number (int64 fields take no fractions), no holes in repeated fields. */
function encodable(value: unknown): unknown {
  if (typeof value === 'number')
    return Number.isFinite(value) ? Math.min(Math.max(Math.trunc(value), 0), 2 ** 31 - 1) : 0;
  if (Array.isArray(value)) return value.filter((v) => v !== undefined).map(encodable);
  if (value instanceof Date) return value;
  if (value !== null && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([key, v]) => [key, encodable(v)]));
  return value;
}

describe('structured fuzzing of every RPC', () => {
  let t: TestServer;
  /** The grpc-js client's own unary call, with identity serializers: the bytes go as they are. */
  type RawUnary = (
    path: string,
    serialize: (b: Buffer) => Buffer,
    deserialize: (b: Buffer) => Buffer,
    request: Buffer,
    metadata: Metadata,
    options: { deadline: Date },
    callback: (error: ServiceError | null) => void,
  ) => void;
  const client = () => t.registry as unknown as { makeUnaryRequest: RawUnary };

  beforeAll(async () => {
    t = await startTestServer();
    // Something to act on: a node that the fuzzed requests name.
    await ok(t.registry, t.registry.registerNode, {
      spec: protoSpec('fz-node'),
      ttlS: 600,
      permanent: false,
    });
  });
  afterAll(async () => {
    await t.close();
  });

  it('5,000 mutated requests over every method: no INTERNAL or UNKNOWN, still serving, memory held', async () => {
    const cases = fc.oneof(
      ...METHODS.map((method) => mutated(template(method)).map((request) => ({ method, request }))),
    );
    const codes = new Map<string, number>();
    let sent = 0;
    let unencodable = 0;
    const rssBefore = process.memoryUsage().rss;
    await fc.assert(
      fc.asyncProperty(cases, async ({ method, request }) => {
        let bytes: Buffer;
        try {
          bytes = method.requestSerialize(request as never);
        } catch {
          // A value protobuf cannot carry in that field (a fraction in an int64, a hole in a
          // repeated message): send the nearest value it can.
          try {
            bytes = method.requestSerialize(encodable(request) as never);
          } catch {
            unencodable += 1;
            return;
          }
        }
        const metadata = new Metadata();
        metadata.set('authorization', `Bearer ${TEST_OPERATOR_KEY}`);
        const code = await new Promise<number>((resolve) =>
          client().makeUnaryRequest(
            method.path,
            (b: Buffer) => b,
            (b: Buffer) => b,
            bytes,
            metadata,
            { deadline: new Date(Date.now() + 20_000) },
            (error: ServiceError | null) => resolve(error === null ? status.OK : error.code),
          ),
        );
        sent += 1;
        const name = `${method.path} ${status[code]}`;
        codes.set(name, (codes.get(name) ?? 0) + 1);
        expect(
          [status.INTERNAL, status.UNKNOWN],
          `${method.path} ${JSON.stringify(request)?.slice(0, 400)}`,
        ).not.toContain(code);
      }),
      { numRuns: 5200 },
    );
    expect(sent).toBeGreaterThanOrEqual(5000);
    // Not all stopped at validation: many got through to the plane and its stores.
    const accepted = [...codes.entries()]
      .filter(([key]) => key.endsWith(' OK'))
      .reduce((sum, [, n]) => sum + n, 0);
    expect(accepted).toBeGreaterThan(500);
    expect(unencodable).toBeLessThan(100);
    // Every method was reached, most with some requests getting past validation.
    expect(new Set([...codes.keys()].map((key) => key.split(' ')[0])).size).toBe(METHODS.length);
    expect(await ok(t.registry, t.registry.getStoreStatus, {})).toMatchObject({ kind: 'memory' });
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(400 * 1024 * 1024);
  }, 240_000);
});
