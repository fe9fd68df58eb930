// The quota ledger under random holds, settlements (some repeated, some late) and expiries: under
// REJECT the used points never exceed the quota, a reservation is settled at most once, and the
// bill lines add up to the ledger.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  emptyLedger,
  expireLedger,
  freePoints,
  holdPoints,
  type Ledger,
  MAX_EXPIRED_HOLDS,
  moneyFor,
  outstandingPoints,
  pointsFor,
  settlePoints,
} from '../../src/core/quota.js';

const PRICES = { inputPerMtok: 20_000, outputPerMtok: 80_000, cachedInputPerMtok: 2_000 };
/** One point per input token: a usage of n input tokens is n points. */
const PER_TOKEN = { inputPer1k: 1000, outputPer1k: 1000, cachedInputPer1k: 0 };

type Op =
  | { kind: 'hold'; points: number }
  | { kind: 'settle'; pick: number; fraction: number }
  | { kind: 'pass'; ms: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('hold' as const), points: fc.integer({ min: 0, max: 400 }) }),
  fc.record({
    kind: fc.constant('settle' as const),
    pick: fc.nat(),
    fraction: fc.double({ min: 0, max: 1.5, noNaN: true }),
  }),
  fc.record({ kind: fc.constant('pass' as const), ms: fc.integer({ min: 0, max: 8_000 }) }),
);

function sumLines(
  ledger: Ledger,
  field: 'points' | 'overQuotaPoints' | 'unbilledPoints' | 'requests',
): number {
  return Object.values(ledger.lines).reduce((total, line) => total + line[field], 0);
}

