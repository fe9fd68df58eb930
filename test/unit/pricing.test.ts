import { describe, expect, it } from 'vitest';
import { duePricing, effectivePolicy, type PriceRule, policyMultiplier } from '../../src/core/pricing.js';
import { spec } from '../helpers/fixtures.js';

const rule = (overrides: Partial<PriceRule>): PriceRule => ({
  level: undefined,
  region: undefined,
  model: undefined,
  factor: 1,
  window: undefined,
  ...overrides,
});
// 2026-11-22 00:00 in China (UTC+8) is 2026-11-21 16:00 UTC.
const chinaMidnight = Date.UTC(2026, 10, 21, 16);
const hour = 3600_000;

describe('time-of-use pricing', () => {
  const policy = {
    utcOffsetHours: 8,
    rules: [
      rule({ level: 'CENTER', factor: 0.5, window: { fromHour: 0, toHour: 8 } }),
      rule({ region: 'CN-GD', model: 'm', factor: 1.2 }),
      rule({ level: 'EDGE', factor: 1.5, window: { fromHour: 22, toHour: 2 } }),
    ],
  };
  const multiplier = policyMultiplier(policy);
  const cases = [
    {
      name: 'off-peak hub',
      node: spec({ id: 'h', level: 'CENTER', region: 'CN-GS' }),
      model: 'm',
      at: chinaMidnight + 3 * hour,
      want: 0.5,
    },
    {
      name: 'peak hub',
      node: spec({ id: 'h', level: 'CENTER', region: 'CN-GS' }),
      model: 'm',
      at: chinaMidnight + 9 * hour,
      want: 1,
    },
    {
      name: 'off-peak hub in Guangdong: rules multiply',
      node: spec({ id: 'h', level: 'CENTER' }),
      model: 'm',
      at: chinaMidnight + 1 * hour,
      want: 0.6,
    },
    {
      name: 'other model in Guangdong',
      node: spec({ id: 'p', level: 'PROVINCE' }),
      model: 'x',
      at: chinaMidnight + 12 * hour,
      want: 1,
    },
    {
      name: 'edge window wraps past midnight (23:00)',
      node: spec({ id: 'e', level: 'EDGE', region: 'CN-SH' }),
      model: 'm',
      at: chinaMidnight + 23 * hour,
      want: 1.5,
    },
    {
      name: 'edge window wraps past midnight (01:30)',
      node: spec({ id: 'e', level: 'EDGE', region: 'CN-SH' }),
      model: 'm',
      at: chinaMidnight + 1.5 * hour,
      want: 1.5,
    },
    {
      name: 'edge outside its window (02:00)',
      node: spec({ id: 'e', level: 'EDGE', region: 'CN-SH' }),
      model: 'm',
      at: chinaMidnight + 2 * hour,
      want: 1,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(multiplier.at(c.node, c.model, c.at)).toBeCloseTo(c.want, 12);
    });
  }

  it('the latest due scheduled change is in force; later ones wait; due ones fold oldest first', () => {
    const base = { utcOffsetHours: 8, rules: [] };
    const half = { utcOffsetHours: 8, rules: [rule({ factor: 0.5 })] };
    const double = { utcOffsetHours: 8, rules: [rule({ factor: 2 })] };
    const state = {
      current: base,
      scheduled: [
        { id: 'b', atMs: 200, policy: double },
        { id: 'a', atMs: 100, policy: half },
      ],
    };
    expect(effectivePolicy(state, 99)).toBe(base);
    expect(effectivePolicy(state, 100)).toBe(half);
    expect(effectivePolicy(state, 250)).toBe(double);
    expect(duePricing(state, 250).map((c) => c.id)).toEqual(['a', 'b']);
    expect(duePricing(state, 150).map((c) => c.id)).toEqual(['a']);
  });
});
