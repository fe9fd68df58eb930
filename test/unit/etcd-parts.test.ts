// The etcd store's pure parts, without a live etcd: the key codec, the status-flush policy, the
// record of nodes whose leases could not be renewed, and the error classification.
import { BrokenCircuitError } from 'cockatiel';
import { GRPCResourceExhastedError, GRPCUnavailableError } from 'etcd3';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LIST_PRICE } from '../../src/core/cost.js';
import type { NodeSpec, NodeStatus } from '../../src/core/model.js';
import { silentLogger } from '../../src/ops/log.js';
import {
  isHostFailure,
  isRefused,
  isUnreachable,
  KeepaliveTimeout,
} from '../../src/store/etcd/etcd-errors.js';
import { KeyCodec, prefixEnd } from '../../src/store/etcd/etcd-keys.js';
import type { EtcdLedgers } from '../../src/store/etcd/etcd-ledgers.js';
import { EtcdMirror } from '../../src/store/etcd/etcd-mirror.js';
import { UnrenewedLeases } from '../../src/store/etcd/node-leases.js';
import { shouldFlush } from '../../src/store/etcd/status-flush.js';
import { RegistryIndex } from '../../src/store/registry-index.js';
import { spec as fixtureSpec } from '../helpers/fixtures.js';

const spec = (id: string, capacity = 20): NodeSpec =>
  ({
    id,
    models: [{ model: 'm', maxConcurrency: capacity / 2, maxQueue: capacity / 2 }],
  }) as unknown as NodeSpec;

const status = (active: number, overrides: Partial<NodeStatus> = {}): NodeStatus => ({
  nodeId: 'a',
  load: [{ model: 'm', active, queued: 0 }],
  gpuUtilization: 0.5,
  kvCacheUtilization: 0.5,
  healthy: true,
  ...overrides,
});

describe('KeyCodec', () => {
  const codec = new KeyCodec('/cpn/v1/');

  it('round-trips kind and id, ids may hold slashes', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('nodes', 'latency', 'ledgers', 'pricing') as fc.Arbitrary<'nodes'>,
        fc.string({ minLength: 1, maxLength: 30 }),
        (kind, id) => {
          expect(codec.parseKey(codec.key(kind, id).toString())).toEqual({ kind, id });
        },
      ),
    );
  });

  it('keys outside the layout are foreign; bad JSON is unreadable; plain kinds are strings', () => {
    expect(codec.decode(Buffer.from('/other/nodes/a'), Buffer.from('{}'))).toEqual({
      ok: false,
      reason: 'foreign',
    });
    expect(codec.decode(Buffer.from('/cpn/v1/bogus/a'), Buffer.from('{}'))).toEqual({
      ok: false,
      reason: 'foreign',
    });
    expect(codec.decode(Buffer.from('/cpn/v1/nodes'), Buffer.from('{}'))).toEqual({
      ok: false,
      reason: 'foreign',
    });
    expect(codec.decode(Buffer.from('/cpn/v1/nodes/a'), Buffer.from('{'))).toEqual({
      ok: false,
      reason: 'unreadable',
    });
    expect(codec.decode(Buffer.from('/cpn/v1/election/jobs'), Buffer.from('host:42'))).toEqual({
      ok: true,
      kind: 'election',
      id: 'jobs',
      value: 'host:42',
    });
    expect(codec.decode(Buffer.from('/cpn/v1/nodes/a'), undefined)).toMatchObject({
      ok: true,
      value: undefined,
    });
    expect(codec.decode(Buffer.from('/cpn/v1/nodes/a'), Buffer.from('{"x":1}'))).toMatchObject({
      value: { x: 1 },
    });
  });

  it('prefixEnd bounds exactly the keys with the prefix', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 6 }),
        fc.uint8Array({ maxLength: 4 }),
        (prefix, tail) => {
          const start = Buffer.from(prefix);
          const end = prefixEnd(start);
          const key = Buffer.concat([start, Buffer.from(tail)]);
          const allFF = start.every((byte) => byte === 0xff);
          if (!allFF) expect(Buffer.compare(key, end)).toBeLessThan(0);
          expect(Buffer.compare(key, start)).toBeGreaterThanOrEqual(0);
        },
      ),
    );
    expect(prefixEnd(Buffer.from('a/'))).toEqual(Buffer.from('a0'));
  });
});

