// A binary min-heap of (key, value): the frontier of a best-first search.

export class MinHeap<T> {
  private readonly keys: number[] = [];
  private readonly values: T[] = [];

  get size(): number {
    return this.keys.length;
  }

  /** The smallest key, or +Infinity when empty. */
  peekKey(): number {
    return this.keys.length === 0 ? Number.POSITIVE_INFINITY : (this.keys[0] as number);
  }

  push(key: number, value: T): void {
    const { keys, values } = this;
    let index = keys.length;
    keys.push(key);
    values.push(value);
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if ((keys[parent] as number) <= key) break;
      keys[index] = keys[parent] as number;
      values[index] = values[parent] as T;
      index = parent;
    }
    keys[index] = key;
    values[index] = value;
  }

  clear(): void {
    this.keys.length = 0;
    this.values.length = 0;
  }

  /** Removes and returns the value with the smallest key; undefined when empty. */
  pop(): T | undefined {
    const { keys, values } = this;
    if (keys.length === 0) return undefined;
    const top = values[0];
    const lastKey = keys.pop() as number;
    const lastValue = values.pop() as T;
    const size = keys.length;
    if (size > 0) {
      let index = 0;
      for (;;) {
        const left = 2 * index + 1;
        if (left >= size) break;
        const right = left + 1;
        const child = right < size && (keys[right] as number) < (keys[left] as number) ? right : left;
        if ((keys[child] as number) >= lastKey) break;
        keys[index] = keys[child] as number;
        values[index] = values[child] as T;
        index = child;
      }
      keys[index] = lastKey;
      values[index] = lastValue;
    }
    return top;
  }
}
