// Reading vLLM, SGLang and TGI metrics text, and the agent's damping of status reports.

import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { EngineMetricsError, readEngineMetrics } from '../../src/agent/engine-metrics.js';
import { measure, parseProbe } from '../../src/agent/probes.js';
import { shouldReport } from '../../src/agent/status-damper.js';
import { sglangMetrics, tgiMetrics, vllmMetrics } from '../helpers/fake-engine-metrics.js';

const load = { running: 3, waiting: 2, kv: 0.42 };

describe('readEngineMetrics', () => {
  it('vLLM: running, waiting, KV usage and prefix-cache hit rate per model_name', () => {
    const reading = readEngineMetrics(vllmMetrics('qwen3-32b', load), 'auto', ['qwen3-32b', 'other']);
    expect(reading.engine).toBe('vllm');
    expect(reading.models.get('qwen3-32b')).toEqual({ running: 3, waiting: 2 });
    expect(reading.models.get('other')).toEqual({ running: 0, waiting: 0 });
    expect(reading.kvCacheUsage).toBeCloseTo(0.42);
    expect(reading.prefixCacheHitRate).toBeCloseTo(0.25);
  });

  it("vLLM's older KV gauge name is read too", () => {
    const text = vllmMetrics('m', load).replaceAll('vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc');
    expect(readEngineMetrics(text, 'vllm', ['m']).kvCacheUsage).toBeCloseTo(0.42);
  });

  it('SGLang: running, queued, token usage and cache hit rate', () => {
    const reading = readEngineMetrics(sglangMetrics('m', load), 'auto', ['m']);
    expect(reading.engine).toBe('sglang');
    expect(reading.models.get('m')).toEqual({ running: 3, waiting: 2 });
    expect(reading.kvCacheUsage).toBeCloseTo(0.42);
    expect(reading.prefixCacheHitRate).toBeCloseTo(0.6);
  });

  it('TGI: one model, batch and queue; KV usage unknown, not zero', () => {
    const reading = readEngineMetrics(tgiMetrics(load), 'auto', ['m']);
    expect(reading.engine).toBe('tgi');
    expect(reading.models.get('m')).toEqual({ running: 3, waiting: 2 });
    expect(reading.kvCacheUsage).toBeUndefined();
  });

  it('refuses text without the engine families, or another engine than the one named', () => {
    expect(() => readEngineMetrics('# TYPE up gauge\nup 1\n', 'auto', ['m'])).toThrow(EngineMetricsError);
    expect(() => readEngineMetrics(tgiMetrics(load), 'vllm', ['m'])).toThrow(/no vllm metrics/);
    expect(() => readEngineMetrics('', 'auto', ['m'])).toThrow(EngineMetricsError);
  });

  it('negative, NaN and out-of-range values are read as 0 or clamped', () => {
    const text = vllmMetrics('m', { running: -4, waiting: Number.NaN, kv: 7 });
    const reading = readEngineMetrics(text, 'vllm', ['m']);
    expect(reading.models.get('m')).toEqual({ running: 0, waiting: 0 });
    expect(reading.kvCacheUsage).toBe(1);
  });
});

describe('shouldReport', () => {
  const status = (active: number, kv = 0.2, healthy = true) => ({
    healthy,
    load: [{ model: 'm', active, queued: 0 }],
    kvCacheUtilization: kv,
  });
  const options = { keepAliveMs: 3000, capacity: () => 20 };

  it('reports the first status, a material change, and a keep-alive; not a wiggle', () => {
    expect(shouldReport(undefined, status(1), 0, options)).toBe(true);
    const last = { status: status(5), atMs: 0 };
    expect(shouldReport(last, status(6), 100, options)).toBe(false);
    expect(shouldReport(last, status(7), 100, options)).toBe(true);
    expect(shouldReport(last, status(5, 0.35), 100, options)).toBe(true);
    expect(shouldReport(last, status(5, 0.2, false), 100, options)).toBe(true);
    expect(shouldReport(last, status(5), 3000, options)).toBe(true);
  });
});

describe('probes', () => {
  it('parses NAME=HOST:PORT, IPv6 in brackets; refuses anything else naming the form', () => {
    expect(parseProbe('CN-GD=10.1.2.3:443')).toEqual({ from: 'CN-GD', host: '10.1.2.3', port: 443 });
    expect(parseProbe('ap.sz-1=[::1]:8443')).toEqual({ from: 'ap.sz-1', host: '::1', port: 8443 });
    for (const bad of ['CN-GD', 'CN-GD=host', 'CN-GD=host:0', 'CN-GD=host:70000', '=h:1', 'a b=h:1'])
      expect(() => parseProbe(bad), bad).toThrow(/NAME=HOST:PORT/);
  });

  it('measures the median connect time to a listening port, and nothing for a closed one', async () => {
    const server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const port = (server.address() as { port: number }).port;
    try {
      const rtt = await measure({ from: 'x', host: '127.0.0.1', port }, 3, 2000);
      expect(rtt).toBeGreaterThanOrEqual(0);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expect(await measure({ from: 'x', host: '127.0.0.1', port }, 2, 2000)).toBeUndefined();
  });
});
