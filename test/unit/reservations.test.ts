import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_MODEL_CHARS, MAX_NODE_ID_CHARS, MAX_TENANT_CHARS } from '../../src/core/model.js';
import {
  MAX_RESERVATION_ID_CHARS,
  parseReservationId,
  ReservationBook,
} from '../../src/core/reservations.js';
import { book as newBook } from '../helpers/fixtures.js';

describe('ReservationBook', () => {
  it('gives unique ids that start with the replica id and carry an unguessable token', () => {
    const tokens = ['00000000000000aa', '00000000000000bb', '00000000000000cc'];
    const book = new ReservationBook({
      ttlMs: 1000,
      replicaId: 'replica-a',
      newToken: () => tokens.shift() ?? '',
    });
    const ids = [0, 1, 2].map(() => book.reserve('n', 'm', 't', 0, 0).id);
    expect(new Set(ids).size).toBe(3);
    for (const id of ids) expect(id.startsWith('replica-a.')).toBe(true);
    // Reserved at wall time 0: issued "0".
    expect(ids[0]).toBe('replica-a.1.0.00000000000000aa~n~m~t');
  });

  it('writes the id when first read; a token that cannot be one gives the slot back; JSON carries the id', () => {
    let made = 0;
    const book = new ReservationBook({
      ttlMs: 1000,
      replicaId: 'r',
      newToken: () => (made++ === 0 ? '00000000000000aa' : 'NOT-HEX'),
    });
    const good = book.reserve('n', 'm', 't', 0, 0);
    expect(made).toBe(0);
    expect(good.id).toBe('r.1.0.00000000000000aa~n~m~t');
    expect(good.id).toBe('r.1.0.00000000000000aa~n~m~t');
    expect(made).toBe(1);
    expect(JSON.parse(JSON.stringify(good))).toEqual({
      id: good.id,
      nodeId: 'n',
      model: 'm',
      tenant: 't',
      createdAtMs: 0,
      expiresAtMs: 1000,
    });
    const bad = book.reserve('n', 'm', 't', 0, 0);
    expect(book.pending('n', 'm', undefined)).toBe(2);
    expect(() => bad.id).toThrow(/16 lowercase hex/);
    expect(book.size).toBe(1);
    expect(book.pending('n', 'm', undefined)).toBe(1);
  });

  it('release is idempotent: releasing twice frees one slot', () => {
    const book = newBook(1000);
    const first = book.reserve('n', 'm', 't', 0, 0);
    book.reserve('n', 'm', 't', 0, 0);
    expect(book.pending('n', 'm', undefined)).toBe(2);
    expect(book.release(first.id)?.nodeId).toBe('n');
    expect(book.release(first.id)).toBeUndefined();
    expect(book.pending('n', 'm', undefined)).toBe(1);
    expect(book.release('never-issued')).toBeUndefined();
  });

  it('finds a held id only by its exact text: same sequence with another token, replica or tail is not it', () => {
    const book = new ReservationBook({ ttlMs: 1000, replicaId: 'ab', newToken: () => '00000000000000aa' });
    const held = book.reserve('n', 'm', 't', 0, 0);
    expect(held.id).toBe('ab.1.0.00000000000000aa~n~m~t');
    for (const other of [
      'ab.1.0.00000000000000ab~n~m~t',
      'a.1.0.00000000000000aa~n~m~t',
      'abc.1.0.00000000000000aa~n~m~t',
      'ab.01.0.00000000000000aa~n~m~t',
      'ab.1.0.00000000000000aa~n~m~u',
      'ab.1',
      'ab.',
      'ab',
    ]) {
      expect(book.held(other), other).toBeUndefined();
      expect(book.release(other), other).toBeUndefined();
    }
    // A copy of the text (as a Release from the wire carries it) finds it.
    expect(book.held([...held.id].join(''))).toBe(held);
    // Freed through the entry held() returned: once, as release frees it once.
    expect(book.free(held)).toBe(held);
    expect(book.free(held)).toBeUndefined();
    expect(book.release(held.id)).toBeUndefined();
    expect(book.pending('n', 'm', undefined)).toBe(0);
  });

  it('expires reservations at their TTL on the monotonic clock, and an expired one cannot be released', () => {
    const book = newBook(1000);
    const early = book.reserve('n', 'm', 't', 0, 0);
    book.reserve('n', 'm', 't', 500, 500);
    expect(book.expire(999)).toHaveLength(0);
    expect(book.expire(1000).map((r) => r.id)).toEqual([early.id]);
    expect(book.pending('n', 'm', undefined)).toBe(1);
    expect(book.release(early.id)).toBeUndefined();
    expect(book.size).toBe(1);
  });

  it('expiry ignores the wall clock: reserved after the wall clock stepped back, still expired on time', () => {
    const book = newBook(1000);
    const before = book.reserve('n', 'm', 't', 1_000_000, 10);
    // The wall clock steps back an hour; the monotonic clock keeps going.
    const after = book.reserve('n', 'm', 't', 1_000_000 - 3_600_000, 20);
    expect(book.expire(1010).map((r) => r.id)).toEqual([before.id]);
    expect(book.expire(1020).map((r) => r.id)).toEqual([after.id]);
    expect(book.size).toBe(0);
  });

  it('a status report covers the reservations made before it, but they stay releasable', () => {
    const book = newBook(10_000);
    const old = book.reserve('n', 'm', 't', 0, 0);
    book.reserve('n', 'm', 't', 100, 100);
    book.reserve('n', 'other', 't', 0, 0);
    expect(book.pending('n', 'm', 50)).toBe(1);
    expect(book.pending('n', 'other', 50)).toBe(0);
    expect(book.release(old.id)?.id).toBe(old.id);
    expect(book.pending('n', 'm', 50)).toBe(1);
    expect(book.pendingByModel('n', 50, ['m', 'other'])).toEqual(new Map([['m', 1]]));
  });

  it('ids name the replica, node, model and tenant, so another replica can account for them', () => {
    const book = newBook(1000, 'r7');
    const reservation = book.reserve('edge-gd.1', 'org/model:v2', 'acme-2', 0, 0);
    expect(parseReservationId(reservation.id)).toEqual({
      id: reservation.id,
      replica: 'r7',
      nodeId: 'edge-gd.1',
      model: 'org/model:v2',
      tenant: 'acme-2',
      token: reservation.id.split('.')[3]?.split('~')[0],
      issuedAtMs: 0,
      // What the token signs: the id without it.
      signed: 'r7.1.0~edge-gd.1~org/model:v2~acme-2',
    });
    const untenanted = book.reserve('n', 'm', '', 0, 0);
    expect(parseReservationId(untenanted.id)?.tenant).toBe('');
    for (const bad of [
      'garbage',
      'r7.1.0.0~n~m~t',
      'r7.1.0.000000000000000g~n~m~t',
      'r7.1.0.0000000000000000~N~m~t',
      'r7.1.0.0000000000000000~n~m',
      'r7.1.0.0000000000000000~n~m~Acme',
      'r7.1.0.0000000000000000~n~m~t~x',
      'r7.1.0000000000000000~n~m~t',
      'r7.1.123456789.0000000000000000~n~m~t',
      'a~b~c~d',
    ])
      expect(parseReservationId(bad)).toBeUndefined();
  });

  it('the longest node id, model name and tenant give an id within the limit that parses back', () => {
    const longestReplica = 'r'.repeat(24);
    const book = new ReservationBook({
      ttlMs: 1000,
      replicaId: longestReplica,
      newToken: () => 'f'.repeat(16),
    });
    const nodeId = `n${'9'.repeat(MAX_NODE_ID_CHARS - 1)}`;
    const model = `M${'x'.repeat(MAX_MODEL_CHARS - 1)}`;
    const tenant = `t${'0'.repeat(MAX_TENANT_CHARS - 1)}`;
    const { id } = book.reserve(nodeId, model, tenant, 0, 0);
    expect(id.length).toBeLessThanOrEqual(MAX_RESERVATION_ID_CHARS);
    expect(parseReservationId(id)).toMatchObject({ nodeId, model, tenant, replica: longestReplica });
  });

  it('rejects a non-positive TTL and a malformed replica id', () => {
    expect(() => newBook(0)).toThrow(/TTL must be > 0/);
    expect(() => newBook(1000, 'Bad_Replica')).toThrow(/replica id must match/);
  });
});

