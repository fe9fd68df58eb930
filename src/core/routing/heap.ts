// A binary min-heap of (key, tie, value), ordered by key then tie: the frontier of a best-first
// search (the tie orders cells whose first bounds are equal, e.g. one price tier, by TTFT).
//
// Keys and ties live in typed arrays that keep their capacity across clears: a search pushes and
// pops hundreds of cells per decision, and the heap allocates nothing once it has grown.

export class MinHeap<T> {
  /**
   * Keys and ties by slot, the least at 0 when not empty: callers may read them (a peek that is
   * no call: a number returned from a call not inlined is boxed), never write them.
   */
  keys = new Float64Array(64);
  ties = new Float64Array(64);
  private values: T[] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** The smallest key, or +Infinity when empty. */
  peekKey(): number {
    return this.count === 0 ? Number.POSITIVE_INFINITY : (this.keys[0] as number);
  }

  /** The tie of the smallest (key, tie), or +Infinity when empty. */
  peekTie(): number {
    return this.count === 0 ? Number.POSITIVE_INFINITY : (this.ties[0] as number);
  }

  clear(): void {
    this.count = 0;
  }

  /** Whether slot `i` orders strictly before (key, tie). */
  private less(i: number, key: number, tie: number): boolean {
    const k = this.keys[i] as number;
    return k < key || (k === key && (this.ties[i] as number) < tie);
  }

  /** Copies slot `from` into slot `to`. */
  private move(to: number, from: number): void {
    this.keys[to] = this.keys[from] as number;
    this.ties[to] = this.ties[from] as number;
    this.values[to] = this.values[from] as T;
  }

  private put(index: number, key: number, tie: number, value: T): void {
    this.keys[index] = key;
    this.ties[index] = tie;
    this.values[index] = value;
  }

  /** push, with the key and tie read from `keyed[0]` and `keyed[1]` (no number passed: see keys). */
  pushKeyed(value: T, keyed: Float64Array): void {
    this.push(keyed[0] as number, value, keyed[1] as number);
  }

  push(key: number, value: T, tie = 0): void {
    if (this.count === this.keys.length) {
      const keys = new Float64Array(this.count * 2);
      keys.set(this.keys);
      this.keys = keys;
      const ties = new Float64Array(this.count * 2);
      ties.set(this.ties);
      this.ties = ties;
    }
    let index = this.count;
    this.count += 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      const parentKey = this.keys[parent] as number;
      // Rise only past a parent that orders strictly after (key, tie).
      if (!(key < parentKey || (key === parentKey && tie < (this.ties[parent] as number)))) break;
      this.move(index, parent);
      index = parent;
    }
    this.put(index, key, tie, value);
  }

  /** Removes and returns the value with the smallest (key, tie); undefined when empty. */
  pop(): T | undefined {
    if (this.count === 0) return undefined;
    const { keys, ties, values } = this;
    const top = values[0];
    this.count -= 1;
    const size = this.count;
    if (size === 0) return top;
    const lastKey = keys[size] as number;
    const lastTie = ties[size] as number;
    const lastValue = values[size] as T;
    let index = 0;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= size) break;
      const right = left + 1;
      const child =
        right < size && this.less(right, keys[left] as number, ties[left] as number) ? right : left;
      if (!this.less(child, lastKey, lastTie)) break;
      this.move(index, child);
      index = child;
    }
    this.put(index, lastKey, lastTie, lastValue);
    return top;
  }
}
