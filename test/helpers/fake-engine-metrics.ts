// Engines' /metrics text, written here in the Prometheus text format the engines print (metric
// families, labels, HELP and TYPE lines as their documentation shows), with values a test sets.
import { createServer, type Server } from 'node:http';

export interface EngineLoad {
  running: number;
  waiting: number;
  kv: number;
}

export function vllmMetrics(model: string, load: EngineLoad): string {
  const labels = `{engine="0",model_name="${model}"}`;
  return [
    '# HELP vllm:num_requests_running Number of requests in model execution batches.',
    '# TYPE vllm:num_requests_running gauge',
    `vllm:num_requests_running${labels} ${load.running.toFixed(1)}`,
    '# HELP vllm:num_requests_waiting Number of requests waiting to be processed.',
    '# TYPE vllm:num_requests_waiting gauge',
    `vllm:num_requests_waiting${labels} ${load.waiting.toFixed(1)}`,
    '# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.',
    '# TYPE vllm:kv_cache_usage_perc gauge',
    `vllm:kv_cache_usage_perc${labels} ${load.kv}`,
    '# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.',
    '# TYPE vllm:prefix_cache_queries_total counter',
    `vllm:prefix_cache_queries_total${labels} 1000.0`,
    '# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.',
    '# TYPE vllm:prefix_cache_hits_total counter',
    `vllm:prefix_cache_hits_total${labels} 250.0`,
    '',
  ].join('\n');
}

export function sglangMetrics(model: string, load: EngineLoad): string {
  const labels = `{model_name="${model}"}`;
  return [
    '# HELP sglang:num_running_reqs The number of running requests.',
    '# TYPE sglang:num_running_reqs gauge',
    `sglang:num_running_reqs${labels} ${load.running.toFixed(1)}`,
    '# HELP sglang:num_queue_reqs The number of requests in the waiting queue.',
    '# TYPE sglang:num_queue_reqs gauge',
    `sglang:num_queue_reqs${labels} ${load.waiting.toFixed(1)}`,
    '# HELP sglang:token_usage The token usage.',
    '# TYPE sglang:token_usage gauge',
    `sglang:token_usage${labels} ${load.kv}`,
    '# HELP sglang:cache_hit_rate The prefix cache hit rate.',
    '# TYPE sglang:cache_hit_rate gauge',
    `sglang:cache_hit_rate${labels} 0.6`,
    '',
  ].join('\n');
}

export function tgiMetrics(load: EngineLoad): string {
  return [
    '# HELP tgi_batch_current_size Current batch size',
    '# TYPE tgi_batch_current_size gauge',
    `tgi_batch_current_size ${load.running}`,
    '# HELP tgi_queue_size Current queue size',
    '# TYPE tgi_queue_size gauge',
    `tgi_queue_size ${load.waiting}`,
    '',
  ].join('\n');
}

/** Serves `text()` at /metrics on loopback; `down` makes it answer 503, `close` stops it. */
export async function startMetricsServer(text: () => string): Promise<{
  url: string;
  down: boolean;
  scrapes: number;
  close(): Promise<void>;
}> {
  const state = { url: '', down: false, scrapes: 0, close: async () => {} };
  const server: Server = createServer((req, res) => {
    state.scrapes += 1;
    if (state.down || req.url !== '/metrics') {
      res.writeHead(state.down ? 503 : 404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(text());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.address();
  state.url = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}/metrics`;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}
