// /healthz answers "alive" only while the event loop keeps up: a process starved by its own work
// (a stalled loop) is reported, and recovers once the loop does.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { startOpsHttp, watchEventLoop } from '../../src/ops/http.js';

describe('/healthz', () => {
  it('fails while the event loop has lagged beyond the limit, and recovers', async () => {
    let delayMs = 10;
    const http = await startOpsHttp({
      host: '127.0.0.1',
      port: 0,
      registry: new Registry(),
      readiness: () => ({ ready: true, reason: 'serving' }),
      loopDelayMs: () => delayMs,
      maxLoopDelayMs: 2000,
    });
    try {
      const healthz = () => fetch(`http://127.0.0.1:${http.port}/healthz`);
      expect((await healthz()).status).toBe(200);
      delayMs = 3500;
      const stalled = await healthz();
      expect(stalled.status).toBe(503);
      expect(await stalled.text()).toMatch(/event loop delayed 3500 ms lately \(limit 2000 ms\)/);
      delayMs = 5;
      expect((await healthz()).status).toBe(200);
    } finally {
      await http.close();
    }
  });

  it('the watcher sees a blocked loop', async () => {
    const watcher = watchEventLoop(60_000);
    try {
      // Let the histogram take a first sample, then block the loop for 300 ms.
      await new Promise((resolve) => setTimeout(resolve, 50));
      const until = Date.now() + 300;
      while (Date.now() < until) {
        // busy: the loop cannot turn
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(watcher.delayMs()).toBeGreaterThan(200);
    } finally {
      watcher.stop();
    }
  });
});
