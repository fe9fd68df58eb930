// The etcd sessions cache: a relist drops only sessions the list could have shown, and a late
// watch event of a write older than a deletion does not bring the session back.
import { describe, expect, it } from 'vitest';
import { EtcdSessions, type SessionDoc } from '../../src/store/etcd/etcd-sessions.js';
import type { SessionRecord } from '../../src/store/sessions.js';

const record = (id: string): SessionRecord =>
  ({ id, tenant: 't', expiresAtMs: Number.POSITIVE_INFINITY }) as unknown as SessionRecord;
const doc = (id: string): SessionDoc => ({ record: record(id), leaseId: '1' });

function cache() {
  return new EtcdSessions({
    client: undefined as never,
    key: (id) => Buffer.from(id),
    call: () => Promise.reject(new Error('no etcd in this test')),
    renewer: undefined as never,
    clock: () => 0,
    countWrite: () => undefined,
  });
}

describe('etcd sessions cache', () => {
  it('a relist keeps sessions written after the list was taken, and drops the others it did not list', () => {
    const sessions = cache();
    sessions.apply('old', doc('old'), 10);
    sessions.apply('new', doc('new'), 120);
    const told: string[] = [];
    sessions.watch('new', (s) => told.push(s === undefined ? 'gone' : 'changed'));
    sessions.retain(new Set(), 100);
    expect([...sessions.all()].map((s) => s.record.id)).toEqual(['new']);
    expect(told).toEqual([]);
    expect(sessions.countFor('t')).toBe(1);
  });

  it('a late watch event of a write older than the deletion does not bring a session back', () => {
    const sessions = cache();
    sessions.apply('s', doc('s'), 50);
    sessions.apply('s', undefined, 60);
    sessions.apply('s', doc('s'), 55);
    expect(sessions.count()).toBe(0);
    expect(sessions.countFor('t')).toBe(0);
  });
});