describe('ReservationBook memory', () => {
  it('stays bounded by what is held, however many were reserved and released under a long TTL', () => {
    const book = newBook(1e12);
    for (let i = 0; i < 20_000; i += 1) {
      const { id } = book.reserve(`n${i % 50}`, 'm', 't', i, i);
      book.release(id);
    }
    expect(book.size).toBe(0);
    expect(book.tracked()).toBeLessThan(2100);
    // Live reservations survive compaction and still expire in order.
    const kept = book.reserve('n', 'm', 't', 0, 30_000);
    for (let i = 0; i < 5_000; i += 1) book.release(book.reserve('x', 'm', 't', 0, 30_000).id);
    expect(book.pending('n', 'm', undefined)).toBe(1);
    expect(book.expire(30_000 + 1e12).map((r) => r.id)).toEqual([kept.id]);
  });

  it("keeps an offer's count exact and its list short behind a reservation held for long", () => {
    const book = newBook(1e12);
    const held = book.reserve('n', 'm', 't', 0, 0);
    for (let i = 1; i <= 5_000; i += 1) {
      book.release(book.reserve('n', 'm', 't', i, i).id);
      if (i % 1000 === 0) expect(book.pending('n', 'm', undefined)).toBe(1);
    }
    expect(book.queued('n', 'm')).toBeLessThan(40);
    // A status report newer than every reservation covers the held one; one made after it counts.
    const later = book.reserve('n', 'm', 't', 6_000, 6_000);
    expect(book.pending('n', 'm', 5_500)).toBe(1);
    book.release(later.id);
    expect(book.pending('n', 'm', 5_500)).toBe(0);
    expect(book.release(held.id)?.id).toBe(held.id);
  });
});

