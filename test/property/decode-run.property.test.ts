// A decode run (the simulator's engines work out many decode steps at once) must give exactly the
// times of one decode step at a time — to the bit, so that a run cut short, or not, ends the same.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeRunByStep, type GpuProfile, profileFromCurves } from '../../src/ops/gpu-profile.js';

const ascending = (min: number, max: number, maxLength: number) =>
  fc
    .uniqueArray(fc.integer({ min, max }), { minLength: 1, maxLength })
    .map((xs) => [...xs].sort((a, b) => a - b));

const curvesArb = fc.tuple(ascending(1, 300, 6), ascending(1, 20_000, 6)).chain(([batches, contexts]) =>
  fc.record({
    batches: fc.constant(batches),
    contexts: fc.constant(contexts),
    ms: fc.array(
      fc.array(fc.double({ min: 0.001, max: 200, noNaN: true }), {
        minLength: contexts.length,
        maxLength: contexts.length,
      }),
      { minLength: batches.length, maxLength: batches.length },
    ),
  }),
);

function stepByStep(profile: GpuProfile, batch: number, context: number, steps: number, startMs: number) {
  const ends: number[] = [];
  let t = startMs;
  for (let i = 0; i < steps; i += 1) {
    t += profile.decodeStepMs(batch, context + i * batch);
    ends.push(t);
  }
  return ends;
}

describe('decode runs', () => {
  it('end each step exactly where one decode step at a time would', () => {
    fc.assert(
      fc.property(
        curvesArb,
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 0, max: 50_000 }),
        fc.integer({ min: 1, max: 40 }),
        fc.double({ min: 0, max: 1e7, noNaN: true }),
        (decode, batch, context, steps, startMs) => {
          const profile = profileFromCurves({
            name: 'drawn',
            prefill: { tokens: [1, 2], ms: [1, 2] },
            decode,
            maxBatch: 64,
            prefillBudget: 4096,
          });
          expect(profile.decodeRunMs).toBeDefined();
          const ends: number[] = [];
          decodeRunByStep(profile, batch, context, steps, startMs, ends);
          expect(ends).toEqual(stepByStep(profile, batch, context, steps, startMs));
        },
      ),
      { numRuns: 300 },
    );
  });
});
