// A status report covers the reservations stamped before it, each by its own stamp, whatever
// order the stamps reach the book in: a wall clock stepped forward once, or a session's hold
// stamped before an await, leaves no reservation counting past a report that has its request.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { book as newBook, offer, request, spec } from '../helpers/fixtures.js';
import { planesOnOneStore, runningReport, sessionInput } from '../helpers/plane.js';

const T = 1_000_000;
const HOUR = 3_600_000;

describe('reservation coverage', () => {
  it('a report covers reservations stamped before it, once a future-stamped one is gone', () => {
    const book = newBook(30_000);
    let held = book.reserve('n', 'm', 't', T, 0);
    // The wall clock an hour ahead for one reservation, then corrected.
    const future = book.reserve('n', 'm', 't', T + HOUR, 1);
    book.release(future.id);
    // Ten minutes of one request at a time, each reported 500 ms after it was made.
    for (let s = 1; s <= 600; s += 1) {
      const next = book.reserve('n', 'm', 't', T + s * 1000, s * 1000);
      book.release(held.id);
      held = next;
      expect(book.pending('n', 'm', T + s * 1000 + 500)).toBe(0);
    }
  });

  it('a plane whose clock stepped forward and back counts a reported request once', async () => {
    const {
      planes: [plane],
      clock,
    } = planesOnOneStore(1, { meterUsage: false });
    if (plane === undefined) throw new Error('one plane');
    clock.now = T;
    await plane.registerNode(spec({ id: 'n', offers: [offer({ maxConcurrency: 2, maxQueue: 0 })] }), {
      ttlS: 0,
      permanent: true,
    });
    clock.now = T + HOUR;
    const future = plane.route(request({ explain: false })).reservation;
    clock.now = T;
    const running = plane.route(request({ explain: false })).reservation;
    if (future === undefined || running === undefined) throw new Error('both routes are placed');
    expect(plane.freeHeld(future)).toBe(true);
    clock.now = T + 1000;
    // The node reports the one request it runs: one slot of two is free.
    await plane.reportStatus(runningReport('n', request().model, 1));
    expect(plane.reservedOn('n')).toEqual(new Map());
    expect(plane.route(request({ explain: false })).decision.kind).toBe('placed');
  });

  it("a session's renewed slot is stamped when it is held, after the store write it awaited", async () => {
    const {
      planes: [plane],
      store,
      clock,
    } = planesOnOneStore(1, { meterUsage: false });
    if (plane === undefined) throw new Error('one plane');
    await plane.registerNode(spec({ id: 'n', offers: [offer({ maxConcurrency: 4 })] }), {
      ttlS: 0,
      permanent: true,
    });
    const opened = await plane.sessions.open(sessionInput());
    if (opened.kind !== 'opened') throw new Error('the session opens');
    // While an update awaits its store write, time passes and the node reports: that report
    // cannot count the slot the update renews after the write.
    const put = store.sessions.put.bind(store.sessions);
    store.sessions.put = async (record, version) => {
      clock.now += 1000;
      await plane.reportStatus(runningReport('n', 'm', 0));
      return put(record, version);
    };
    const updated = await plane.sessions.update({
      tenant: 't',
      id: opened.session.record.id,
      client: sessionInput().client,
      contextTokens: undefined,
      motion: undefined,
    });
    expect(updated.kind).toBe('updated');
    expect(plane.reservedOn('n')).toEqual(new Map([['m', 1]]));
  });

  it('counts the live reservations stamped at or after the report; each that stops counting is told once (property)', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('reserve' as const), skew: fc.constantFrom(0, 0, -3, 2, HOUR) }),
      fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('report' as const), back: fc.nat(4) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const book = newBook(1e12);
        let told = 0;
        book.watchLoad({
          loadDecreased: () => {
            told += 1;
          },
          unwatched: () => {},
        });
        const live: { id: string; atMs: number }[] = [];
        let now = 0;
        let reportAt: number | undefined;
        let counted = 0;
        for (const o of ops) {
          now += 1;
          if (o.kind === 'reserve') {
            const atMs = now + o.skew;
            live.push({ id: book.reserve('n', 'm', 't', atMs, now).id, atMs });
            counted = book.pending('n', 'm', reportAt);
          } else if (o.kind === 'release') {
            if (live.length === 0) continue;
            const [gone] = live.splice(o.pick % live.length, 1);
            book.release((gone as (typeof live)[number]).id);
            const after = book.pending('n', 'm', reportAt);
            // A release lowers the count by one at most, and the watcher hears exactly that.
            expect(counted - after).toBeLessThanOrEqual(1);
            expect(told).toBe(counted - after);
            counted = after;
          } else {
            reportAt = Math.max(reportAt ?? 0, now - o.back);
            counted = book.pending('n', 'm', reportAt);
          }
          told = 0;
          const want = live.filter((r) => reportAt === undefined || r.atMs >= reportAt).length;
          expect(book.pending('n', 'm', reportAt)).toBe(want);
        }
      }),
      { numRuns: 300 },
    );
  });
});
