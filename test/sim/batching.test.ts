// The continuous-batching node against hand-computed cases, with a hand-made profile:
// prefill 10 ms + 1 ms per 100 tokens; decode step 5 ms + 0.1 ms per sequence + 0.001 ms per context token.
import { describe, expect, it } from 'vitest';
import {
  curvesOf,
  decodeBucket,
  type GpuProfile,
  interpolate,
  loadGpuProfile,
  profileFromCurves,
} from '../../src/ops/gpu-profile.js';
import { replaySimple, replayTrace, type TraceRequest } from '../../src/sim/batching.js';
import { BatchingNode } from '../../src/sim/batching-node.js';
import { EventQueue } from '../../src/sim/event-queue.js';

const profile: GpuProfile = {
  name: 'hand',
  prefillMs: (tokens) => 10 + tokens / 100,
  decodeStepMs: (batch, context) => 5 + batch * 0.1 + context * 0.001,
};
const LIMITS = { maxBatch: 64, prefillBudget: 4096 };
const req = (arrivalMs: number, inputTokens: number, outputTokens: number): TraceRequest => ({
  arrivalMs,
  inputTokens,
  outputTokens,
});

describe('continuous batching, by hand', () => {
  it('one request alone: TTFT is its prefill; each further token one decode step', () => {
    const { timings } = replayTrace([req(0, 1000, 3)], profile, LIMITS);
    const [t] = timings;
    // Prefill 10 + 10 = 20 ms → first token. Steps: context 1001 then 1002 (the new token each time).
    const step1 = 5 + 0.1 + 1001 * 0.001;
    const step2 = 5 + 0.1 + 1002 * 0.001;
    expect(t?.ttftMs).toBeCloseTo(20, 9);
    expect(t?.queueMs).toBe(0);
    expect(t?.doneMs).toBeCloseTo(20 + step1 + step2, 9);
    expect(t?.tpotMs).toBeCloseTo((step1 + step2) / 2, 9);
  });

  it('two arriving together: prefilled one after the other, then decoding in one batch', () => {
    const { timings, meanBatch } = replayTrace([req(0, 500, 2), req(0, 300, 2)], profile, LIMITS);
    const [a, b] = [...timings].sort((x, y) => x.request.inputTokens - y.request.inputTokens).reverse();
    // a: prefill 15 ms; b waits for it, then 13 ms: first tokens at 15 and 28.
    expect(a?.ttftMs).toBeCloseTo(15, 9);
    expect(b?.queueMs).toBeCloseTo(15, 9);
    expect(b?.ttftMs).toBeCloseTo(28, 9);
    // One shared step of batch 2 over contexts 501 + 301 ends both.
    const shared = 5 + 0.2 + 802 * 0.001;
    expect(a?.doneMs).toBeCloseTo(28 + shared, 9);
    expect(b?.doneMs).toBeCloseTo(28 + shared, 9);
    expect(meanBatch).toBe(2);
  });

  it("a long prompt stalls a running request's decoding for its whole prefill", () => {
    // A decodes alone from 11 ms; B (8000 tokens) arrives at 12 ms and is prefilled in the next
    // iteration, before that iteration's decode step: A waits 90 ms for its token.
    const { timings } = replayTrace([req(0, 100, 4), req(12, 8000, 2)], profile, LIMITS);
    const a = timings.find((t) => t.request.inputTokens === 100);
    const b = timings.find((t) => t.request.inputTokens === 8000);
    const stepA1 = 5 + 0.1 + 101 * 0.001; // iteration 1: A alone, ends at 11 + stepA1
    const t1 = 11 + stepA1;
    const bDone = t1 + 90; // B's prefill (10 + 80 ms) gives its first token
    const both = 5 + 0.2 + (102 + 8001) * 0.001; // iteration 2's step: A and B
    const stepA3 = 5 + 0.1 + 103 * 0.001; // iteration 3: A alone again
    expect(b?.ttftMs).toBeCloseTo(bDone - 12, 9);
    expect(b?.doneMs).toBeCloseTo(bDone + both, 9);
    expect(a?.doneMs).toBeCloseTo(bDone + both + stepA3, 9);
    // A's time per output token carries the stall.
    expect((a?.tpotMs as number) * 3).toBeCloseTo((a?.doneMs as number) - 11, 9);
    expect(a?.tpotMs).toBeGreaterThan(30);
  });

  it('admits within the prompt budget per iteration, and at most max-batch at once', () => {
    const budget = replayTrace([req(0, 3000, 2), req(0, 3000, 2)], profile, {
      maxBatch: 64,
      prefillBudget: 4096,
    });
    const second = budget.timings.find((t) => t.queueMs > 0);
    // The second prompt waits for the next iteration: after the first's prefill and a decode step.
    expect(second?.queueMs).toBeCloseTo(40 + (5 + 0.1 + 3001 * 0.001), 9);
    const slots = replayTrace([req(0, 10, 5), req(0, 10, 5)], profile, { maxBatch: 1, prefillBudget: 4096 });
    const late = slots.timings.find((t) => t.queueMs > 0);
    const first = slots.timings.find((t) => t.queueMs === 0);
    expect(late?.queueMs).toBeCloseTo(first?.doneMs as number, 9);
  });

  it('the simple model decodes at one fixed speed whatever else runs', () => {
    const { timings } = replaySimple([req(0, 1000, 3), req(0, 1000, 3)], profile, LIMITS);
    for (const t of timings) expect(t.tpotMs).toBeCloseTo(5 + 0.1 + 1.024, 9);
  });
});

