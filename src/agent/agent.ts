// The node agent (`cpn agent`): beside one inference server, it registers the node, scrapes the
// engine's Prometheus metrics every interval, and reports a damped status (status-damper.ts) with
// a keep-alive every TTL/3. An engine that cannot be read `unhealthyAfter` times in a row makes the
// node UNHEALTHY (saying why); it is READY again at the next good read. On stop it drains the node
// (no new placements), waits until the engine runs nothing or the grace period passes, and
// deregisters it. An agent that dies instead leaves the node to expire after its TTL.

import { type ServiceError, status } from '@grpc/grpc-js';
import { request } from 'undici';
import { backoffDelay } from '../common/backoff.js';
import type { Logger } from '../common/logger.js';
import { capacityOf } from '../core/status-change.js';
import type { NodeSpec, NodeStatus } from '../gen/cpn/v1/types.js';
import { type Engine, EngineMetricsError, type EngineReading, readEngineMetrics } from './engine-metrics.js';
import { measure, type ProbeTarget } from './probes.js';
import { type ReportedStatus, shouldReport } from './status-damper.js';

/** The control plane calls the agent makes (gRPC in production, the same in tests). */
export interface AgentPlane {
  register(spec: NodeSpec, ttlS: number): Promise<void>;
  /** One status (on the Heartbeat stream in production). */
  report(status: NodeStatus): Promise<void>;
  /** Tells the agent when its status channel broke, so it sends its latest state on the next. */
  onDisconnect?(listener: () => void): void;
  /** No new placements on the node (existing ones finish). */
  drain(nodeId: string): Promise<void>;
  deregister(nodeId: string): Promise<void>;
  /** Measured round trips from places to this node. */
  reportLatency(samples: readonly { from: string; nodeId: string; rttMs: number }[]): Promise<void>;
}

export interface AgentOptions {
  readonly plane: AgentPlane;
  readonly spec: NodeSpec;
  readonly ttlS: number;
  readonly engine: Engine | 'auto';
  readonly metricsUrl: string;
  readonly intervalMs: number;
  /** Failed reads in a row before the node is reported unhealthy (default 3). */
  readonly unhealthyAfter?: number;
  /** On stop, how long to wait for running requests to finish (default 30 s). */
  readonly graceMs?: number;
  readonly logger: Logger;
  readonly clock?: () => number;
  /** Places to measure TCP connect time from (probes.ts), every probeIntervalMs (default 10 s). */
  readonly probes?: readonly ProbeTarget[];
  readonly probeIntervalMs?: number;
}

export class Agent {
  private readonly clock: () => number;
  private readonly capacity: (model: string) => number;
  private last: { status: ReportedStatus; atMs: number } | undefined;
  private failures = 0;
  private failedInRow = 0;
  private reading: EngineReading | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopping = false;
  private ticking: Promise<void> = Promise.resolve();
  /** Reports sent, and reads of the engine, for tests and logs. */
  readonly counts = {
    reports: 0,
    failedReports: 0,
    reads: 0,
    failedReads: 0,
    probeReports: 0,
    /** `reads` when the last report was acknowledged: the report carried that read's status. */
    readsAtLastReport: 0,
  };

  constructor(private readonly options: AgentOptions) {
    this.clock = options.clock ?? Date.now;
    this.capacity = capacityOf(options.spec.models);
    options.plane.onDisconnect?.(() => {
      this.last = undefined;
    });
  }