describe('shouldFlush', () => {
  const at = (statusAtMs: number, s: NodeStatus) => ({ status: s, statusAtMs });

  it('always flushes the first status, never twice within the flush interval', () => {
    expect(shouldFlush(spec('a'), undefined, at(0, status(0)), 2000)).toBe(true);
    expect(shouldFlush(spec('a'), at(0, status(0)), at(1999, status(0, { healthy: false })), 2000)).toBe(
      false,
    );
  });

  it('after the interval flushes only a material change', () => {
    const last = at(0, status(4));
    expect(shouldFlush(spec('a'), last, at(5000, status(4)), 2000)).toBe(false);
    expect(shouldFlush(spec('a'), last, at(5000, status(5)), 2000)).toBe(false); // 1 < 20/10
    expect(shouldFlush(spec('a'), last, at(5000, status(6)), 2000)).toBe(true);
    expect(shouldFlush(spec('a'), last, at(5000, status(4, { healthy: false })), 2000)).toBe(true);
    expect(shouldFlush(spec('a'), last, at(5000, status(4, { gpuUtilization: 0.61 })), 2000)).toBe(true);
    expect(shouldFlush(spec('a'), last, at(5000, status(4, { kvCacheUtilization: 0.35 })), 2000)).toBe(true);
    expect(shouldFlush(spec('a'), last, at(5000, status(4, { load: [] })), 2000)).toBe(true);
    expect(
      shouldFlush(
        spec('a'),
        last,
        at(5000, status(4, { load: [{ model: 'x', active: 4, queued: 0 }] })),
        2000,
      ),
    ).toBe(true);
  });
});

describe('UnrenewedLeases', () => {
  const doc = { spec: spec('a'), ttlS: 10, permanent: false, registeredAtMs: 0, leaseId: '7' };

  it('keeps a node that reported within its TTL, forgets one silent for longer', () => {
    const leases = new UnrenewedLeases();
    leases.note(doc, { status: status(1), statusAtMs: 1000 });
    expect(leases.live('a', 11_000)?.load.statusAtMs).toBe(1000);
    expect(leases.live('a', 11_001)).toBeUndefined();
    expect(leases.size).toBe(0);
  });

  it('one entry per node, holding the latest report; settled forgets it', () => {
    const leases = new UnrenewedLeases();
    leases.note(doc, { status: status(1), statusAtMs: 1000 });
    leases.note(doc, { status: status(2), statusAtMs: 2000 });
    expect(leases.nodeIds()).toEqual(['a']);
    expect(leases.live('a', 2000)?.load.status.load[0]?.active).toBe(2);
    leases.settled('a');
    expect(leases.live('a', 2000)).toBeUndefined();
  });
});

describe('etcd error classes', () => {
  it('a refusal is never an outage, nor a host failure for the circuit breaker', () => {
    const nospace = new GRPCResourceExhastedError('etcdserver: mvcc: database space exceeded (NOSPACE)');
    const tooLarge = new Error('etcdserver: request is too large');
    for (const error of [nospace, tooLarge]) {
      expect(isRefused(error)).toBe(true);
      expect(isUnreachable(error)).toBe(false);
      expect(isHostFailure(error)).toBe(false);
    }
  });

  it('transport failures are outages', () => {
    const errors = [
      new GRPCUnavailableError('14 UNAVAILABLE: No connection established'),
      new BrokenCircuitError(),
      new KeepaliveTimeout('keepalive timed out'),
      new Error('UNAVAILABLE: Channel closed before call started'),
    ];
    for (const error of errors) expect(isUnreachable(error)).toBe(true);
    expect(isHostFailure(errors[0] as Error)).toBe(true);
    expect(isUnreachable(new Error('lease not found'))).toBe(false);
  });
});

