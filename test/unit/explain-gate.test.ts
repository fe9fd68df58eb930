import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { ExplainGate } from '../../src/server/services.js';

describe('ExplainGate', () => {
  it('runs one at a time, queues up to its limit and refuses the rest naming the limit', async () => {
    const gate = new ExplainGate(1);
    const order: string[] = [];
    const calls = ['a', 'b', 'c', 'd'].map((name) =>
      gate.run(() => {
        order.push(name);
        return name;
      }),
    );
    const settled = await Promise.allSettled(calls);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected']);
    expect(order).toEqual(['a', 'b']);
    const refusal = settled[2] as PromiseRejectedResult;
    expect(refusal.reason).toMatchObject({ code: status.RESOURCE_EXHAUSTED });
    expect(String(refusal.reason.message)).toContain('explain is limited to 2 requests at once');
    // Once drained, it takes work again.
    expect(await gate.run(() => 'e')).toBe('e');
  });

  it('never runs explained work within the call: what was already waiting goes first', async () => {
    const gate = new ExplainGate(4);
    const order: string[] = [];
    setImmediate(() => order.push('waiting plain route'));
    const explained = gate.run(() => order.push('explain'));
    order.push('caller continues');
    await explained;
    expect(order).toEqual(['caller continues', 'waiting plain route', 'explain']);
  });

  it('frees its slot when the work throws', async () => {
    const gate = new ExplainGate(0);
    await expect(
      gate.run(() => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await gate.run(() => 1)).toBe(1);
  });
});
