// The simulator's engines work out a run of decode steps at once, in closed form where the measured
// curves allow (the step time is linear in the step number between grid points): every step must
// end where one decode step at a time would, up to rounding.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeBucket, profileFromCurves, steppedDecodeTimes } from '../../src/ops/gpu-profile.js';

const ascending = (min: number, max: number, maxLength: number) =>
  fc
    .uniqueArray(fc.integer({ min, max }), { minLength: 1, maxLength })
    .map((xs) => [...xs].sort((a, b) => a - b));

/** Step times per (batch row, context column): any, or growing in both as measured ones do. */
const curvesArb = fc
  .tuple(ascending(1, 300, 6), fc.oneof(ascending(1, 20_000, 6), ascending(1, 1_500, 8)), fc.boolean())
  .chain(([batches, contexts, measuredLike]) =>
    fc
      .array(
        fc.array(fc.double({ min: 0.001, max: 200, noNaN: true }), {
          minLength: contexts.length,
          maxLength: contexts.length,
        }),
        { minLength: batches.length, maxLength: batches.length },
      )
      .map((rows) => ({
        batches,
        contexts,
        ms: measuredLike
          ? rows.map((row, b) => row.map((_, c) => 5 + b * 2 + c * 3 + (row[c] as number) / 100))
          : rows,
      })),
  );

function stepByStep(
  profile: ReturnType<typeof profileFromCurves>,
  batch: number,
  context: number,
  steps: number,
  startMs: number,
) {
  const ends: number[] = [];
  let t = startMs;
  for (let i = 0; i < steps; i += 1) {
    t += profile.decodeStepMs(batch, context + i * batch);
    ends.push(t);
  }
  return ends;
}

describe('decode runs', () => {
  it('end each step where one decode step at a time would, in closed form or not', () => {
    let closed = 0;
    const runs = 400;
    fc.assert(
      fc.property(
        curvesArb,
        fc.integer({ min: 1, max: 300 }),
        // The context a row at the start: anywhere, near the grid (where runs cross its points), or
        // on a grid point; plus a share of a row, as the simulator's contexts (each sequence's plus
        // one) fall between whole rows.
        fc.oneof(
          fc.integer({ min: 0, max: 50_000 }),
          fc.integer({ min: 1, max: 1_500 }),
          fc.nat().map((pick) => -1 - pick),
        ),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.integer({ min: 1, max: 600 }),
        fc.double({ min: 0, max: 1e7, noNaN: true }),
        (decode, batch, drawnRow, share, steps, startMs) => {
          const padded = decodeBucket(batch);
          // A negative draw picks a grid point.
          const perRow =
            drawnRow >= 0 ? drawnRow : (decode.contexts[(-1 - drawnRow) % decode.contexts.length] as number);
          const context = perRow * padded + Math.floor(share * padded);
          const profile = profileFromCurves({
            name: 'drawn',
            prefill: { tokens: [1, 2], ms: [1, 2] },
            decode,
            maxBatch: 64,
            prefillBudget: 4096,
          });
          const inClosedForm = profile.decodeRun?.(batch, context, steps, startMs);
          if (inClosedForm !== undefined) closed += 1;
          const times = inClosedForm ?? steppedDecodeTimes(profile, batch, context, steps, startMs);
          const expected = stepByStep(profile, batch, context, steps, startMs);
          for (let k = 0; k < steps; k += 1) {
            const want = expected[k] as number;
            const tolerance = 1e-9 * Math.max(1, Math.abs(want));
            if (Math.abs(times.endOf(k) - want) > tolerance)
              throw new Error(`step ${k}: ${times.endOf(k)} against ${want} one step at a time`);
          }
        },
      ),
      { numRuns: runs },
    );
    // Most drawn runs take the closed form, so that it is what this checks.
    expect(closed).toBeGreaterThan(runs / 4);
  });
});
