// Reading usage from an engine's stream: events split anywhere across chunks, CRLF or LF, usage
// taken from the last report, and the client given only the usage it asked for.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  EventTooLarge,
  MAX_EVENT_BYTES,
  StreamMeter,
  usageOf,
  usageSoFar,
} from '../../src/gateway/engine-usage.js';

const chunk = (content: string, usage?: object) =>
  `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content } }], ...(usage ? { usage } : {}) })}\n\n`;
const usage = (prompt: number, completion: number, cached = 0) => ({
  prompt_tokens: prompt,
  completion_tokens: completion,
  prompt_tokens_details: { cached_tokens: cached },
});
const stream = [
  chunk('a', usage(10, 1, 3)),
  chunk('b', usage(10, 2, 3)),
  `data: ${JSON.stringify({ choices: [], usage: usage(10, 2, 3) })}\n\n`,
  'data: [DONE]\n\n',
].join('');

describe('StreamMeter', () => {
  it('wherever the stream is cut into chunks, the same events pass and the same usage is read', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 12 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        const meter = new StreamMeter('continuous');
        let out = '';
        let from = 0;
        for (const at of [...points, stream.length]) {
          out += meter.push(Buffer.from(stream.slice(from, at)));
          from = at;
        }
        out += meter.flush();
        expect(out).toBe(stream);
        expect(meter.usage).toEqual({ inputTokens: 10, cachedInputTokens: 3, outputTokens: 2 });
        expect(meter.done).toBe(true);
      }),
    );
  });

  it('without include_usage from the client: the usage-only chunk goes, content chunks lose their usage', () => {
    const meter = new StreamMeter('none');
    const out = meter.push(stream) + meter.flush();
    const events = out.split('\n\n').filter(Boolean);
    expect(events).toHaveLength(3);
    expect(events.some((event) => event.includes('usage'))).toBe(false);
    expect(events.at(-1)).toBe('data: [DONE]');
    expect(meter.usage?.outputTokens).toBe(2);
  });

  it('reads CRLF-separated events and keeps comments and other fields', () => {
    const meter = new StreamMeter('continuous');
    const out = meter.push(
      ': keep-alive\r\n\r\nevent: x\r\ndata: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}\r\n\r\n',
    );
    expect(out).toContain(': keep-alive');
    expect(meter.usage).toEqual({ inputTokens: 4, cachedInputTokens: 0, outputTokens: 1 });
  });

  it('a character split between two chunks arrives whole', () => {
    const meter = new StreamMeter('none');
    const bytes = Buffer.from(chunk('你好世界'));
    const cut = bytes.indexOf(Buffer.from('你')) + 1;
    const out = meter.push(bytes.subarray(0, cut)) + meter.push(bytes.subarray(cut)) + meter.flush();
    expect(out).toContain('你好世界');
  });

  it("with include_usage only, the client gets OpenAI's shape: usage in the final chunk alone", () => {
    const meter = new StreamMeter('final');
    const events = (meter.push(stream) + meter.flush()).split('\n\n').filter(Boolean);
    expect(events).toHaveLength(4);
    expect(events.filter((event) => event.includes('"usage"'))).toEqual([events[2]]);
  });

  it('an event larger than the limit stops the stream', () => {
    const meter = new StreamMeter('continuous');
    expect(() => meter.push(`data: ${'x'.repeat(MAX_EVENT_BYTES + 1)}`)).toThrow(EventTooLarge);
  });

  it('a stream cut before any usage is billed the prompt estimate and a token per content chunk', () => {
    const meter = new StreamMeter('none');
    meter.push(chunk('a') + chunk('b') + chunk('c'));
    expect(usageSoFar(meter, 40)).toEqual({ inputTokens: 40, cachedInputTokens: 0, outputTokens: 3 });
  });
});

describe('usageOf', () => {
  it('takes counts that are non-negative integers, cached at most the prompt', () => {
    expect(
      usageOf({ prompt_tokens: 5, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 9 } }),
    ).toEqual({
      inputTokens: 5,
      cachedInputTokens: 5,
      outputTokens: 2,
    });
    expect(usageOf({ prompt_tokens: -1, completion_tokens: 1.5 })).toEqual({
      inputTokens: 0,
      cachedInputTokens: 0,
      outputTokens: 0,
    });
    expect(usageOf(null)).toBeUndefined();
    expect(usageOf({})).toBeUndefined();
  });
});
