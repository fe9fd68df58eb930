// Leader election on etcd: the leader holds `<prefix>election/<name>` on a lease it keeps alive.
//
// The etcd3 client may notice a lost lease up to one TTL late, so leadership here is also bounded
// in time: it is valid only until two thirds of a TTL after the last successful keepalive. A leader
// that cannot renew stops believing it leads before etcd can hand the key to another replica.
//
// While etcd is unreachable the campaign retries with a growing pause (1 s doubling up to one
// TTL), and says so once per outage rather than at every attempt.

import type { Etcd3, Lease } from 'etcd3';
import type { Leadership } from '../../common/leadership.js';
import type { Logger } from '../../common/logger.js';
import type { Clock } from '../store.js';

export interface EtcdLeadershipOptions {
  readonly client: Etcd3;
  readonly key: string;
  readonly identity: string;
  readonly ttlS: number;
  readonly logger: Logger;
  readonly clock?: Clock;
}

export class EtcdLeadership implements Leadership {
  private lease: Lease | undefined;
  private validUntilMs = 0;
  private leader = false;
  private closed = false;
  private readonly listeners: ((leader: boolean) => void)[] = [];
  private readonly checker: NodeJS.Timeout;
  private retry: NodeJS.Timeout | undefined;
  private readonly clock: Clock;
  /** Campaign attempts that failed in a row (0: the last one reached etcd). */
  private failures = 0;

  constructor(private readonly options: EtcdLeadershipOptions) {
    this.clock = options.clock ?? Date.now;
    this.checker = setInterval(() => this.update(), 100);
    this.checker.unref();
    this.campaign();
  }

  isLeader(): boolean {
    return this.leader && this.clock() < this.validUntilMs;
  }

  onChange(listener: (leader: boolean) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.checker);
    if (this.retry) clearTimeout(this.retry);
    const lease = this.lease;
    this.lease = undefined;
    this.validUntilMs = 0;
    this.update();
    await lease?.revoke().catch(() => undefined);
  }

  private campaign(): void {
    if (this.closed) return;
    const { client, key, identity, ttlS, logger } = this.options;
    const lease = client.lease(ttlS);
    this.lease = lease;
    const renewed = () => {
      if (this.lease === lease && this.leader) this.validUntilMs = this.clock() + (ttlS * 1000 * 2) / 3;
    };
    lease.on('keepaliveSucceeded', renewed);
    lease.on('lost', (error) => {
      if (this.lease !== lease) return;
      this.failed('leadership lease lost', error);
      this.stepDown(lease, this.backoffMs());
    });
    (async () => {
      const leaseId = await lease.grant();
      const result = await client
        .if(key, 'Create', '==', 0)
        .then(client.put(key).value(identity).lease(leaseId))
        .commit();
      if (this.lease !== lease) return;
      if (this.failures > 0) logger.info('leadership campaign reaches etcd again', { key });
      this.failures = 0;
      if (result.succeeded) {
        this.leader = true;
        this.validUntilMs = this.clock() + (ttlS * 1000 * 2) / 3;
        this.update();
        return;
      }
      // Someone else leads: try again in a while (their key vanishes at most one TTL after they stop).
      this.stepDown(lease, ttlS * 500);
    })().catch((error: Error) => {
      if (this.lease !== lease) return;
      this.failed('leadership campaign failed', error);
      this.stepDown(lease, this.backoffMs());
    });
  }

  /** Logs the first failure of a streak as a warning, the rest at debug level. */
  private failed(what: string, error: Error): void {
    this.failures += 1;
    const fields = { key: this.options.key, err: error.message, attempts: this.failures };
    if (this.failures === 1) this.options.logger.warn(`${what}; retrying quietly until etcd answers`, fields);
    else this.options.logger.debug(what, fields);
  }

  private backoffMs(): number {
    return Math.min(1000 * 2 ** Math.max(0, this.failures - 1), this.options.ttlS * 1000);
  }

  private stepDown(lease: Lease, retryMs = 1000): void {
    if (this.lease !== lease) return;
    this.lease = undefined;
    this.leader = false;
    this.validUntilMs = 0;
    this.update();
    lease.revoke().catch(() => undefined);
    if (!this.closed) {
      this.retry = setTimeout(() => this.campaign(), retryMs);
      this.retry.unref();
    }
  }

  private reported = false;

  private update(): void {
    const now = this.isLeader();
    if (now === this.reported) return;
    this.reported = now;
    this.options.logger.info(now ? 'leadership gained' : 'leadership lost', { key: this.options.key });
    for (const listener of this.listeners) listener(now);
  }
}
