// Offers served by measured engines: their prefill comes from the curve, and the rate the offer
// advertises keeps tokens / rate a lower bound of that curve for any prompt — the candidate index
// prunes with it, so a decision must never skip a node it would have chosen.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { curveRate, prefillMs, prefillMsAt, queueMs } from '../../src/core/cost.js';
import type { ModelOffer } from '../../src/core/model.js';
import { offer } from '../helpers/fixtures.js';

const curveArb = fc
  .array(
    fc.record({
      tokens: fc.integer({ min: 1, max: 20_000 }),
      ms: fc.double({ min: 0.5, max: 500, noNaN: true }),
    }),
    {
      minLength: 2,
      maxLength: 8,
    },
  )
  .map((points) => {
    const byTokens = [...new Map(points.map((p) => [p.tokens, p.ms])).entries()].sort((a, b) => a[0] - b[0]);
    // Non-decreasing in tokens, as measured prefill is.
    let last = 0;
    const ms = byTokens.map(([, m]) => {
      last = Math.max(last, m);
      return last;
    });
    return { tokens: byTokens.map(([t]) => t), ms };
  })
  .filter((c) => c.tokens.length >= 2);

function withCurve(curve: { tokens: number[]; ms: number[] }): ModelOffer {
  return {
    ...offer(),
    prefillTokensPerS: curveRate(curve),
    engine: {
      replicas: 1,
      curves: {
        name: 'test',
        prefill: curve,
        decode: { batches: [1], contexts: [1], ms: [[5]] },
        maxBatch: 64,
        prefillBudget: 4096,
      },
    },
  };
}

describe('engine curves', () => {
  it("tokens / the advertised rate never exceeds the curve's prefill", () => {
    fc.assert(
      fc.property(
        curveArb,
        fc.integer({ min: 1, max: 100_000 }),
        fc.integer({ min: 0, max: 100 }),
        (curve, input, cachedPct) => {
          const o = withCurve(curve);
          const size = {
            inputTokens: input,
            cachedInputTokens: Math.floor((input * cachedPct) / 100),
            maxOutputTokens: 1,
          };
          expect(prefillMsAt(size, o.prefillTokensPerS)).toBeLessThanOrEqual(
            prefillMs(size, o) * (1 + 1e-9) + 1e-9,
          );
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('interpolates between measured points and floors below the shortest', () => {
    const o = withCurve({ tokens: [100, 1100], ms: [10, 30] });
    expect(prefillMs({ inputTokens: 600, cachedInputTokens: 0, maxOutputTokens: 1 }, o)).toBeCloseTo(20, 9);
    expect(prefillMs({ inputTokens: 50, cachedInputTokens: 0, maxOutputTokens: 1 }, o)).toBe(10);
    // Beyond the last point: its segment (50 ms), but never faster than the last point's rate.
    expect(prefillMs({ inputTokens: 2100, cachedInputTokens: 0, maxOutputTokens: 1 }, o)).toBeCloseTo(
      (30 * 2100) / 1100,
      9,
    );
    expect(prefillMs({ inputTokens: 600, cachedInputTokens: 600, maxOutputTokens: 1 }, o)).toBe(0);
  });

  it('the queue behind full engines drains at one request per (prefill + its share of the decode steps)', () => {
    // 2 engines of 4 slots; prefill 10 ms flat here; decode 100 tokens/s per sequence in a full batch.
    const flat = withCurve({ tokens: [1, 10_000], ms: [10, 10] });
    const engine = flat.engine as NonNullable<ModelOffer['engine']>;
    const o: ModelOffer = {
      ...flat,
      maxConcurrency: 8,
      decodeTokensPerS: 100,
      engine: { replicas: 2, curves: { ...engine.curves, maxBatch: 4 } },
    };
    const size = { inputTokens: 500, cachedInputTokens: 0, maxOutputTokens: 40 };
    expect(queueMs(size, o, 7)).toBe(0);
    // 3 ahead; each: 10 ms prefill + 40 tokens × 10 ms / 4 in the batch = 110 ms; 2 engines.
    expect(queueMs(size, o, 10)).toBeCloseTo((3 * (10 + (40 * 10) / 4)) / 2, 9);
  });
});
