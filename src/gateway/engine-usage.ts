// Token usage as OpenAI-compatible engines (vLLM, SGLang, TGI's Messages API) report it, read from
// the data path: the body of a completion, or the server-sent events of a streamed one.
//
// A streamed response is a sequence of events `data: <json>\n\n` ending with `data: [DONE]`. With
// `stream_options.include_usage` the engine sends a last chunk with `"choices": []` and the usage;
// with vLLM's `continuous_usage_stats` every chunk carries the usage so far. The gateway always asks
// for both, remembers the latest usage, and gives the client only what it asked for.

import { StringDecoder } from 'node:string_decoder';
import type { Usage } from '../core/model.js';

/**
 * The usage a client asked for in its stream: none; the total in a final chunk (OpenAI's
 * `include_usage`); or every chunk's (vLLM's `continuous_usage_stats` too).
 */
export type ClientUsage = 'none' | 'final' | 'continuous';

interface OpenAiUsage {
  readonly prompt_tokens?: unknown;
  readonly completion_tokens?: unknown;
  readonly prompt_tokens_details?: { readonly cached_tokens?: unknown } | null;
}

const count = (value: unknown): number =>
  typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : 0;

/** cpn's usage from an OpenAI `usage` object; undefined if it has no token counts. */
export function usageOf(usage: unknown): Usage | undefined {
  if (usage === null || typeof usage !== 'object') return undefined;
  const u = usage as OpenAiUsage;
  if (u.prompt_tokens === undefined && u.completion_tokens === undefined) return undefined;
  const inputTokens = count(u.prompt_tokens);
  return {
    inputTokens,
    cachedInputTokens: Math.min(inputTokens, count(u.prompt_tokens_details?.cached_tokens)),
    outputTokens: count(u.completion_tokens),
  };
}

/** The usage in a completion's JSON body, if it has one. */
export function engineUsage(body: Buffer): Usage | undefined {
  try {
    return usageOf((JSON.parse(body.toString('utf8')) as { usage?: unknown }).usage);
  } catch {
    return undefined;
  }
}

/** The most an event (one SSE message) may hold before the stream is cut as malformed. */
export const MAX_EVENT_BYTES = 1024 * 1024;

export class EventTooLarge extends Error {}

/**
 * Splits a streamed response into events as bytes arrive, notes the latest usage, and passes the
 * events on — without the usage the client did not ask for. Holds at most one partial event.
 */
export class StreamMeter {
  private pending = '';
  /** Multi-byte characters split between chunks are joined before they are read. */
  private readonly decoder = new StringDecoder('utf8');
  /** Latest usage the engine reported (cumulative). */
  usage: Usage | undefined;
  /** Events that carried content, for the fallback rule when the engine reported no usage. */
  contentEvents = 0;
  done = false;

  constructor(private readonly clientUsage: ClientUsage) {}

  /** Feeds bytes; returns the text to pass to the client now (complete events only). */
  push(chunk: Buffer | string): string {
    this.pending += typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    let out = '';
    for (;;) {
      const end = this.eventEnd();
      if (end === undefined) break;
      const event = this.pending.slice(0, end.at);
      this.pending = this.pending.slice(end.at + end.length);
      const passed = this.event(event);
      if (passed !== undefined) out += `${passed}\n\n`;
    }
    if (this.pending.length > MAX_EVENT_BYTES)
      throw new EventTooLarge(`an event of the engine's stream exceeds ${MAX_EVENT_BYTES} bytes`);
    return out;
  }

  /** Whatever is left when the engine's stream ends (a last event without its blank line). */
  flush(): string {
    const rest = this.pending + this.decoder.end();
    this.pending = '';
    if (rest.trim() === '') return '';
    const passed = this.event(rest);
    return passed === undefined ? '' : `${passed}\n\n`;
  }

  private eventEnd(): { at: number; length: number } | undefined {
    const lf = this.pending.indexOf('\n\n');
    const crlf = this.pending.indexOf('\r\n\r\n');
    if (lf < 0 && crlf < 0) return undefined;
    if (crlf >= 0 && (lf < 0 || crlf < lf)) return { at: crlf, length: 4 };
    return { at: lf, length: 2 };
  }

  /** One event: the text to pass on, or undefined to drop it. */
  private event(event: string): string | undefined {
    const data = event
      .split(/\r?\n/)
      .filter((line) => line.startsWith('data:'))
      .map((line) => line.slice(5).trimStart())
      .join('\n');
    if (data === '') return event;
    if (data === '[DONE]') {
      this.done = true;
      return event;
    }
    if (!data.includes('"usage"')) {
      if (data.includes('"choices"')) this.contentEvents += 1;
      return event;
    }
    let parsed: { usage?: unknown; choices?: unknown[] };
    try {
      parsed = JSON.parse(data);
    } catch {
      return event;
    }
    const usage = usageOf(parsed.usage);
    if (usage !== undefined) this.usage = usage;
    const choices = Array.isArray(parsed.choices) ? parsed.choices : [];
    if (choices.length > 0) this.contentEvents += 1;
    if (this.clientUsage === 'continuous' || parsed.usage === undefined || parsed.usage === null)
      return event;
    // Usage the client did not ask for: a usage-only chunk goes unless the client wants the final
    // total, and a content chunk goes on without it.
    if (choices.length === 0) return this.clientUsage === 'final' ? event : undefined;
    const { usage: _dropped, ...rest } = parsed;
    return `data: ${JSON.stringify(rest)}`;
  }
}

/**
 * What an aborted or broken stream is billed: the usage the engine last reported; if it reported
 * none, the prompt's estimate and one output token per content event seen.
 */
export function usageSoFar(meter: StreamMeter, estimatedInputTokens: number): Usage {
  return (
    meter.usage ?? {
      inputTokens: estimatedInputTokens,
      cachedInputTokens: 0,
      outputTokens: meter.contentEvents,
    }
  );
}
