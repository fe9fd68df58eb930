// The agent's Heartbeat link against a scripted stream: responses in order, a broken stream fails
// what waited on it and tells the agent, reconnects back off (exponentially, jittered) only when
// the control plane could not be reached, and a success resets the backoff.
import { EventEmitter } from 'node:events';
import { status } from '@grpc/grpc-js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  HeartbeatLink,
  type HeartbeatStream,
  HeartbeatUnavailableError,
} from '../../src/agent/heartbeat-link.js';
import { backoffDelay } from '../../src/common/backoff.js';
import type { HeartbeatRequest } from '../../src/gen/cpn/v1/registry.js';
import { NodeState } from '../../src/gen/cpn/v1/types.js';

class ScriptedStream extends EventEmitter implements HeartbeatStream {
  readonly written: HeartbeatRequest[] = [];
  ended = false;
  cancelled = false;
  write(message: HeartbeatRequest): boolean {
    this.written.push(message);
    return true;
  }
  end(): void {
    this.ended = true;
  }
  cancel(): void {
    this.cancelled = true;
  }
  answer(state = NodeState.NODE_STATE_READY): void {
    this.emit('data', { state });
  }
  fail(code: number, details = 'gone'): void {
    this.emit('error', Object.assign(new Error(details), { code, details, metadata: undefined }));
  }
}

function harness(timeoutMs = 60_000) {
  let now = 1_000_000;
  const streams: ScriptedStream[] = [];
  const broken: number[] = [];
  const link = new HeartbeatLink(
    () => {
      const stream = new ScriptedStream();
      streams.push(stream);
      return stream;
    },
    {
      timeoutMs,
      baseMs: 100,
      maxMs: 1600,
      random: () => 0.999,
      clock: () => now,
      onBroken: (code) => broken.push(code),
    },
  );
  return {
    link,
    streams,
    broken,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

const ping: HeartbeatRequest = { status: { nodeId: 'n', load: [], gpuUtilization: 0, healthy: true } };

describe('backoffDelay', () => {
  it('grows by doubling up to the cap, jittered between half and all of it', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 60 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 1, max: 120_000 }),
        (failures, random, baseMs, maxMs) => {
          const ceiling = Math.min(maxMs, baseMs * 2 ** (failures - 1));
          const delay = backoffDelay(failures, { baseMs, maxMs, random: () => random });
          expect(delay).toBeGreaterThanOrEqual(ceiling / 2);
          expect(delay).toBeLessThan(ceiling + 1e-9);
          expect(delay).toBeLessThanOrEqual(maxMs);
        },
      ),
    );
    expect(backoffDelay(0, {})).toBe(0);
  });
});

describe('HeartbeatLink', () => {
  it('opens one stream on first use and resolves responses in order', async () => {
    const h = harness();
    const first = h.link.send(ping);
    const second = h.link.send({ drain: {} });
    expect(h.streams).toHaveLength(1);
    h.streams[0]?.answer(NodeState.NODE_STATE_READY);
    h.streams[0]?.answer(NodeState.NODE_STATE_DRAINING);
    expect((await first).state).toBe(NodeState.NODE_STATE_READY);
    expect((await second).state).toBe(NodeState.NODE_STATE_DRAINING);
    expect(h.streams[0]?.written).toEqual([ping, { drain: {} }]);
  });

  it('a stream that cannot reach the control plane fails its waiters and backs off, doubling', async () => {
    const h = harness();
    const pending = h.link.send(ping);
    h.streams[0]?.fail(status.UNAVAILABLE);
    await expect(pending).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect(h.broken).toEqual([status.UNAVAILABLE]);
    // Within the delay (100 ms × jitter < 1): refused without opening a stream.
    await expect(h.link.send(ping)).rejects.toBeInstanceOf(HeartbeatUnavailableError);
    expect(h.streams).toHaveLength(1);
    h.advance(100);
    const retry = h.link.send(ping);
    expect(h.streams).toHaveLength(2);
    h.streams[1]?.fail(status.UNAVAILABLE);
    await expect(retry).rejects.toMatchObject({ code: status.UNAVAILABLE });
    // The second failure in a row waits about twice as long.
    h.advance(150);
    await expect(h.link.send(ping)).rejects.toBeInstanceOf(HeartbeatUnavailableError);
    h.advance(50);
    const third = h.link.send(ping);
    expect(h.streams).toHaveLength(3);
    h.streams[2]?.answer();
    await third;
    // A success resets it: the next failure waits the base delay again.
    h.streams[2]?.fail(status.UNAVAILABLE);
    h.advance(100);
    h.link.send(ping).catch(() => undefined);
    expect(h.streams).toHaveLength(4);
  });

  it('a refusal (unknown node) does not back off: the agent registers and reopens at once', async () => {
    const h = harness();
    const pending = h.link.send(ping);
    h.streams[0]?.fail(status.NOT_FOUND, 'node n is not registered');
    await expect(pending).rejects.toMatchObject({ code: status.NOT_FOUND });
    const again = h.link.send(ping);
    expect(h.streams).toHaveLength(2);
    h.streams[1]?.answer();
    await again;
  });

  it('a stream the server ends, or one that does not answer in time, is given up', async () => {
    const h = harness(20);
    const ended = h.link.send(ping);
    h.streams[0]?.emit('end');
    await expect(ended).rejects.toMatchObject({ code: status.UNAVAILABLE });
    h.advance(1000);
    const silent = h.link.send(ping);
    await expect(silent).rejects.toMatchObject({ code: status.DEADLINE_EXCEEDED });
    expect(h.streams[1]?.cancelled).toBe(true);
    expect(h.broken).toEqual([status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);
    // Late events from a stream already given up change nothing.
    h.streams[1]?.answer();
    h.streams[1]?.fail(status.UNAVAILABLE);
    expect(h.broken).toHaveLength(2);
  });

  it("the server's end after a goodbye is not a break: no backoff, nobody told", async () => {
    const h = harness();
    const pending = h.link.send(ping);
    h.streams[0]?.answer();
    await pending;
    const bye = h.link.send({ goodbye: {} });
    h.streams[0]?.answer(NodeState.NODE_STATE_UNSPECIFIED);
    await bye;
    h.streams[0]?.emit('end');
    expect(h.broken).toEqual([]);
    expect(h.link.counts.broken).toBe(0);
    expect(h.link.connected).toBe(false);
  });

  it('after close nothing is sent and the stream is half-closed', async () => {
    const h = harness();
    const pending = h.link.send(ping);
    h.streams[0]?.answer();
    await pending;
    h.link.close();
    expect(h.streams[0]?.ended).toBe(true);
    await expect(h.link.send(ping)).rejects.toBeInstanceOf(HeartbeatUnavailableError);
    expect(h.streams).toHaveLength(1);
  });
});
