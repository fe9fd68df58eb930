import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MinHeap } from '../../src/core/routing/heap.js';

describe('MinHeap', () => {
  it('pops in (key, tie) order whatever the pushes and pops in between (property)', () => {
    const op = fc.oneof(
      fc.record({
        push: fc.constant(true),
        key: fc.integer({ min: 0, max: 4 }),
        tie: fc.integer({ min: 0, max: 4 }),
      }),
      fc.record({ push: fc.constant(false) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const heap = new MinHeap<number>();
        const model: { key: number; tie: number; id: number }[] = [];
        ops.forEach((step, id) => {
          if ('key' in step) {
            heap.push(step.key, id, step.tie);
            model.push({ key: step.key, tie: step.tie, id });
            return;
          }
          const popped = heap.pop();
          if (model.length === 0) {
            expect(popped).toBeUndefined();
            return;
          }
          model.sort((a, b) => a.key - b.key || a.tie - b.tie);
          const best = model[0] as { key: number; tie: number };
          const index = model.findIndex((m) => m.id === popped);
          expect(index).toBeGreaterThanOrEqual(0);
          expect([model[index]?.key, model[index]?.tie]).toEqual([best.key, best.tie]);
          model.splice(index, 1);
        });
        expect(heap.size).toBe(model.length);
        expect(heap.peekKey()).toBe(
          model.length === 0 ? Number.POSITIVE_INFINITY : Math.min(...model.map((m) => m.key)),
        );
        // The tie of the smallest (key, tie): what a search compares with its worst ranked node.
        model.sort((a, b) => a.key - b.key || a.tie - b.tie);
        expect(heap.peekTie()).toBe(model.length === 0 ? Number.POSITIVE_INFINITY : model[0]?.tie);
      }),
      { numRuns: 300 },
    );
  });
});
