// A continuous-batching node, iteration by iteration, as the measured engine ran (see the profiles'
// method.md): at the start of each iteration, arrived requests join a FIFO queue; while a slot is
// free and the iteration's prompt-token budget holds, the head of the queue is admitted (the first
// one always); the admitted prompts are prefilled one by one while decoding waits, each giving
// its request's first token; then one decode step gives every running request a token. A request
// leaves after its output length. Times come from a GpuProfile.

import type { GpuProfile } from '../ops/gpu-profile.js';

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

interface Running {
  readonly request: TraceRequest;
  readonly startMs: number;
  readonly firstTokenMs: number;
  generated: number;
  context: number;
}

/** Replays `trace` (any order; sorted by arrival here) through one node. Deterministic. */
export function replayTrace(
  trace: readonly TraceRequest[],
  profile: GpuProfile,
  limits: EngineLimits,
): ReplayResult {
  const arrivals = [...trace].sort((a, b) => a.arrivalMs - b.arrivalMs);
  const timings: RequestTiming[] = [];
  const queue: TraceRequest[] = [];
  let running: Running[] = [];
  let next = 0;
  let now = 0;
  let iterations = 0;
  let batchTime = 0;
  const finish = (r: Running, doneMs: number) => {
    timings.push({
      request: r.request,
      queueMs: r.startMs - r.request.arrivalMs,
      ttftMs: r.firstTokenMs - r.request.arrivalMs,
      tpotMs:
        r.request.outputTokens > 1 ? (doneMs - r.firstTokenMs) / (r.request.outputTokens - 1) : undefined,
      doneMs,
    });
  };
  while (next < arrivals.length || queue.length > 0 || running.length > 0) {
    // Idle: jump to the next arrival.
    if (queue.length === 0 && running.length === 0 && next < arrivals.length)
      now = Math.max(now, (arrivals[next] as TraceRequest).arrivalMs);
    while (next < arrivals.length && (arrivals[next] as TraceRequest).arrivalMs <= now)
      queue.push(arrivals[next++] as TraceRequest);
    // Admission: FIFO, slots and the prompt-token budget (the first admitted always fits).
    let budget = 0;
    const admitted: TraceRequest[] = [];
    while (queue.length > 0 && running.length + admitted.length < limits.maxBatch) {
      const head = queue[0] as TraceRequest;
      if (admitted.length > 0 && budget + head.inputTokens > limits.prefillBudget) break;
      budget += head.inputTokens;
      admitted.push(queue.shift() as TraceRequest);
    }
    // Prefills, one by one; decoding waits.
    for (const request of admitted) {
      const startMs = now;
      now += profile.prefillMs(request.inputTokens);
      const r: Running = { request, startMs, firstTokenMs: now, generated: 1, context: request.inputTokens };
      if (request.outputTokens <= 1) finish(r, now);
      else running.push(r);
    }
    // One decode step for everything running.
    if (running.length > 0) {
      const contexts = running.reduce((sum, r) => sum + r.context + 1, 0);
      now += profile.decodeStepMs(running.length, contexts);
      batchTime += running.length;
      const still: Running[] = [];
      for (const r of running) {
        r.generated += 1;
        r.context += 1;
        if (r.generated >= r.request.outputTokens) finish(r, now);
        else still.push(r);
      }
      running = still;
    }
    iterations += 1;
  }
  return { timings, meanBatch: iterations === 0 ? 0 : batchTime / iterations, iterations, endMs: now };
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
