// A bounded queue for expensive work: at most `running` tasks at once and at most `waiting` queued
// behind them; beyond that a caller is told at once, so that it can refuse and name the limit.
// Used for explained routes and for the slow verification of new API keys.

export class BoundedQueue {
  private active = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(
    readonly running: number,
    readonly waiting: number,
  ) {}

  /**
   * A slot: resolves (with the function that gives it back) once one is free, or is undefined at
   * once when the queue is full. A freed slot passes straight to the first waiter.
   */
  acquire(): Promise<() => void> | undefined {
    if (this.active < this.running) {
      this.active += 1;
      return Promise.resolve(this.release);
    }
    if (this.waiters.length >= this.waiting) return undefined;
    return new Promise((resolve) => this.waiters.push(() => resolve(this.release)));
  }

  private readonly release = (): void => {
    const next = this.waiters.shift();
    if (next === undefined) this.active -= 1;
    else next();
  };
}
