// A binary min-heap of (key, tie, value), ordered by key then tie: the frontier of a best-first
// search (the tie orders cells whose first bounds are equal, e.g. one price tier, by TTFT).

export class MinHeap<T> {
  private readonly keys: number[] = [];
  private readonly ties: number[] = [];
  private readonly values: T[] = [];

  get size(): number {
    return this.keys.length;
  }

  /** The smallest key, or +Infinity when empty. */
  peekKey(): number {
    return this.keys.length === 0 ? Number.POSITIVE_INFINITY : (this.keys[0] as number);
  }

  clear(): void {
    this.keys.length = 0;
    this.ties.length = 0;
    this.values.length = 0;
  }

  /** Whether slot `i` orders strictly before (key, tie). */
  private less(i: number, key: number, tie: number): boolean {
    const k = this.keys[i] as number;
    return k < key || (k === key && (this.ties[i] as number) < tie);
  }

  push(key: number, value: T, tie = 0): void {
    const { keys, ties, values } = this;
    let index = keys.length;
    keys.push(key);
    ties.push(tie);
    values.push(value);
    while (index > 0) {
      const parent = (index - 1) >> 1;
      const parentKey = keys[parent] as number;
      // Rise only past a parent that orders strictly after (key, tie).
      if (!(key < parentKey || (key === parentKey && tie < (ties[parent] as number)))) break;
      keys[index] = keys[parent] as number;
      ties[index] = ties[parent] as number;
      values[index] = values[parent] as T;
      index = parent;
    }
    keys[index] = key;
    ties[index] = tie;
    values[index] = value;
  }

  /** Removes and returns the value with the smallest (key, tie); undefined when empty. */
  pop(): T | undefined {
    const { keys, ties, values } = this;
    if (keys.length === 0) return undefined;
    const top = values[0];
    const lastKey = keys.pop() as number;
    const lastTie = ties.pop() as number;
    const lastValue = values.pop() as T;
    const size = keys.length;
    if (size > 0) {
      let index = 0;
      for (;;) {
        const left = 2 * index + 1;
        if (left >= size) break;
        const right = left + 1;
        const child =
          right < size && this.less(right, keys[left] as number, ties[left] as number) ? right : left;
        if (!this.less(child, lastKey, lastTie)) break;
        keys[index] = keys[child] as number;
        ties[index] = ties[child] as number;
        values[index] = values[child] as T;
        index = child;
      }
      keys[index] = lastKey;
      ties[index] = lastTie;
      values[index] = lastValue;
    }
    return top;
  }
}