describe('quota ledger', () => {
  for (const policy of ['REJECT', 'THROTTLE', 'PAY_AS_YOU_GO'] as const) {
    it(`${policy}: used points stay within the quota, each reservation settles once, lines add up`, () => {
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 600 }), fc.array(op, { maxLength: 80 }), (quota, ops) => {
          let ledger = emptyLedger('t', 'p', quota);
          let now = 0;
          let next = 0;
          const issued: { id: string; points: number }[] = [];
          const settled = new Set<string>();
          let expectedUsed = 0;
          for (const step of ops) {
            if (step.kind === 'pass') {
              now += step.ms;
              ledger = expireLedger(ledger, now, 30_000);
            } else if (step.kind === 'hold') {
              const id = `r${next++}`;
              const outcome = holdPoints(
                ledger,
                id,
                { points: step.points, model: 'm', level: 'EDGE', prices: PRICES, expiresAtMs: now + 10_000 },
                policy !== 'REJECT',
              );
              if (outcome.kind === 'held') {
                ledger = outcome.ledger;
                issued.push({ id, points: step.points });
              } else {
                expect(policy).toBe('REJECT');
                expect(step.points).toBeGreaterThan(freePoints(ledger));
              }
            } else if (issued.length > 0) {
              const { id, points } = issued[step.pick % issued.length] as { id: string; points: number };
              const actual = Math.floor(points * step.fraction);
              const before = ledger;
              const outcome = settlePoints(
                ledger,
                id,
                { inputTokens: actual, cachedInputTokens: 0, outputTokens: 0 },
                PER_TOKEN,
                policy,
              );
              if (outcome.kind === 'settled') {
                expect(settled.has(id), `${id} settled twice`).toBe(false);
                settled.add(id);
                expect(outcome.points).toBe(actual);
                // Whatever is not counted against the quota is on the record, never lost.
                const line = outcome.ledger.lines['m|EDGE'];
                const lineBefore = before.lines['m|EDGE'];
                const recorded = (l: typeof line) =>
                  (l?.points ?? 0) + (l?.overQuotaPoints ?? 0) + (l?.unbilledPoints ?? 0);
                expect(recorded(line) - recorded(lineBefore)).toBe(actual);
                ledger = outcome.ledger;
                expectedUsed += ledger.usedPoints - before.usedPoints;
              } else {
                expect(ledger).toBe(before);
              }
            }
            if (policy === 'REJECT') {
              expect(ledger.usedPoints).toBeLessThanOrEqual(quota);
              expect(ledger.usedPoints + outstandingPoints(ledger)).toBeLessThanOrEqual(quota);
            }
            expect(ledger.usedPoints).toBe(expectedUsed);
            expect(sumLines(ledger, 'points')).toBe(ledger.usedPoints);
            expect(sumLines(ledger, 'requests')).toBe(settled.size);
          }
        }),
        { numRuns: 300 },
      );
    });
  }

  it('REJECT: a late Release counts only what still fits; the rest is unbilled', () => {
    let ledger = emptyLedger('t', 'p', 400);
    const hold = (id: string, expiresAtMs: number) => {
      const outcome = holdPoints(
        ledger,
        id,
        { points: 300, model: 'm', level: 'EDGE', prices: PRICES, expiresAtMs },
        false,
      );
      if (outcome.kind !== 'held') throw new Error(`${id} not held`);
      ledger = outcome.ledger;
    };
    hold('a', 10_000);
    ledger = expireLedger(ledger, 15_000, 30_000);
    // a's points came back: b may take them.
    hold('b', 25_000);
    const late = settlePoints(
      ledger,
      'a',
      { inputTokens: 300, cachedInputTokens: 0, outputTokens: 0 },
      PER_TOKEN,
      'REJECT',
    );
    if (late.kind !== 'settled') throw new Error('a not settled');
    expect(late.late).toBe(true);
    expect(late.ledger.usedPoints).toBe(100);
    expect(late.ledger.usedPoints + outstandingPoints(late.ledger)).toBe(400);
    expect(late.ledger.lines['m|EDGE']?.unbilledPoints).toBe(200);
    // Past the grace, a Release finds nothing.
    expect(
      settlePoints(
        expireLedger(late.ledger, 60_000, 30_000),
        'b',
        { inputTokens: 1, cachedInputTokens: 0, outputTokens: 0 },
        PER_TOKEN,
        'REJECT',
      ).kind,
    ).toBe('unknown');
  });

  it('keeps at most about MAX_EXPIRED_HOLDS expired holds, the newest', () => {
    let ledger = emptyLedger('t', 'p', 1e9);
    for (let second = 0; second < 3; second += 1) {
      for (let i = 0; i < 600; i += 1) {
        const outcome = holdPoints(
          ledger,
          `r${second}-${i}`,
          { points: 1, model: 'm', level: 'EDGE', prices: PRICES, expiresAtMs: second * 1000 + 500 },
          false,
        );
        if (outcome.kind !== 'held') throw new Error('not held');
        ledger = outcome.ledger;
      }
    }
    ledger = expireLedger(ledger, 10_000, 600_000);
    expect(ledger.heldCount).toBe(0);
    const kept = Object.values(ledger.expired).flatMap((groups) =>
      Object.values(groups).flatMap(Object.keys),
    );
    // Whole seconds are dropped, oldest first: the two newest seconds stay.
    expect(kept.length).toBe(1200);
    expect(kept.some((id) => id.startsWith('r0-'))).toBe(false);
    expect(MAX_EXPIRED_HOLDS).toBeLessThan(1200);
    expect(
      settlePoints(
        ledger,
        'r2-5',
        { inputTokens: 1, cachedInputTokens: 0, outputTokens: 0 },
        PER_TOKEN,
        'REJECT',
      ).kind,
    ).toBe('settled');
    expect(
      settlePoints(
        ledger,
        'r0-5',
        { inputTokens: 1, cachedInputTokens: 0, outputTokens: 0 },
        PER_TOKEN,
        'REJECT',
      ).kind,
    ).toBe('unknown');
  });

  it('points and money round up, in integers', () => {
    expect(
      pointsFor(
        { inputPer1k: 3, outputPer1k: 10, cachedInputPer1k: 1 },
        { inputTokens: 1001, cachedInputTokens: 1, outputTokens: 1 },
      ),
    ).toBe(Math.ceil((1000 * 3 + 1 * 1 + 1 * 10) / 1000));
    // 1 output token at 8 currency units per Mtok = 80,000 units / 1e6 → rounds up to 1 unit.
    expect(moneyFor({ inputTokens: 0, cachedInputTokens: 0, outputTokens: 1 }, PRICES)).toBe(1);
    expect(moneyFor({ inputTokens: 1_000_000, cachedInputTokens: 0, outputTokens: 1_000_000 }, PRICES)).toBe(
      100_000,
    );
  });
});
