// Node lease renewals share one LeaseKeepAlive stream: answers are matched to leases by id, a
// renewal's deadline covers opening the stream, and a silent or failed stream fails what waited on
// it and is replaced at the next renewal.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { KeepaliveTimeout } from '../../src/store/etcd/etcd-errors.js';
import { LeaseRenewer } from '../../src/store/etcd/node-leases.js';

class ScriptedKeepAlive extends EventEmitter {
  readonly written: string[] = [];
  ended = false;
  write(request: { ID: string }) {
    this.written.push(request.ID);
  }
  end() {
    this.ended = true;
  }
  answer(id: string, ttl: number) {
    this.emit('data', { ID: id, TTL: String(ttl) });
  }
}

function harness(timeoutMs = 60_000) {
  const streams: ScriptedKeepAlive[] = [];
  let hold: Promise<void> | undefined;
  const renewer = new LeaseRenewer(async () => {
    await hold;
    const stream = new ScriptedKeepAlive();
    streams.push(stream);
    return stream;
  }, timeoutMs);
  return {
    renewer,
    streams,
    holdOpening: (until: Promise<void>) => {
      hold = until;
    },
  };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('LeaseRenewer', () => {
  it('renews many leases over one stream, each answer to its own lease', async () => {
    const h = harness();
    const a = h.renewer.renew('101');
    const b = h.renewer.renew('202');
    const a2 = h.renewer.renew('101');
    await settle();
    expect(h.streams).toHaveLength(1);
    expect(h.streams[0]?.written).toEqual(['101', '202', '101']);
    h.streams[0]?.answer('202', 7);
    h.streams[0]?.answer('101', 9);
    h.streams[0]?.answer('101', 0);
    expect(await b).toBe(7);
    expect(await a).toBe(9);
    expect(await a2).toBe(0);
    const c = h.renewer.renew('303');
    await settle();
    h.streams[0]?.answer('303', 3);
    expect(await c).toBe(3);
    expect(h.renewer.opened).toBe(1);
  });

  it('a silent stream times the renewal out, fails the others on it, and is replaced', async () => {
    const h = harness(30);
    const a = h.renewer.renew('1');
    const b = h.renewer.renew('2');
    await expect(a).rejects.toBeInstanceOf(KeepaliveTimeout);
    await expect(b).rejects.toBeInstanceOf(KeepaliveTimeout);
    expect(h.streams[0]?.ended).toBe(true);
    const c = h.renewer.renew('1');
    await settle();
    expect(h.streams).toHaveLength(2);
    h.streams[1]?.answer('1', 5);
    expect(await c).toBe(5);
  });

  it('a stream error fails every waiting renewal; the deadline covers a stream that never opens', async () => {
    const h = harness(30);
    const a = h.renewer.renew('1');
    await settle();
    h.streams[0]?.emit('error', new Error('connection reset'));
    await expect(a).rejects.toThrow('connection reset');
    let open: () => void = () => undefined;
    h.holdOpening(
      new Promise<void>((resolve) => {
        open = resolve;
      }),
    );
    await expect(h.renewer.renew('2')).rejects.toBeInstanceOf(KeepaliveTimeout);
    // The late stream is not kept: it was given up.
    open();
    await settle();
    await settle();
    expect(h.streams.at(-1)?.ended).toBe(true);
  });

  it('close fails what waits and ends the stream', async () => {
    const h = harness();
    const a = h.renewer.renew('1');
    await settle();
    h.renewer.close();
    await expect(a).rejects.toThrow('closing');
    expect(h.streams[0]?.ended).toBe(true);
  });
});
