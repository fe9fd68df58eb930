// Key layout of the etcd store: `<prefix><kind>/<id>`, values JSON so that etcdctl shows them
// readably (except the election value and the cluster secret, which are plain strings).
//
//   nodes/<id>                spec, TTL, lease id          on the node's lease (unless permanent)
//   load/<id>                 last flushed status          on the node's lease
//   admin/<id>                {draining}                   no lease: an operator's drain outlives agents
//   latency/<from>/<node>     smoothed RTT sample
//   usage/<reservation id>    one usage record per Release (created once, whichever replica releases)
//   pricing/current           the time-of-use pricing policy in force
//   pricing/scheduled/<id>    a policy that takes effect at its time on every replica
//   election/<job>            the leader of cluster-wide jobs, on the leader's lease
//   keys/<key id>             an API key's record (hash, role, expiry)
//   tenants/<name>            a tenant and its package
//   ledgers/<tenant>/<period> a tenant's quota ledger
//   secrets/reservation       the cluster's secret for signing reservation ids
//   sessions/<id>             a mobility session {record, leaseId}, on its own lease

export const KINDS = [
  'nodes',
  'load',
  'admin',
  'latency',
  'usage',
  'pricing',
  'election',
  'keys',
  'tenants',
  'ledgers',
  'secrets',
  'sessions',
] as const;
export type Kind = (typeof KINDS)[number];

/** Kinds whose values are plain strings rather than JSON. */
const PLAIN: ReadonlySet<Kind> = new Set(['election', 'secrets']);

/** The first key after every key starting with `prefix`. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i -= 1) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

export type Decoded =
  | { readonly ok: true; readonly kind: Kind; readonly id: string; readonly value: unknown }
  | { readonly ok: false; readonly reason: 'foreign' | 'unreadable' };

export class KeyCodec {
  constructor(readonly prefix: string) {}

  key(kind: Kind, id: string): Buffer {
    return Buffer.from(`${this.prefix}${kind}/${id}`);
  }

  /** The range [start, end) holding every key of `kind` whose id starts with `idPrefix`. */
  range(kind: Kind, idPrefix = ''): { key: Buffer; range_end: Buffer } {
    const key = this.key(kind, idPrefix);
    return { key, range_end: prefixEnd(key) };
  }

  parseKey(key: string): { kind: Kind; id: string } | undefined {
    if (!key.startsWith(this.prefix)) return undefined;
    const rest = key.slice(this.prefix.length);
    const slash = rest.indexOf('/');
    if (slash < 0) return undefined;
    const kind = rest.slice(0, slash) as Kind;
    if (!KINDS.includes(kind)) return undefined;
    return { kind, id: rest.slice(slash + 1) };
  }

  /**
   * The kind, id and value of a key-value pair (value undefined for a deletion). Keys outside the
   * layout are `foreign`; JSON that does not parse is `unreadable`.
   */
  decode(key: Buffer, value: Buffer | undefined): Decoded {
    const parsed = this.parseKey(key.toString());
    if (parsed === undefined) return { ok: false, reason: 'foreign' };
    if (value === undefined || PLAIN.has(parsed.kind)) {
      return { ok: true, ...parsed, value: value?.toString() };
    }
    try {
      return { ok: true, ...parsed, value: JSON.parse(value.toString()) };
    } catch {
      return { ok: false, reason: 'unreadable' };
    }
  }
}
