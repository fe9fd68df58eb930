// How many of something each key holds (sessions per tenant, streams per node, watches per
// tenant): a map that forgets a key when its count drops to zero, so it holds only keys in use.

export class KeyCounts {
  private readonly counts = new Map<string, number>();

  of(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  add(key: string): void {
    this.counts.set(key, this.of(key) + 1);
  }

  remove(key: string): void {
    const left = this.of(key) - 1;
    if (left <= 0) this.counts.delete(key);
    else this.counts.set(key, left);
  }
}
