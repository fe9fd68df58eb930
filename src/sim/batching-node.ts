// A simulated node's model served by measured engines (ModelOffer.engine): `replicas` continuous-
// batching engines, each running the measured engine's loop (batching.ts replays traces through it) (FIFO admission within its batch and
// prompt budget, prefills one by one while decoding waits, then one decode step for all), driven
// by the simulator's event queue: one event per iteration that admits, and one per run of
// decode-only iterations (DecodeRun). A request joins the engine with the least work; the node
// refuses it when its queue is full.

import type { EngineOffer } from '../core/model.js';
import {
  type DecodeTimes,
  type GpuProfile,
  profileFromCurves,
  steppedDecodeTimes,
} from '../ops/gpu-profile.js';

export interface EngineJob {
  /** Tokens to prefill (the uncached part of the prompt). */
  readonly prefillTokens: number;
  /** Tokens the sequence holds after its prefill (the whole prompt). */
  readonly contextTokens: number;
  readonly outputTokens: number;
}

interface Running<J> {
  readonly job: J;
  generated: number;
  context: number;
}

export interface BatchingEvents<J> {
  /** Runs `fn` at `atMs` on the simulator's clock. */
  schedule(atMs: number, fn: () => void): void;
  /** The job's prefill started (it holds a slot from now). */
  admitted(job: J, atMs: number): void;
  /** Its first token came at `atMs` (the end of its prefill). */
  firstToken(job: J, atMs: number): void;
  /** It produced its last token at `atMs` (called at that time). */
  done(job: J, atMs: number): void;
  /** `count` iterations (1 unless said) ran with `decodeBatch` sequences in their decode step (0: prefills only). */
  iteration?(decodeBatch: number, count?: number): void;
}

/**
 * Decode-only iterations run back to back: nothing is admitted (the queue is empty or the batch is
 * full) and nothing finishes before the last. Their end times are worked out at once and one event
 * ends them, instead of one event each; an arrival the batch has room for cuts the run short at
 * the end of the iteration it arrived in, as the engine would admit it there.
 */
/**
 * Iterations a decode run works out ahead, at most: with step times in closed form (measured
 * curves), a run costs the same whatever its length, so it runs until a sequence finishes; worked
 * out one step at a time, a run stays short, as an arrival often cuts it and the steps past the
 * cut would be wasted. A run that ends with nothing finished simply starts the next.
 */
const RUN_STEPS = 32;
const CLOSED_RUN_STEPS = 4096;

interface DecodeRun {
  readonly startMs: number;
  /** When each iteration of the run ends. */
  readonly ends: DecodeTimes;
  /** Iterations the pending event will account for. */
  steps: number;
  /** Tells a superseded event (the run was cut) to do nothing. */
  readonly version: number;
}

class Engine<J extends EngineJob> {
  readonly queue: J[] = [];
  running: Running<J>[] = [];
  private iterating = false;
  private run: DecodeRun | undefined;
  private version = 0;

  constructor(
    private readonly profile: GpuProfile,
    private readonly maxBatch: number,
    private readonly prefillBudget: number,
    private readonly events: BatchingEvents<J>,
  ) {}

  /**
   * Sequences running at `nowMs`. As an iteration at a time would, a sequence counts no more from
   * the start of its last iteration (that iteration was planned without it running after).
   */
  runningAt(nowMs: number): number {
    const run = this.run;
    if (run === undefined) return this.running.length;
    const lastStart = run.steps === 1 ? run.startMs : run.ends.endOf(run.steps - 2);
    if (nowMs < lastStart) return this.running.length;
    let finishing = 0;
    for (const r of this.running) if (r.generated + run.steps >= r.job.outputTokens) finishing += 1;
    return this.running.length - finishing;
  }

  /** Starts an iteration at `nowMs` unless one is running or there is nothing to do. */
  kick(nowMs: number): void {
    if (this.iterating) {
      this.cut(nowMs);
      return;
    }
    if (this.queue.length === 0 && this.running.length === 0) return;
    this.iterating = true;
    let t = nowMs;
    let budget = 0;
    let admitted = 0;
    const finished: J[] = [];
    // Slots: the running (those admitted now included) and the ones whose prefill was all they needed.
    while (this.queue.length > 0 && this.running.length + finished.length < this.maxBatch) {
      const head = this.queue[0] as J;
      if (admitted > 0 && budget + head.prefillTokens > this.prefillBudget) break;
      this.queue.shift();
      budget += head.prefillTokens;
      admitted += 1;
      this.events.admitted(head, t);
      t += this.profile.prefillMs(head.prefillTokens);
      this.events.firstToken(head, t);
      if (head.outputTokens <= 1) finished.push(head);
      else this.running.push({ job: head, generated: 1, context: head.contextTokens });
    }
    if (admitted === 0 && this.running.length > 0) {
      this.decodeRun(t);
      return;
    }
    this.events.iteration?.(this.running.length);
    if (this.running.length > 0) {
      const contexts = this.running.reduce((sum, r) => sum + r.context + 1, 0);
      t += this.profile.decodeStepMs(this.running.length, contexts);
      this.decode(1, finished);
    }
    const end = t;
    this.events.schedule(end, () => {
      this.iterating = false;
      for (const job of finished) this.events.done(job, end);
      this.kick(end);
    });
  }

