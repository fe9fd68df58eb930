import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deriveSeed, exponential, lognormal, lognormalFromMeanP95, seededRng } from '../../src/core/rng.js';
import { EventQueue } from '../../src/sim/event-queue.js';
import { Station } from '../../src/sim/station.js';
import { LogHistogram } from '../../src/sim/stats.js';

describe('event queue', () => {
  it('runs simultaneous events in the order they were scheduled', () => {
    const queue = new EventQueue<string>();
    queue.push(5, 'late');
    queue.push(1, 'first-at-1');
    queue.push(1, 'second-at-1');
    queue.push(0, 'zero');
    queue.push(1, 'third-at-1');
    const order: string[] = [];
    for (let item = queue.pop(); item; item = queue.pop()) order.push(item.event);
    expect(order).toEqual(['zero', 'first-at-1', 'second-at-1', 'third-at-1', 'late']);
  });

  it('pops in (time, sequence) order for any schedule (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 20 }), { maxLength: 300 }), (times) => {
        const queue = new EventQueue<number>();
        for (const [index, time] of times.entries()) queue.push(time, index);
        const popped: { time: number; index: number }[] = [];
        for (let item = queue.pop(); item; item = queue.pop())
          popped.push({ time: item.timeMs, index: item.event });
        const expected = times
          .map((time, index) => ({ time, index }))
          .sort((a, b) => a.time - b.time || a.index - b.index);
        expect(popped).toEqual(expected);
      }),
    );
  });

  it('refuses a non-finite time', () => {
    expect(() => new EventQueue<number>().push(Number.NaN, 1)).toThrow(/finite/);
  });
});

describe('station', () => {
  it('serves FIFO with max_concurrency slots and turns away arrivals beyond max_queue', () => {
    const station = new Station<{ serviceMs: number; name: string }>(2, 2);
    const job = (name: string, serviceMs: number) => ({ name, serviceMs });
    expect(station.arrive(job('a', 10), 0)).toEqual({ kind: 'started', finishMs: 10 });
    expect(station.arrive(job('b', 20), 1)).toEqual({ kind: 'started', finishMs: 21 });
    expect(station.arrive(job('c', 5), 2)).toEqual({ kind: 'queued' });
    expect(station.arrive(job('d', 7), 3)).toEqual({ kind: 'queued' });
    expect(station.arrive(job('e', 1), 4)).toEqual({ kind: 'rejected' });
    expect([station.inService, station.queued]).toEqual([2, 2]);
    const next = station.finish(10);
    expect(next?.job.name).toBe('c');
    expect(next?.finishMs).toBe(15);
    expect(station.finish(15)?.job.name).toBe('d');
    expect(station.finish(21)).toBeUndefined();
    expect(station.finish(22)).toBeUndefined();
    expect([station.inService, station.queued]).toEqual([0, 0]);
  });
});

/** Erlang C: probability that an arrival waits in an M/M/c queue. */
function erlangC(c: number, offeredLoad: number): number {
  let sum = 0;
  let term = 1;
  for (let k = 0; k < c; k += 1) {
    if (k > 0) term *= offeredLoad / k;
    sum += term;
  }
  const last = (term * offeredLoad) / c;
  const rho = offeredLoad / c;
  const top = last / (1 - rho);
  return top / (sum + top);
}

describe('M/M/c station against Erlang C', () => {
  it('measured mean wait matches C(c, a) / (cμ − λ) within 5 %', () => {
    const c = 4;
    const lambdaPerMs = 3 / 1000;
    const muPerMs = 1 / 1000;
    const rng = seededRng(20261122);
    const station = new Station<{ serviceMs: number; arrivedMs: number }>(c, Number.POSITIVE_INFINITY);
    const queue = new EventQueue<{ kind: 'arrival' } | { kind: 'finish' }>();
    let waited = 0;
    let served = 0;
    let arrivals = 0;
    const total = 400_000;
    queue.push(exponential(rng, lambdaPerMs), { kind: 'arrival' });
    for (let item = queue.pop(); item; item = queue.pop()) {
      const now = item.timeMs;
      if (item.event.kind === 'arrival') {
        arrivals += 1;
        const outcome = station.arrive({ serviceMs: exponential(rng, muPerMs), arrivedMs: now }, now);
        if (outcome.kind === 'started') {
          served += 1;
          queue.push(outcome.finishMs, { kind: 'finish' });
        }
        if (arrivals < total) queue.push(now + exponential(rng, lambdaPerMs), { kind: 'arrival' });
      } else {
        const next = station.finish(now);
        if (next) {
          served += 1;
          waited += now - next.job.arrivedMs;
          queue.push(next.finishMs, { kind: 'finish' });
        }
      }
    }
    const expectedWaitMs = erlangC(c, lambdaPerMs / muPerMs) / (c * muPerMs - lambdaPerMs);
    const measuredWaitMs = waited / served;
    expect(served).toBe(total);
    expect(Math.abs(measuredWaitMs - expectedWaitMs) / expectedWaitMs).toBeLessThan(0.05);
  });
});

describe('random numbers and histograms', () => {
  it('seeded streams replay exactly and differ by seed and label', () => {
    const draw = (seed: number) =>
      Array.from(
        { length: 5 },
        (
          (rng) => () =>
            rng.next()
        )(seededRng(seed)),
      );
    expect(draw(1)).toEqual(draw(1));
    expect(draw(1)).not.toEqual(draw(2));
    expect(deriveSeed(1, 'arrivals')).not.toBe(deriveSeed(1, 'policy-random'));
  });

  it('lognormal parameters reproduce the requested mean and p95', () => {
    const { mu, sigma } = lognormalFromMeanP95(600, 2000);
    const rng = seededRng(3);
    const samples = Array.from({ length: 200_000 }, () => lognormal(rng, mu, sigma)).sort((a, b) => a - b);
    const mean = samples.reduce((s, v) => s + v, 0) / samples.length;
    expect(mean / 600).toBeGreaterThan(0.97);
    expect(mean / 600).toBeLessThan(1.03);
    expect((samples[Math.floor(samples.length * 0.95)] as number) / 2000).toBeCloseTo(1, 1);
  });

  it('the log histogram answers quantiles within 1 % and stays small', () => {
    const histogram = new LogHistogram();
    for (let v = 1; v <= 100_000; v += 1) histogram.record(v);
    for (const [q, want] of [
      [0.5, 50_000],
      [0.95, 95_000],
      [0.99, 99_000],
    ] as const) {
      expect(Math.abs(histogram.quantile(q) - want) / want).toBeLessThan(0.01);
    }
  });
});
