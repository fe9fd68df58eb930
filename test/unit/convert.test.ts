import { describe, expect, it } from 'vitest';
import { VERDICT_ORDER } from '../../src/core/routing/index.js';
import { Verdict } from '../../src/gen/cpn/v1/scheduler.js';
import { verdictToProto } from '../../src/server/convert.js';

describe('verdictToProto', () => {
  it('gives every verdict its own wire value, named like it', () => {
    const wire = VERDICT_ORDER.map(verdictToProto);
    expect(new Set(wire).size).toBe(VERDICT_ORDER.length);
    for (const [index, verdict] of VERDICT_ORDER.entries()) {
      expect(Verdict[wire[index] as Verdict]).toBe(`VERDICT_${verdict}`);
    }
  });
});