  /** Every running sequence decodes `steps` tokens; those done move to `finished`. */
  private decode(steps: number, finished: J[]): void {
    const still: Running<J>[] = [];
    for (const r of this.running) {
      r.generated += steps;
      r.context += steps;
      if (r.generated >= r.job.outputTokens) finished.push(r.job);
      else still.push(r);
    }
    this.running = still;
  }

  /** Decode-only iterations from `startMs` until the first running sequence finishes (see DecodeRun). */
  private decodeRun(startMs: number): void {
    let steps = Number.POSITIVE_INFINITY;
    let contexts = 0;
    for (const r of this.running) {
      steps = Math.min(steps, r.job.outputTokens - r.generated);
      contexts += r.context + 1;
    }
    const batch = this.running.length;
    const closed = this.profile.decodeRun?.(batch, contexts, Math.min(steps, CLOSED_RUN_STEPS), startMs);
    if (closed !== undefined) steps = Math.min(steps, CLOSED_RUN_STEPS);
    else steps = Math.min(steps, RUN_STEPS);
    const ends = closed ?? steppedDecodeTimes(this.profile, batch, contexts, steps, startMs);
    this.version += 1;
    this.run = { startMs, ends, steps, version: this.version };
    this.scheduleRunEnd(this.run);
  }

  private scheduleRunEnd(run: DecodeRun): void {
    const end = run.ends.endOf(run.steps - 1);
    this.events.schedule(end, () => {
      if (run.version !== this.version) return;
      this.run = undefined;
      const finished: J[] = [];
      this.events.iteration?.(this.running.length, run.steps);
      this.decode(run.steps, finished);
      this.iterating = false;
      for (const job of finished) this.events.done(job, end);
      this.kick(end);
    });
  }

  /** A request arrived at `nowMs` during a decode run: it ends with the iteration running then. */
  private cut(nowMs: number): void {
    const run = this.run;
    if (run === undefined || this.queue.length === 0 || this.running.length >= this.maxBatch) return;
    // The first iteration to end after nowMs (or the last): its end, then, is the run's.
    let low = 0;
    let high = run.steps - 1;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (run.ends.endOf(mid) > nowMs) high = mid;
      else low = mid + 1;
    }
    const steps = low + 1;
    if (steps === run.steps) return;
    this.version += 1;
    this.run = { startMs: run.startMs, ends: run.ends, steps, version: this.version };
    this.scheduleRunEnd(this.run);
  }
}

export class BatchingNode<J extends EngineJob> {
  private readonly engines: Engine<J>[];
  private readonly slots: number;

  constructor(
    profile: GpuProfile,
    limits: { readonly replicas: number; readonly maxBatch: number; readonly prefillBudget: number },
    private readonly maxQueue: number,
    private readonly events: BatchingEvents<J>,
  ) {
    this.slots = limits.replicas * limits.maxBatch;
    this.engines = Array.from(
      { length: limits.replicas },
      () => new Engine<J>(profile, limits.maxBatch, limits.prefillBudget, events),
    );
  }

  /** The node an offer's measured engines make. */
  static of<J extends EngineJob>(
    offer: EngineOffer,
    maxQueue: number,
    events: BatchingEvents<J>,
  ): BatchingNode<J> {
    return new BatchingNode<J>(
      profileFromCurves(offer.curves),
      {
        replicas: offer.replicas,
        maxBatch: offer.curves.maxBatch,
        prefillBudget: offer.curves.prefillBudget,
      },
      maxQueue,
      events,
    );
  }

  /**
   * A job arrives at `nowMs`: to the engine with the least work. Refused when every slot is taken
   * and the node already has `maxQueue` waiting.
   */
  arrive(job: J, nowMs: number): 'accepted' | 'rejected' {
    let queued = 0;
    let running = 0;
    let best = this.engines[0] as Engine<J>;
    let bestLoad = Number.POSITIVE_INFINITY;
    for (const engine of this.engines) {
      const engineRunning = engine.runningAt(nowMs);
      queued += engine.queue.length;
      running += engineRunning;
      // The engine with the least work (the first of equals).
      const load = engine.queue.length + engineRunning;
      if (load < bestLoad) {
        best = engine;
        bestLoad = load;
      }
    }
    if (running + queued >= this.slots && queued >= this.maxQueue) return 'rejected';
    best.queue.push(job);
    // Started after everything else at this instant, so that simultaneous arrivals are admitted
    // together at the iteration's start, as the engine does.
    this.events.schedule(nowMs, () => best.kick(nowMs));
    return 'accepted';
  }
}
