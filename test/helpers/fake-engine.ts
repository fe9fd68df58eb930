// A fake OpenAI-compatible inference engine on loopback, shaped like vLLM's OpenAI server:
// /v1/chat/completions and /v1/completions, JSON with `usage`, or server-sent events of
// `chat.completion.chunk`s ending in `data: [DONE]`, with a usage-only last chunk under
// `stream_options.include_usage` and usage in every chunk under `continuous_usage_stats`.
// It records what it received and whether a client went away mid-answer.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export interface FakeEngineOptions {
  /** Output tokens per answer (one per streamed chunk). */
  readonly outputTokens?: number;
  readonly promptTokens?: number;
  readonly cachedTokens?: number;
  /** Pause between streamed chunks. */
  readonly chunkDelayMs?: number;
  /** 'refuse': 500 before any byte; 'break': destroy the connection after half the chunks. */
  readonly fail?: 'refuse' | 'break';
  /** 'none': answers carry no usage; 'huge': absurd counts (2^53 − 1). */
  readonly usage?: 'none' | 'huge';
}

export interface FakeEngine {
  readonly url: string;
  readonly requests: { path: string; body: Record<string, unknown> }[];
  /** Requests whose client went away before the answer ended. */
  aborted(): number;
  /** Resolves at the next abort. */
  nextAbort(): Promise<void>;
  setOptions(options: FakeEngineOptions): void;
  close(): Promise<void>;
}

export async function startFakeEngine(initial: FakeEngineOptions = {}): Promise<FakeEngine> {
  let options = initial;
  let aborted = 0;
  let abortWaiters: (() => void)[] = [];
  const requests: FakeEngine['requests'] = [];

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown>;
    requests.push({ path: req.url ?? '', body });
    if (options.fail === 'refuse') {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          object: 'error',
          message: 'engine overloaded',
          type: 'InternalServerError',
          code: 500,
        }),
      );
      return;
    }
    const output = options.outputTokens ?? 5;
    const prompt = options.promptTokens ?? 12;
    const cached = options.cachedTokens ?? 4;
    const usage = (completion: number) =>
      options.usage === 'none'
        ? undefined
        : options.usage === 'huge'
          ? { prompt_tokens: Number.MAX_SAFE_INTEGER, completion_tokens: Number.MAX_SAFE_INTEGER }
          : {
              prompt_tokens: prompt,
              total_tokens: prompt + completion,
              completion_tokens: completion,
              prompt_tokens_details: { cached_tokens: cached },
            };
    const chat = req.url === '/v1/chat/completions';
    const model = body.model;
    if (body.stream !== true) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          id: 'cmpl-fake',
          object: chat ? 'chat.completion' : 'text_completion',
          created: 1,
          model,
          choices: [
            chat
              ? {
                  index: 0,
                  message: { role: 'assistant', content: 'tok '.repeat(output).trim() },
                  finish_reason: 'stop',
                }
              : { index: 0, text: 'tok '.repeat(output).trim(), finish_reason: 'stop' },
          ],
          usage: usage(output),
        }),
      );
      return;
    }
    const streamOptions = (body.stream_options ?? {}) as {
      include_usage?: boolean;
      continuous_usage_stats?: boolean;
    };
    let finished = false;
    res.on('close', () => {
      if (finished) return;
      aborted += 1;
      const waiters = abortWaiters;
      abortWaiters = [];
      for (const waiter of waiters) waiter();
    });
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    /** Resolves once the event has been handed to the socket. */
    const event = (data: unknown) =>
      new Promise<void>((resolve) => res.write(`data: ${JSON.stringify(data)}\n\n`, () => resolve()));
    for (let i = 1; i <= output; i += 1) {
      if (res.destroyed) return;
      if (options.fail === 'break' && i > output / 2) {
        res.destroy();
        return;
      }
      await event({
        id: 'chatcmpl-fake',
        object: chat ? 'chat.completion.chunk' : 'text_completion',
        created: 1,
        model,
        choices: [
          chat
            ? { index: 0, delta: { content: 'tok ' }, finish_reason: null }
            : { index: 0, text: 'tok ', finish_reason: null },
        ],
        ...(streamOptions.continuous_usage_stats ? { usage: usage(i) } : {}),
      });
      if (options.chunkDelayMs) await new Promise((resolve) => setTimeout(resolve, options.chunkDelayMs));
    }
    if (streamOptions.include_usage) {
      await event({
        id: 'chatcmpl-fake',
        object: 'chat.completion.chunk',
        created: 1,
        model,
        choices: [],
        usage: usage(output),
      });
    }
    finished = true;
    res.end('data: [DONE]\n\n');
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    aborted: () => aborted,
    nextAbort: () => new Promise<void>((resolve) => abortWaiters.push(resolve)),
    setOptions(next) {
      options = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
