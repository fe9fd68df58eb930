// Who runs cluster-wide jobs (shared by the stores, which elect, and ops, whose jobs obey). A single process with the memory store is always the leader; on
// etcd the replicas elect one (see store/etcd/etcd-leadership.ts).

export interface Leadership {
  /** True only while this process holds leadership and knows it still does. */
  isLeader(): boolean;
  /** Called with the new value whenever isLeader() changes. */
  onChange(listener: (leader: boolean) => void): void;
  /** Gives up leadership (if held) and stops campaigning. */
  close(): Promise<void>;
}

export class SoleLeader implements Leadership {
  isLeader(): boolean {
    return true;
  }

  onChange(): void {}

  async close(): Promise<void> {}
}
