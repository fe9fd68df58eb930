import { describe, expect, it } from 'vitest';
import { parseReservationId, ReservationBook } from '../../src/core/reservations.js';

describe('ReservationBook', () => {
  it('gives unique ids with the book prefix', () => {
    const book = new ReservationBook(1000, 'replica-a-');
    const ids = [0, 1, 2].map(() => book.reserve('n', 'm', 't', 0).id);
    expect(new Set(ids).size).toBe(3);
    for (const id of ids) expect(id.startsWith('replica-a-')).toBe(true);
  });

  it('release is idempotent: releasing twice frees one slot', () => {
    const book = new ReservationBook(1000, 'r-');
    const first = book.reserve('n', 'm', 't', 0);
    book.reserve('n', 'm', 't', 0);
    expect(book.pending('n', 'm', undefined)).toBe(2);
    expect(book.release(first.id)?.nodeId).toBe('n');
    expect(book.release(first.id)).toBeUndefined();
    expect(book.pending('n', 'm', undefined)).toBe(1);
    expect(book.release('never-issued')).toBeUndefined();
  });

  it('expires reservations at their TTL, and an expired one cannot be released', () => {
    const book = new ReservationBook(1000, 'r-');
    const early = book.reserve('n', 'm', 't', 0);
    book.reserve('n', 'm', 't', 500);
    expect(book.expire(999)).toHaveLength(0);
    expect(book.expire(1000).map((r) => r.id)).toEqual([early.id]);
    expect(book.pending('n', 'm', undefined)).toBe(1);
    expect(book.release(early.id)).toBeUndefined();
    expect(book.size).toBe(1);
  });

  it('a status report covers the reservations made before it, but they stay releasable', () => {
    const book = new ReservationBook(10_000, 'r-');
    const old = book.reserve('n', 'm', 't', 0);
    book.reserve('n', 'm', 't', 100);
    book.reserve('n', 'other', 't', 0);
    expect(book.pending('n', 'm', 50)).toBe(1);
    expect(book.pending('n', 'other', 50)).toBe(0);
    expect(book.release(old.id)?.id).toBe(old.id);
    expect(book.pending('n', 'm', 50)).toBe(1);
    expect(book.pendingByModel('n', 50, ['m', 'other'])).toEqual(new Map([['m', 1]]));
  });

  it('ids name the node and model, so another replica can account for them', () => {
    const book = new ReservationBook(1000, 'r7-');
    const reservation = book.reserve('edge-gd.1', 'org/model:v2', 't', 0);
    expect(parseReservationId(reservation.id)).toEqual({ nodeId: 'edge-gd.1', model: 'org/model:v2' });
    expect(parseReservationId('garbage')).toBeUndefined();
  });

  it('rejects a non-positive TTL', () => {
    expect(() => new ReservationBook(0, 'r-')).toThrow(/TTL must be > 0/);
  });
});
