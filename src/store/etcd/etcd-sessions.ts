// Mobility sessions on etcd: key `sessions/<id>`, JSON {record, leaseId}, on the session's own
// lease (its TTL), so a session nobody updates disappears without a sweep. A write is a transaction
// that checks the key's mod revision (the record's version), so two replicas deciding a handover at
// once cannot both win; an update renews the lease over the shared keepalive stream. Every replica
// keeps every session from the watch (etcd-mirror.ts), to sweep the sessions of a node that went
// away and to tell watchers of changes made by other replicas.

import type { Etcd3 } from 'etcd3';
import { KeyCounts } from '../../common/key-counts.js';
import {
  SessionListeners,
  type SessionRecord,
  type SessionStore,
  type VersionedSession,
} from '../sessions.js';
import type { LeaseRenewer } from './node-leases.js';

export interface SessionDoc {
  readonly record: SessionRecord;
  readonly leaseId: string;
}

export interface EtcdSessionsOptions {
  readonly client: Etcd3;
  readonly key: (id: string) => Buffer;
  readonly call: <T>(what: string, run: () => Promise<T>) => Promise<T>;
  readonly renewer: LeaseRenewer;
  readonly clock: () => number;
  readonly countWrite: () => void;
}

interface Cached extends VersionedSession {
  readonly leaseId: string;
}

export class EtcdSessions implements SessionStore {
  private readonly cache = new Map<string, Cached>();
  private readonly listeners = new SessionListeners();
  private readonly tenants = new KeyCounts();

  constructor(private readonly options: EtcdSessionsOptions) {}

  /** Revisions at which sessions were deleted here: a late watch event of an older write is ignored. */
  private readonly deletedAt = new Map<string, number>();

  /** A session document from the watch, a list or a write (newer revisions only). */
  apply(id: string, doc: SessionDoc | undefined, revision: number): void {
    if (doc !== undefined && (this.deletedAt.get(id) ?? -1) >= revision) return;
    if (doc === undefined) {
      if (revision > 0) this.deletedAt.set(id, Math.max(revision, this.deletedAt.get(id) ?? 0));
      const gone = this.cache.get(id);
      if (gone === undefined) return;
      this.cache.delete(id);
      this.tenants.remove(gone.record.tenant);
      this.listeners.notify(id, undefined);
      return;
    }
    const current = this.cache.get(id);
    if (current !== undefined && current.version >= revision) return;
    if (current === undefined) this.tenants.add(doc.record.tenant);
    const session: Cached = { record: doc.record, version: revision, leaseId: doc.leaseId };
    this.cache.set(id, session);
    this.listeners.notify(id, { record: session.record, version: session.version });
  }

  /**
   * After a relist at `revision`: sessions not listed are gone — unless written after the list was
   * taken (a newer version than the list's revision), which the list could not show.
   */
  retain(ids: ReadonlySet<string>, revision: number): void {
    for (const [id, cached] of [...this.cache.entries()])
      if (!ids.has(id) && cached.version <= revision) this.apply(id, undefined, revision);
    // Deletions older than the list are in it: their tombstones are no longer needed.
    for (const [id, at] of [...this.deletedAt.entries()]) if (at <= revision) this.deletedAt.delete(id);
  }

  async get(id: string): Promise<VersionedSession | undefined> {
    const cached = this.cache.get(id) ?? (await this.fetch(id));
    if (cached === undefined) return undefined;
    // The lease decides on etcd; a record past its time whose deletion has not arrived yet is gone.
    if (cached.record.expiresAtMs + 1000 < this.options.clock()) return undefined;
    return { record: cached.record, version: cached.version };
  }

  async put(record: SessionRecord, expected: number | undefined): Promise<number | undefined> {
    const { client, call } = this.options;
    const key = this.options.key(record.id);
    let leaseId: string;
    if (expected === undefined) {
      leaseId = (
        await call('grant a session lease', () => client.leaseClient.leaseGrant({ TTL: record.ttlS }))
      ).ID;
    } else {
      const current = this.cache.get(record.id) ?? (await this.fetch(record.id));
      if (current === undefined || current.version !== expected) return undefined;
      leaseId = current.leaseId;
      const ttl = await call('renew the session lease', () => this.options.renewer.renew(leaseId));
      // The lease ran out between the read and now: the session is gone.
      if (ttl <= 0) return undefined;
    }
    const doc: SessionDoc = { record, leaseId };
    const response = await call('write the session', () =>
      client.kv.txn({
        compare: [
          expected === undefined
            ? { key, target: 'Create', result: 'Equal', create_revision: '0' }
            : { key, target: 'Mod', result: 'Equal', mod_revision: String(expected) },
        ],
        success: [{ request_put: { key, value: Buffer.from(JSON.stringify(doc)), lease: leaseId } }],
      }),
    ).catch(async (error: unknown) => {
      if (expected === undefined) await this.revoke(leaseId);
      throw error;
    });
    if (!response.succeeded) {
      if (expected === undefined) await this.revoke(leaseId);
      return undefined;
    }
    this.options.countWrite();
    const revision = Number(response.header.revision);
    this.apply(record.id, doc, revision);
    return revision;
  }

  async remove(id: string): Promise<boolean> {
    const current = this.cache.get(id) ?? (await this.fetch(id));
    const response = await this.options.call('delete the session', () =>
      this.options.client.kv.deleteRange({ key: this.options.key(id) }),
    );
    this.options.countWrite();
    if (current !== undefined) await this.revoke(current.leaseId);
    this.apply(id, undefined, Number(response.header.revision));
    return Number(response.deleted) > 0;
  }

  *all(): Iterable<VersionedSession> {
    for (const session of this.cache.values()) yield { record: session.record, version: session.version };
  }

  count(): number {
    return this.cache.size;
  }

  countFor(tenant: string): number {
    return this.tenants.of(tenant);
  }

  watch(id: string, listener: (session: VersionedSession | undefined) => void): () => void {
    return this.listeners.add(id, listener);
  }

  /** Read from etcd: written by another replica, and not yet here through the watch. */
  private async fetch(id: string): Promise<Cached | undefined> {
    const response = await this.options.call('read the session', () =>
      this.options.client.kv.range({ key: this.options.key(id) }),
    );
    const kv = response.kvs[0];
    if (kv === undefined) return undefined;
    const doc = JSON.parse(kv.value.toString()) as SessionDoc;
    this.apply(id, doc, Number(kv.mod_revision));
    return this.cache.get(id);
  }

  private async revoke(leaseId: string): Promise<void> {
    await this.options.client.leaseClient.leaseRevoke({ ID: leaseId }).catch(() => undefined);
  }
}
