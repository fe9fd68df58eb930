// Paging through ListNodes never loses, repeats or reorders a node: following the pages of any
// filter, at any page size, while nodes come and go between pages only in ways the client could
// see, yields exactly the filtered listing, and every page reports the same total.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LEVELS } from '../../src/core/model.js';
import { RegistryIndex } from '../../src/store/registry-index.js';
import type { NodeFilter } from '../../src/store/store.js';
import { offer, record } from '../helpers/fixtures.js';

const REGIONS = ['CN-GD', 'CN-SC', 'CN-BJ'];
const nodeArb = fc.record({
  id: fc.stringMatching(/^[a-z0-9][a-z0-9.-]{0,6}$/),
  level: fc.constantFrom(...LEVELS),
  region: fc.constantFrom(...REGIONS),
  models: fc.subarray(['m', 'n', 'o'], { minLength: 1 }),
});
const filterArb: fc.Arbitrary<NodeFilter> = fc.record(
  {
    level: fc.constantFrom(...LEVELS),
    region: fc.constantFrom(...REGIONS),
    model: fc.constantFrom('m', 'n', 'o'),
  },
  { requiredKeys: [] },
);

describe('node pages', () => {
  it('the pages of any filter concatenate to the full filtered listing, in id order', () => {
    fc.assert(
      fc.property(
        fc.array(nodeArb, { maxLength: 60 }),
        filterArb,
        fc.integer({ min: 1, max: 12 }),
        (nodes, filter, limit) => {
          const index = new RegistryIndex();
          for (const node of nodes) {
            index.put(
              record({
                id: node.id,
                level: node.level,
                region: node.region,
                offers: node.models.map((model) => offer({ model })),
              }),
            );
          }
          const expected = index.list(filter).map((n) => n.spec.id);
          const seen: string[] = [];
          let afterId: string | undefined;
          for (let pages = 0; pages <= expected.length + 1; pages += 1) {
            const page = index.page(filter, { afterId, limit });
            expect(page.total).toBe(expected.length);
            expect(page.nodes.length).toBeLessThanOrEqual(limit);
            seen.push(...page.nodes.map((n) => n.spec.id));
            if (!page.more) break;
            afterId = page.nodes[page.nodes.length - 1]?.spec.id;
          }
          expect(seen).toEqual(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a node added behind the cursor is not seen, one ahead of it is, nothing repeats', () => {
    const index = new RegistryIndex();
    for (const id of ['b', 'd', 'f', 'h']) index.put(record({ id }));
    const first = index.page({}, { limit: 2 });
    expect(first.nodes.map((n) => n.spec.id)).toEqual(['b', 'd']);
    index.put(record({ id: 'a' }));
    index.put(record({ id: 'e' }));
    index.remove('f');
    const second = index.page({}, { afterId: 'd', limit: 10 });
    expect(second.nodes.map((n) => n.spec.id)).toEqual(['e', 'h']);
    expect(second.more).toBe(false);
  });
});
