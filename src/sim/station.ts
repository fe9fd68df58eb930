// A service station: `slots` servers and a FIFO queue of at most `maxQueue` waiting jobs — one
// SimNode's capacity for one model. The simulator calls it at event times; it keeps no clock.

export interface StationJob {
  readonly serviceMs: number;
}

export type Arrival =
  | { readonly kind: 'started'; readonly finishMs: number }
  | { readonly kind: 'queued' }
  | { readonly kind: 'rejected' };

export class Station<J extends StationJob> {
  private busy = 0;
  private readonly waiting: J[] = [];
  private head = 0;

  constructor(
    readonly slots: number,
    readonly maxQueue: number,
  ) {}

  get inService(): number {
    return this.busy;
  }

  get queued(): number {
    return this.waiting.length - this.head;
  }

  /** A job arrives at `nowMs`: it starts at once, waits in line, or is turned away when the line is full. */
  arrive(job: J, nowMs: number): Arrival {
    if (this.busy < this.slots) {
      this.busy += 1;
      return { kind: 'started', finishMs: nowMs + job.serviceMs };
    }
    if (this.queued >= this.maxQueue) return { kind: 'rejected' };
    this.waiting.push(job);
    return { kind: 'queued' };
  }

  /** A job finished at `nowMs`; starts the next waiting one, if any, and returns it with its finish time. */
  finish(nowMs: number): { job: J; finishMs: number } | undefined {
    if (this.queued === 0) {
      this.busy -= 1;
      return undefined;
    }
    const job = this.waiting[this.head] as J;
    this.head += 1;
    if (this.head > 1024 && this.head * 2 > this.waiting.length) {
      this.waiting.splice(0, this.head);
      this.head = 0;
    }
    return { job, finishMs: nowMs + job.serviceMs };
  }
}