describe('EtcdMirror', () => {
  const codec = new KeyCodec('/p/');
  const make = () => {
    const index = new RegistryIndex();
    const gone: string[] = [];
    const mirror = new EtcdMirror({
      index,
      codec,
      ledgers: { apply: () => undefined } as unknown as EtcdLedgers,
      logger: silentLogger,
      onNodeGone: (nodeId) => gone.push(nodeId),
      sessions: { apply: () => undefined, retain: () => undefined },
    });
    return { index, mirror, gone };
  };
  const nodeDoc = (id: string, endpoint: string) => ({
    spec: { ...fixtureSpec({ id }), endpoint },
    ttlS: 10,
    permanent: false,
    registeredAtMs: 0,
    leaseId: '1',
  });
  const kv = (key: string, value: unknown, revision: number) =>
    ({
      key: Buffer.from(key),
      value: Buffer.from(value === undefined ? '' : JSON.stringify(value)),
      mod_revision: String(revision),
    }) as never;

  it('a late event never undoes a newer write; a deletion forgets the node everywhere', () => {
    const { index, mirror, gone } = make();
    mirror.apply('nodes', 'a', nodeDoc('a', 'http://new:1'), 10);
    mirror.applyKeyValue(kv('/p/nodes/a', nodeDoc('a', 'http://old:1'), 9), false);
    expect(index.get('a')?.spec.endpoint).toBe('http://new:1');
    mirror.applyKeyValue(kv('/p/nodes/a', undefined, 11), true);
    expect(index.get('a')).toBeUndefined();
    expect(gone).toEqual(['a']);
    expect(mirror.seenRevision).toBe(11);
  });

  it('a relist replaces the documents but keeps a status newer than the listed one', () => {
    const { index, mirror } = make();
    mirror.apply('nodes', 'a', nodeDoc('a', 'http://a:1'), 1);
    const local = {
      status: { nodeId: 'a', load: [], gpuUtilization: 0.9, kvCacheUtilization: 0, healthy: true },
      statusAtMs: 500,
    };
    mirror.loadDocs.set('a', local);
    mirror.relisted(
      [
        kv('/p/nodes/a', nodeDoc('a', 'http://a:2'), 5),
        kv('/p/load/a', { ...local, statusAtMs: 100, status: { ...local.status, gpuUtilization: 0.1 } }, 5),
        kv('/p/nodes/b', nodeDoc('b', 'http://b:1'), 6),
      ],
      6,
    );
    expect(index.get('a')?.spec.endpoint).toBe('http://a:2');
    expect(index.get('a')?.status?.gpuUtilization).toBe(0.9);
    expect(index.get('b')).toBeDefined();
  });

  it('a relist keeps the routing index of unchanged nodes (its trees) and drops unlisted nodes', () => {
    const { index, mirror } = make();
    const ids = Array.from({ length: 40 }, (_, i) => `n${i}`);
    ids.forEach((id, i) => {
      mirror.apply('nodes', id, nodeDoc(id, `http://${id}:1`), i + 1);
    });
    const candidates = index.view.candidates('m');
    candidates?.warm({ multiplier: LIST_PRICE, nowMs: 0 });
    const builds = candidates?.builds ?? 0;
    expect(builds).toBeGreaterThan(0);
    // The same documents, less one node, listed afresh (the periodic relist).
    mirror.relisted(
      ids.slice(1).map((id, i) => kv(`/p/nodes/${id}`, nodeDoc(id, `http://${id}:1`), i + 2)),
      100,
    );
    expect(index.view.candidates('m')).toBe(candidates);
    expect(index.get('n0')).toBeUndefined();
    expect(candidates?.byId.has('n0')).toBe(false);
    expect(index.get('n1')).toBeDefined();
    candidates?.warm({ multiplier: LIST_PRICE, nowMs: 0 });
    expect(candidates?.builds).toBe(builds);
  });
});
