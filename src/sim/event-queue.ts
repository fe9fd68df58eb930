// The simulator's agenda: a binary heap ordered by (time, sequence). Events at the same time run
// in the order they were scheduled, so simultaneous events resolve the same way on every run.

export interface Scheduled<E> {
  readonly timeMs: number;
  readonly sequence: number;
  readonly event: E;
}

export class EventQueue<E> {
  private readonly heap: Scheduled<E>[] = [];
  private sequence = 0;

  get size(): number {
    return this.heap.length;
  }

  push(timeMs: number, event: E): void {
    if (!Number.isFinite(timeMs)) throw new RangeError(`event time must be finite, got ${timeMs}`);
    const item = { timeMs, sequence: this.sequence++, event };
    const heap = this.heap;
    heap.push(item);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!before(item, heap[parent] as Scheduled<E>)) break;
      heap[index] = heap[parent] as Scheduled<E>;
      index = parent;
    }
    heap[index] = item;
  }

  pop(): Scheduled<E> | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    let index = 0;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child =
        right < heap.length && before(heap[right] as Scheduled<E>, heap[left] as Scheduled<E>) ? right : left;
      if (!before(heap[child] as Scheduled<E>, last)) break;
      heap[index] = heap[child] as Scheduled<E>;
      index = child;
    }
    heap[index] = last;
    return top;
  }
}

function before<E>(a: Scheduled<E>, b: Scheduled<E>): boolean {
  return a.timeMs < b.timeMs || (a.timeMs === b.timeMs && a.sequence < b.sequence);
}