  /**
   * Registers the node and starts the loop. While the control plane cannot be reached it tries
   * again (backing off to 10 s; a sidecar may start before the control plane does); a refusal
   * (bad key, bad spec) rejects at once. Resolves false if stopped before it registered.
   */
  async start(): Promise<boolean> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        await this.options.plane.register(this.options.spec, this.options.ttlS);
        break;
      } catch (error) {
        const code = (error as ServiceError).code;
        if (code !== status.UNAVAILABLE && code !== status.DEADLINE_EXCEEDED) throw error;
        const waitMs = backoffDelay(attempt, { baseMs: 500, maxMs: 10_000 });
        this.options.logger.warn('control plane unreachable; registering again soon', {
          node: this.options.spec.id,
          attempt,
          inMs: Math.round(waitMs),
          err: (error as Error).message,
        });
        await new Promise<void>((resolve) => {
          this.startWait = resolve;
          setTimeout(resolve, waitMs);
        });
        if (this.stopping) return false;
      }
    }
    if (this.stopping) return false;
    this.options.logger.info('node registered', { node: this.options.spec.id });
    this.schedule(0);
    if ((this.options.probes ?? []).length > 0) this.scheduleProbes(0);
    return true;
  }

  /** Wakes a registration retry that is waiting (stop during start). */
  private startWait: (() => void) | undefined;

  private probeTimer: NodeJS.Timeout | undefined;

  private scheduleProbes(delayMs: number): void {
    if (this.stopping) return;
    this.probeTimer = setTimeout(() => {
      this.probe().finally(() => this.scheduleProbes(this.options.probeIntervalMs ?? 10_000));
    }, delayMs);
    this.probeTimer.unref();
  }

  /** Measures every probe target (3 connects each, the median) and reports what succeeded. */
  private async probe(): Promise<void> {
    const nodeId = this.options.spec.id;
    const measured = await Promise.all(
      (this.options.probes ?? []).map(async (target) => ({ target, rtt: await measure(target, 3, 2000) })),
    );
    const samples = measured.flatMap(({ target, rtt }) =>
      rtt === undefined ? [] : [{ from: target.from, nodeId, rttMs: Math.round(rtt * 100) / 100 }],
    );
    for (const { target, rtt } of measured)
      if (rtt === undefined)
        this.options.logger.warn('probe failed', { node: nodeId, from: target.from, host: target.host });
    if (samples.length === 0) return;
    await this.options.plane.reportLatency(samples).then(
      () => {
        this.counts.probeReports += 1;
      },
      (error: Error) =>
        this.options.logger.warn('latency report failed', { node: nodeId, err: error.message }),
    );
  }

  /**
   * Drains the node (no new placements), waits until the engine runs nothing or the grace period
   * passes, and deregisters it. If the control plane refuses the drain, the node is reported
   * unhealthy instead and left to expire after its TTL.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.startWait?.();
    if (this.timer) clearTimeout(this.timer);
    if (this.probeTimer) clearTimeout(this.probeTimer);
    await this.ticking;
    const nodeId = this.options.spec.id;
    const until = this.clock() + (this.options.graceMs ?? 30_000);
    const drained = await this.options.plane.drain(nodeId).then(
      () => true,
      (error: Error) => {
        this.options.logger.warn('could not drain the node; reporting it unhealthy instead', {
          node: nodeId,
          err: error.message,
        });
        return false;
      },
    );
    if (!drained) await this.send(this.statusFrom(this.reading, false), true).catch(() => undefined);
    while (this.clock() < until) {
      await this.read();
      // Still reporting while it waits: a grace longer than the TTL must not let the node expire.
      if (drained) await this.report();
      const running = [...(this.reading?.models.values() ?? [])].reduce(
        (sum, m) => sum + m.running + m.waiting,
        0,
      );
      if (this.failures > 0 || running === 0) break;
      await new Promise((resolve) => setTimeout(resolve, Math.min(this.options.intervalMs, 500)));
    }
    if (drained) {
      await this.options.plane.deregister(nodeId).then(
        () => this.options.logger.info('node drained and deregistered', { node: nodeId }),
        (error: Error) =>
          this.options.logger.warn('could not deregister the node; it expires after its TTL', {
            node: nodeId,
            err: error.message,
          }),
      );
    } else this.options.logger.info('agent stopped; the node expires after its TTL', { node: nodeId });
  }

  private schedule(delayMs: number): void {
    if (this.stopping) return;
    this.timer = setTimeout(() => {
      this.ticking = this.tick().finally(() => this.schedule(this.options.intervalMs));
    }, delayMs);
  }

  private async tick(): Promise<void> {
    await this.read();
    await this.report();
  }

  /** Sends the status from the last read if it changed materially or the keep-alive is due. */
  private async report(): Promise<void> {
    const unhealthy = this.failures >= (this.options.unhealthyAfter ?? 3);
    if (this.reading === undefined && !unhealthy) return; // nothing known yet
    const next = this.statusFrom(unhealthy ? undefined : this.reading, !unhealthy);
    if (
      !shouldReport(this.last, next, this.clock(), {
        keepAliveMs: (this.options.ttlS * 1000) / 3,
        capacity: this.capacity,
      })
    )
      return;
    await this.send(next, false).catch((error: Error) => {
      // Sent again at the next read, whatever the damper says (the link backs off reconnecting).
      this.last = undefined;
      this.counts.failedReports += 1;
      this.failedInRow += 1;
      if (this.failedInRow === 1 || this.failedInRow % 30 === 0)
        this.options.logger.warn('status report failed; retrying', {
          node: this.options.spec.id,
          inRow: this.failedInRow,
          err: error.message,
        });
    });
  }

  private async read(): Promise<void> {
    this.counts.reads += 1;
    try {
      const response = await request(this.options.metricsUrl, {
        headersTimeout: this.options.intervalMs,
        bodyTimeout: this.options.intervalMs,
      });
      const text = await response.body.text();
      if (response.statusCode !== 200) throw new EngineMetricsError(`answered ${response.statusCode}`);
      if (text.length > 8 * 1024 * 1024) throw new EngineMetricsError('metrics larger than 8 MiB');
      this.reading = readEngineMetrics(
        text,
        this.options.engine,
        this.options.spec.models.map((offer) => offer.model),
      );
      if (this.failures >= (this.options.unhealthyAfter ?? 3))
        this.options.logger.info('engine readable again', { node: this.options.spec.id });
      this.failures = 0;
    } catch (error) {
      this.counts.failedReads += 1;
      this.failures += 1;
      if (this.failures === (this.options.unhealthyAfter ?? 3))
        this.options.logger.warn('engine unreadable: reporting the node unhealthy', {
          node: this.options.spec.id,
          url: this.options.metricsUrl,
          failures: this.failures,
          err: (error as Error).message,
        });
    }
  }

  private statusFrom(reading: EngineReading | undefined, healthy: boolean): ReportedStatus & NodeStatus {
    return {
      nodeId: this.options.spec.id,
      healthy,
      load: [...(reading?.models ?? new Map()).entries()].map(([model, m]) => ({
        model,
        active: m.running,
        queued: m.waiting,
      })),
      gpuUtilization: 0,
      kvCacheUtilization: reading?.kvCacheUsage,
    };
  }

  private async send(next: ReportedStatus & NodeStatus, final: boolean): Promise<void> {
    try {
      await this.options.plane.report(next);
    } catch (error) {
      // Expired or never known (the control plane lost it): register again, then report.
      const code = (error as ServiceError).code;
      if ((code !== status.NOT_FOUND && code !== status.FAILED_PRECONDITION) || final) throw error;
      this.options.logger.warn('node unknown to the control plane; registering again', {
        node: this.options.spec.id,
      });
      await this.options.plane.register(this.options.spec, this.options.ttlS);
      await this.options.plane.report(next);
    }
    this.counts.reports += 1;
    this.counts.readsAtLastReport = this.counts.reads;
    if (this.failedInRow > 0)
      this.options.logger.info('status reports go through again', {
        node: this.options.spec.id,
        failed: this.failedInRow,
      });
    this.failedInRow = 0;
    this.last = { status: next, atMs: this.clock() };
  }
}