describe('measured profiles', () => {
  it('interpolates between measured points and pads decode batches to the graph buckets', async () => {
    expect(interpolate([1, 3], [10, 30], 2)).toBe(20);
    expect(interpolate([1, 3], [10, 30], 5)).toBe(50);
    expect(decodeBucket(3)).toBe(4);
    expect(decodeBucket(17)).toBe(24);
    expect(decodeBucket(64)).toBe(64);
    const h100 = await loadGpuProfile('simulations/profiles/h100', '8b');
    const h200 = await loadGpuProfile('simulations/profiles/h200', '8b');
    // The H200's faster memory: decode steps about 0.73 of the H100's; prefill about the same.
    const ratio = h200.decodeStepMs(16, 16 * 2048) / h100.decodeStepMs(16, 16 * 2048);
    expect(ratio).toBeGreaterThan(0.65);
    expect(ratio).toBeLessThan(0.8);
    expect(h200.prefillMs(2048) / h100.prefillMs(2048)).toBeGreaterThan(0.9);
    // Monotone where it matters: longer prompts and bigger batches take longer.
    expect(h100.prefillMs(4096)).toBeGreaterThan(h100.prefillMs(2048));
    expect(h100.decodeStepMs(64, 64 * 1024)).toBeGreaterThan(h100.decodeStepMs(8, 8 * 1024));
  });
});

describe('engines inside the simulator', () => {
  it("a node's engine, driven by events, gives exactly cpn replay's timings for the same trace", async () => {
    const h100 = await loadGpuProfile('simulations/profiles/h100', '8b');
    const curves = curvesOf(h100, { maxBatch: 64, prefillBudget: 4096 });
    const trace: TraceRequest[] = [];
    // A burst and a trickle: queueing, shared decode, prefill stalls.
    for (let i = 0; i < 150; i += 1)
      trace.push(req(i < 80 ? 0 : (i - 80) * 37, 50 + ((i * 997) % 3000), 5 + ((i * 131) % 200)));
    const expected = replayTrace(trace, profileFromCurves(curves), { maxBatch: 64, prefillBudget: 4096 });

    // A minimal event loop around a one-engine node.
    const events = new EventQueue<() => void>();
    type Job = TraceRequest & { prefillTokens: number; contextTokens: number };
    const first = new Map<Job, number>();
    const done = new Map<Job, number>();
    const node = BatchingNode.of<Job>({ curves, replicas: 1 }, 10_000, {
      schedule: (atMs, fn) => events.push(atMs, fn),
      admitted: () => undefined,
      firstToken: (job, atMs) => first.set(job, atMs),
      done: (job, atMs) => done.set(job, atMs),
    });
    const jobs = trace.map((r) => ({ ...r, prefillTokens: r.inputTokens, contextTokens: r.inputTokens }));
    for (const job of jobs) events.push(job.arrivalMs, () => node.arrive(job, job.arrivalMs));
    for (let item = events.pop(); item !== undefined; item = events.pop()) item.event();
    for (const [i, job] of jobs.entries()) {
      const t = expected.timings.find((x) => x.request === trace[i]);
      expect(first.get(job)).toBeCloseTo((t?.ttftMs as number) + job.arrivalMs, 6);
      expect(done.get(job)).toBeCloseTo(t?.doneMs as number, 6);
    }
  });

  it('curves sampled from a profile reproduce it between grid points', async () => {
    const h200 = await loadGpuProfile('simulations/profiles/h200', '8b');
    const back = profileFromCurves(curvesOf(h200, { maxBatch: 64, prefillBudget: 4096 }));
    for (const tokens of [64, 512, 2048, 8192])
      expect(back.prefillMs(tokens)).toBeCloseTo(h200.prefillMs(tokens), 6);
    for (const [b, c] of [
      [1, 1024],
      [16, 2048],
      [64, 512],
    ] as const)
      expect(back.decodeStepMs(b, b * c)).toBeCloseTo(h200.decodeStepMs(b, b * c), 6);
  });
});
