// Cluster-wide housekeeping, run by node-cron on the elected leader only:
//  - sweep: stale latency samples (and, on the memory store, long-DOWN nodes);
//  - pricing: fold scheduled price changes that are due into the current policy. (Every replica
//    already applies a due change by itself at its time; this keeps the schedule short.)
//  - sessions: hand over the mobility sessions of nodes that drained, went down or were removed.
// Losing leadership stops the tasks at once; each run also re-checks leadership before writing.

import cron, { type ScheduledTask } from 'node-cron';
import type { Leadership } from '../../common/leadership.js';
import type { Logger } from '../../common/logger.js';
import type { Store } from '../../store/store.js';

export interface ClusterJobsOptions {
  readonly store: Store;
  readonly leadership: Leadership;
  readonly logger: Logger;
  readonly clock: () => number;
  /** node-cron patterns (six fields: seconds first). */
  readonly sweepCron?: string;
  readonly pricingCron?: string;
  /** How long a DOWN node stays listed before the sweep removes it (memory store). */
  readonly downGraceMs?: number;
  /** Hands over the sessions of nodes that went away (every second); returns how many moved. */
  readonly sweepSessions?: () => Promise<number>;
  readonly sessionsCron?: string;
}

export interface ClusterJobs {
  /** Runs every job once now, if leader (for tests and operators). */
  runOnce(): Promise<void>;
  stop(): Promise<void>;
}

export function startClusterJobs(options: ClusterJobsOptions): ClusterJobs {
  const { store, leadership, logger, clock } = options;
  const jobs: Record<string, () => Promise<void>> = {
    sweep: async () => {
      const { removedNodes, removedSamples } = await store.sweep(options.downGraceMs ?? 10 * 60_000);
      for (const node of removedNodes) logger.info('node expired and removed', { node });
      if (removedSamples > 0) logger.debug('stale latency samples removed', { removedSamples });
    },
    pricing: async () => {
      const folded = await store.foldDuePricing(clock());
      if (folded > 0) logger.info('scheduled price changes applied', { folded });
    },
    sessions: async () => {
      const moved = (await options.sweepSessions?.()) ?? 0;
      if (moved > 0) logger.info('sessions handed over from nodes that went away', { moved });
    },
  };
  const guarded = (name: string) => async () => {
    if (!leadership.isLeader()) return;
    try {
      await jobs[name]?.();
    } catch (error) {
      logger.warn('cluster job failed', { job: name, err: (error as Error).message });
    }
  };
  const tasks: ScheduledTask[] = [
    cron.createTask(options.sweepCron ?? '*/30 * * * * *', guarded('sweep'), {
      name: 'cpn-sweep',
      noOverlap: true,
    }),
    cron.createTask(options.pricingCron ?? '* * * * * *', guarded('pricing'), {
      name: 'cpn-pricing',
      noOverlap: true,
    }),
    cron.createTask(options.sessionsCron ?? '* * * * * *', guarded('sessions'), {
      name: 'cpn-sessions',
      noOverlap: true,
    }),
  ];
  const follow = (leader: boolean) => {
    for (const task of tasks) {
      if (leader) task.start();
      else task.stop();
    }
  };
  leadership.onChange(follow);
  follow(leadership.isLeader());
  return {
    async runOnce() {
      for (const name of Object.keys(jobs)) await guarded(name)();
    },
    async stop() {
      for (const task of tasks) await task.destroy();
      await leadership.close();
    },
  };
}
