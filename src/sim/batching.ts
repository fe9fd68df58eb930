// A continuous-batching node, iteration by iteration, as the measured engine ran (see the profiles'
// method.md): at the start of each iteration, arrived requests join a FIFO queue; while a slot is
// free and the iteration's prompt-token budget holds, the head of the queue is admitted (the first
// one always); the admitted prompts are prefilled one by one while decoding waits, each giving
// its request's first token; then one decode step gives every running request a token. A request
// leaves after its output length. Times come from a GpuProfile. The loop itself is the engine of
// batching-node.ts, the same the simulator runs inside its nodes; here it is driven by a trace.

import type { GpuProfile } from '../ops/gpu-profile.js';
import { BatchingNode, type EngineJob } from './batching-node.js';
import { EventQueue } from './event-queue.js';

export interface TraceRequest {
  readonly arrivalMs: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
}

export interface EngineLimits {
  /** Requests running at once (the measured engine: 64 slots). */
  readonly maxBatch: number;
  /** Prompt tokens admitted per iteration (the measured engine: 4096). */
  readonly prefillBudget: number;
}

export interface RequestTiming {
  readonly request: TraceRequest;
  /** Prefill start − arrival. */
  readonly queueMs: number;
  /** First token (end of its prefill) − arrival. */
  readonly ttftMs: number;
  /** (done − first token) / (output − 1); undefined for one-token outputs. */
  readonly tpotMs: number | undefined;
  readonly doneMs: number;
}

export interface ReplayResult {
  readonly timings: readonly RequestTiming[];
  /** Time average of the requests running (decode batch), over iterations. */
  readonly meanBatch: number;
  readonly iterations: number;
  readonly endMs: number;
}

/** Replays `trace` (any order; sorted by arrival here) through one engine. Deterministic. */
export function replayTrace(
  trace: readonly TraceRequest[],
  profile: GpuProfile,
  limits: EngineLimits,
): ReplayResult {
  type Job = TraceRequest & EngineJob & { readonly request: TraceRequest };
  const events = new EventQueue<() => void>();
  const timings: RequestTiming[] = [];
  const admittedAt = new Map<Job, number>();
  const firstTokenAt = new Map<Job, number>();
  let iterations = 0;
  let batchTime = 0;
  let endMs = 0;
  const node = new BatchingNode<Job>(profile, { replicas: 1, ...limits }, Number.POSITIVE_INFINITY, {
    schedule: (atMs, fn) => events.push(atMs, fn),
    admitted: (job, atMs) => admittedAt.set(job, atMs),
    firstToken: (job, atMs) => firstTokenAt.set(job, atMs),
    done: (job, doneMs) => {
      const firstTokenMs = firstTokenAt.get(job) as number;
      timings.push({
        request: job.request,
        queueMs: (admittedAt.get(job) as number) - job.arrivalMs,
        ttftMs: firstTokenMs - job.arrivalMs,
        tpotMs: job.outputTokens > 1 ? (doneMs - firstTokenMs) / (job.outputTokens - 1) : undefined,
        doneMs,
      });
      endMs = Math.max(endMs, doneMs);
    },
    iteration: (decodeBatch, count = 1) => {
      iterations += count;
      batchTime += decodeBatch * count;
    },
  });
  for (const request of [...trace].sort((a, b) => a.arrivalMs - b.arrivalMs)) {
    const job = {
      ...request,
      request,
      prefillTokens: request.inputTokens,
      contextTokens: request.inputTokens,
    };
    events.push(request.arrivalMs, () => node.arrive(job, request.arrivalMs));
  }
  for (let item = events.pop(); item !== undefined; item = events.pop()) item.event();
  return { timings, meanBatch: iterations === 0 ? 0 : batchTime / iterations, iterations, endMs };
}

/** p-quantile (0..1) by nearest rank; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

/**
 * The simple fixed-rate model, for comparison: `maxBatch` slots and a FIFO queue; each request
 * takes its prefill (from the profile, alone) and then decodes at the profile's one-sequence speed,
 * whatever else runs. It has no notion of batching, so it cannot see the knee.
 */
export function replaySimple(
  trace: readonly TraceRequest[],
  profile: GpuProfile,
  limits: EngineLimits,
): ReplayResult {
  const arrivals = [...trace].sort((a, b) => a.arrivalMs - b.arrivalMs);
  const stepMs = profile.decodeStepMs(1, 1024);
  const free: number[] = Array.from({ length: limits.maxBatch }, () => 0);
  const timings: RequestTiming[] = [];
  let endMs = 0;
  for (const request of arrivals) {
    // The slot that frees first (FIFO: requests start in arrival order).
    let slot = 0;
    for (let i = 1; i < free.length; i += 1) if ((free[i] as number) < (free[slot] as number)) slot = i;
    const startMs = Math.max(request.arrivalMs, free[slot] as number);
    const firstTokenMs = startMs + profile.prefillMs(request.inputTokens);
    const doneMs = firstTokenMs + (request.outputTokens - 1) * stepMs;
    free[slot] = doneMs;
    endMs = Math.max(endMs, doneMs);
    timings.push({
      request,
      queueMs: startMs - request.arrivalMs,
      ttftMs: firstTokenMs - request.arrivalMs,
      tpotMs: request.outputTokens > 1 ? stepMs : undefined,
      doneMs,
    });
  }
  return { timings, meanBatch: Number.NaN, iterations: 0, endMs };
}