describe('ReservationBook pending counts (property)', () => {
  it('equal, per offer, the live reservations made at or after the newest status report', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('reserve' as const), node: fc.nat(2) }),
      fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('report' as const), node: fc.nat(2), back: fc.nat(5) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const book = newBook(1e12);
        const live: { id: string; node: string; atMs: number }[] = [];
        const reportAt = new Map<string, number>();
        let now = 0;
        for (const o of ops) {
          now += 1;
          if (o.kind === 'reserve') {
            const node = `n${o.node}`;
            live.push({ id: book.reserve(node, 'm', 't', now, now).id, node, atMs: now });
          } else if (o.kind === 'release') {
            if (live.length === 0) continue;
            const [gone] = live.splice(o.pick % live.length, 1);
            book.release((gone as (typeof live)[number]).id);
          } else {
            const node = `n${o.node}`;
            // Reports only move forward.
            const at = Math.max(reportAt.get(node) ?? 0, now - o.back);
            reportAt.set(node, at);
            const want = live.filter((r) => r.node === node && r.atMs >= at).length;
            expect(book.pending(node, 'm', at)).toBe(want);
          }
        }
        for (const node of ['n0', 'n1', 'n2']) {
          const at = reportAt.get(node);
          const want = live.filter((r) => r.node === node && (at === undefined || r.atMs >= at)).length;
          expect(book.pending(node, 'm', at)).toBe(want);
          expect(book.queued(node, 'm')).toBeLessThanOrEqual(2 * want + 33);
        }
      }),
      { numRuns: 300 },
    );
  });
});
