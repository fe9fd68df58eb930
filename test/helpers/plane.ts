// Control planes over one memory store, on a clock the test moves (wall and monotonic alike).

import type { NodeStatus } from '../../src/core/model.js';
import { ControlPlane } from '../../src/plane/control-plane.js';
import type { OpenSessionInput } from '../../src/plane/sessions.js';
import { MemoryStore } from '../../src/store/memory/memory-store.js';
import { FLAT_LATENCY, GUANGZHOU } from './fixtures.js';

export type PlaneOptions = Partial<ConstructorParameters<typeof ControlPlane>[0]>;

/**
 * `count` replicas sharing one store, their clocks at `clock.now` (from 1,000,000 ms): set it, or
 * `advance` it.
 */
export function planesOnOneStore(count: number, extra: PlaneOptions = {}) {
  const clock = { now: 1_000_000 };
  const store = new MemoryStore({ clock: () => clock.now, latency: FLAT_LATENCY });
  const planes = Array.from(
    { length: count },
    (_, i) =>
      new ControlPlane({
        store,
        clock: () => clock.now,
        monotonicClock: () => clock.now,
        reservationTtlMs: 30_000,
        replicaId: `replica-${i}`,
        latency: FLAT_LATENCY,
        ...extra,
      }),
  );
  return { store, planes, clock, advance: (ms: number) => (clock.now += ms) };
}

/** A session to open: tenant t, model m, a client at Guangzhou, a 1 s budget, an hour's TTL. */
export const sessionInput = (extra: Partial<OpenSessionInput> = {}): OpenSessionInput => ({
  tenant: 't',
  model: 'm',
  client: { region: 'CN-GD', accessPoint: '', location: GUANGZHOU },
  latencyBudgetMs: 1000,
  inputTokens: 10,
  maxOutputTokens: 10,
  contextTokens: 0,
  allowedLevels: [],
  allowedRegions: [],
  motion: {},
  ttlS: 3600,
  ...extra,
});

/** A healthy node's status report: `active` requests of `model` running, none queued. */
export const runningReport = (nodeId: string, model: string, active: number): NodeStatus => ({
  nodeId,
  load: [{ model, active, queued: 0 }],
  gpuUtilization: 0.5,
  kvCacheUtilization: 0.1,
  healthy: true,
});
