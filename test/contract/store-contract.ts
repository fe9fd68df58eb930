// The Store contract: one suite, run unchanged against every Store implementation
// (test/unit/memory-store.test.ts, test/etcd/etcd-store.test.ts).

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type NodeRecord, type NodeSpec, nodeState } from '../../src/core/model.js';
import type { Store, UsageRecord } from '../../src/store/store.js';
import { offer, spec } from '../helpers/fixtures.js';

export interface StoreHarness {
  readonly store: Store;
  /** The store's current time. */
  now(): number;
  /** Lets `ms` of the store's time pass (a fake clock moves; a real one is waited for). */
  pass(ms: number): Promise<void>;
  /** Resolves once `check` holds: at once for a synchronous store, within seconds for a distributed one. */
  settle(check: () => boolean): Promise<void>;
  /** Usage as the store persisted it. */
  usage(): Promise<readonly UsageRecord[]>;
  close(): Promise<void>;
}

const node = (id: string, overrides: Partial<NodeSpec> = {}): NodeSpec => ({ ...spec({ id }), ...overrides });
const status = (nodeId: string, active: number, healthy = true) => ({
  nodeId,
  load: [{ model: 'm', active, queued: 0 }],
  gpuUtilization: 0.5,
  kvCacheUtilization: 0.25,
  healthy,
});

export interface HarnessOptions {
  readonly maxLatencySamples?: number;
}

export function storeContract(
  name: string,
  makeHarness: (options?: HarnessOptions) => Promise<StoreHarness>,
): void {
  describe(`Store contract: ${name}`, () => {
    let h: StoreHarness;
    beforeEach(async () => {
      h = await makeHarness();
    });
    afterEach(async () => {
      await h.close();
    });
    const ready = (record: NodeRecord | undefined) =>
      record !== undefined && nodeState(record, h.now()) === 'READY';

    it('registers, replaces and reads back a node', async () => {
      const first = await h.store.registerNode(node('a'), { ttlS: 30, permanent: false });
      expect(first.created).toBe(true);
      expect(first.node.spec).toEqual(node('a'));
      expect(ready(h.store.getNode('a'))).toBe(true);
      const replaced = await h.store.registerNode(node('a', { endpoint: 'new:1' }), {
        ttlS: 60,
        permanent: false,
      });
      expect(replaced.created).toBe(false);
      expect(h.store.getNode('a')?.spec.endpoint).toBe('new:1');
      expect(h.store.getNode('a')?.ttlS).toBe(60);
      expect(h.store.getNode('missing')).toBeUndefined();
    });

    it('keeps at most maxLatencySamples samples, dropping the least recently updated', async () => {
      const small = await makeHarness({ maxLatencySamples: 3 });
      try {
        for (const id of ['a', 'b']) await small.store.registerNode(node(id), { ttlS: 30, permanent: false });
        const report = (from: string, nodeId: string) =>
          small.store.reportLatency([{ from, nodeId, rttMs: 10 }]);
        await report('f1', 'a');
        await report('f1', 'b');
        await report('f2', 'a');
        await report('f1', 'a'); // refreshed: now the newest
        await report('f3', 'b'); // one too many: (f1, b) goes
        const held = () =>
          ['f1', 'f2', 'f3'].flatMap((from) =>
            [...(small.store.view.samplesFrom(from)?.keys() ?? [])].map((nodeId) => `${from}/${nodeId}`),
          );
        await small.settle(() => held().length === 3);
        expect(held().sort()).toEqual(['f1/a', 'f2/a', 'f3/b']);
        expect(small.store.latencySources()).toBe(3);
      } finally {
        await small.close();
      }
    });

    it('lists by level, region and model, ordered by id', async () => {
      await h.store.registerNode(node('c', { level: 'EDGE' }), { ttlS: 30, permanent: false });
      await h.store.registerNode(node('a', { region: 'CN-SH' }), { ttlS: 30, permanent: false });
      await h.store.registerNode(node('b', { models: [offer({ model: 'other' })] }), {
        ttlS: 30,
        permanent: true,
      });
      const ids = (nodes: NodeRecord[]) => nodes.map((n) => n.spec.id);
      expect(ids(h.store.listNodes({}))).toEqual(['a', 'b', 'c']);
      expect(ids(h.store.listNodes({ level: 'EDGE' }))).toEqual(['c']);
      expect(ids(h.store.listNodes({ region: 'CN-SH' }))).toEqual(['a']);
      expect(ids(h.store.listNodes({ model: 'm' }))).toEqual(['a', 'c']);
      expect(ids(h.store.listNodes({ model: 'other', region: 'CN-GD' }))).toEqual(['b']);
    });

    it('indexes each model’s nodes at their current price and reindexes a node when its price changes', async () => {
      const priced = (id: string, inputPerMtok: number) =>
        node(id, { models: [offer({ price: { inputPerMtok } })] });
      await h.store.registerNode(priced('a', 1), { ttlS: 30, permanent: false });
      await h.store.registerNode(priced('b', 1), { ttlS: 30, permanent: false });
      await h.store.registerNode(priced('c', 2), { ttlS: 30, permanent: false });
      const indexed = () =>
        [...(h.store.view.candidates('m')?.byId.values() ?? [])]
          .map(({ entry }) => [entry.id, entry.offer.price.inputPerMtok] as const)
          .sort((x, y) => (x[0] < y[0] ? -1 : 1));
      expect(indexed()).toEqual([
        ['a', 1],
        ['b', 1],
        ['c', 2],
      ]);
      await h.store.registerNode(priced('b', 2), { ttlS: 30, permanent: false });
      expect(indexed()).toEqual([
        ['a', 1],
        ['b', 2],
        ['c', 2],
      ]);
    });

    it('accepts status from registered nodes only, and shows it', async () => {
      expect((await h.store.reportStatus(status('ghost', 1))).kind).toBe('unknown_node');
      await h.store.registerNode(node('a'), { ttlS: 30, permanent: false });
      const outcome = await h.store.reportStatus(status('a', 3));
      expect(outcome.kind).toBe('accepted');
      const record = h.store.getNode('a');
      expect(record?.status?.load).toEqual([{ model: 'm', active: 3, queued: 0 }]);
      expect(record?.statusAtMs).toBeGreaterThanOrEqual(record?.registeredAtMs ?? Number.POSITIVE_INFINITY);
      await h.store.reportStatus(status('a', 0, false));
      expect(nodeState(h.store.getNode('a') as NodeRecord, h.now())).toBe('UNHEALTHY');
    });

    it('drains and undrains; a drain survives re-registration; unknown nodes are refused', async () => {
      await h.store.registerNode(node('a'), { ttlS: 30, permanent: false });
      expect((await h.store.setDraining('a', true))?.draining).toBe(true);
      expect(nodeState(h.store.getNode('a') as NodeRecord, h.now())).toBe('DRAINING');
      await h.store.registerNode(node('a'), { ttlS: 30, permanent: false });
      expect(h.store.getNode('a')?.draining).toBe(true);
      expect((await h.store.setDraining('a', false))?.draining).toBe(false);
      expect(await h.store.setDraining('missing', true)).toBeUndefined();
    });

    it('deregisters once', async () => {
      await h.store.registerNode(node('a'), { ttlS: 30, permanent: false });
      expect(await h.store.deregisterNode('a')).toBe(true);
      expect(h.store.getNode('a')).toBeUndefined();
      expect(h.store.listNodes({})).toEqual([]);
      expect(h.store.view.candidates('m')).toBeUndefined();
      expect(await h.store.deregisterNode('a')).toBe(false);
    });

    it('smooths latency samples for registered nodes and ignores unknown ones', async () => {
      await h.store.registerNode(node('a'), { ttlS: 30, permanent: false });
      expect(
        await h.store.reportLatency([
          { from: 'ap-1', nodeId: 'a', rttMs: 10 },
          { from: 'ap-1', nodeId: 'ghost', rttMs: 1 },
        ]),
      ).toBe(1);
      await h.store.reportLatency([{ from: 'ap-1', nodeId: 'a', rttMs: 20 }]);
      const sample = h.store.view.samplesFrom('ap-1')?.get('a');
      expect(sample?.count).toBe(2);
      expect(sample?.rttMs).toBeGreaterThan(10);
      expect(sample?.rttMs).toBeLessThan(20);
      expect(h.store.view.samplesFrom('ap-1')?.get('ghost')).toBeUndefined();
    });

    it('records usage once per reservation', async () => {
      const record: UsageRecord = {
        reservationId: 'r-1',
        tenant: 't',
        nodeId: 'a',
        level: 'EDGE',
        region: 'CN-GD',
        model: 'm',
        usage: { inputTokens: 10, cachedInputTokens: 4, outputTokens: 7 },
        success: true,
        atMs: 1,
      };
      await h.store.recordUsage(record, 60_000);
      await h.store.recordUsage(
        {
          ...record,
          usage: { inputTokens: 99, cachedInputTokens: 0, outputTokens: 0 },
        },
        60_000,
      );
      await h.store.recordUsage({ ...record, reservationId: 'r-2' }, 60_000);
      const usage = await h.usage();
      expect(usage.map((u) => u.reservationId)).toEqual(['r-1', 'r-2']);
      expect(usage[0]?.usage.inputTokens).toBe(10);
    });

    it('keeps tenants (created once) and API keys (replaced by id), listed in order', async () => {
      const accounts = h.store.accounts;
      expect(await accounts.createTenant({ name: 'beta', displayName: 'B', createdAtMs: 1 })).toBe(true);
      expect(await accounts.createTenant({ name: 'acme', displayName: 'A', createdAtMs: 2 })).toBe(true);
      expect(await accounts.createTenant({ name: 'acme', displayName: 'again', createdAtMs: 3 })).toBe(false);
      expect(accounts.tenant('acme')?.displayName).toBe('A');
      expect(accounts.tenants().map((t) => t.name)).toEqual(['acme', 'beta']);
      const key = {
        id: '00000000000000b1',
        name: 'ci',
        role: 'client' as const,
        tenant: 'acme',
        createdAtMs: 1,
        salt: 'c2FsdA==',
        hash: 'aGFzaA==',
        kdf: { n: 1024, r: 8, p: 1 },
      };
      await accounts.putApiKey(key);
      await accounts.putApiKey({ ...key, id: '00000000000000a1', role: 'planner', tenant: undefined });
      expect(accounts.apiKeys().map((k) => k.id)).toEqual(['00000000000000a1', '00000000000000b1']);
      await accounts.putApiKey({ ...key, revokedAtMs: 5 });
      expect(accounts.apiKey('00000000000000b1')).toMatchObject({ tenant: 'acme', revokedAtMs: 5 });
    });

    it('forgets a usage record after its keeping time, not before', async () => {
      const record: UsageRecord = {
        reservationId: 'short-lived',
        tenant: '',
        nodeId: 'a',
        level: 'EDGE',
        region: 'CN-GD',
        model: 'm',
        usage: { inputTokens: 1, cachedInputTokens: 0, outputTokens: 1 },
        success: true,
        atMs: 1,
      };
      await h.store.recordUsage(record, 1000);
      expect(await h.store.recordUsage(record, 1000)).toBe(false);
      await h.pass(2500);
      let forgotten = false;
      for (let i = 0; i < 50 && !forgotten; i += 1) {
        // The memory store forgets when it records the next one; etcd when the lease ends.
        await h.store.recordUsage({ ...record, reservationId: `later-${i}` }, 60_000);
        forgotten = !(await h.usage()).some((u) => u.reservationId === 'short-lived');
        if (!forgotten) await h.pass(200);
      }
      expect(forgotten).toBe(true);
      expect((await h.usage()).some((u) => u.reservationId === 'later-0')).toBe(true);
    });

    it('schedules, cancels and folds price changes', async () => {
      const half = {
        utcOffsetHours: 8,
        rules: [{ level: undefined, region: undefined, model: 'm', factor: 0.5, window: undefined }],
      };
      const t0 = h.now();
      await h.store.schedulePricing({ id: 'later', atMs: t0 + 2000, policy: half });
      await h.store.schedulePricing({ id: 'sooner', atMs: t0 + 1000, policy: half });
      await h.store.schedulePricing({ id: 'dropped', atMs: t0 + 1500, policy: half });
      expect(await h.store.cancelPricing('dropped')).toBe(true);
      expect(await h.store.cancelPricing('dropped')).toBe(false);
      expect(
        h.store
          .pricing()
          .scheduled.map((c) => c.id)
          .sort(),
      ).toEqual(['later', 'sooner']);
      expect(await h.store.foldDuePricing(t0 + 1000)).toBe(1);
      expect(h.store.pricing().current).toEqual(half);
      expect(h.store.pricing().scheduled.map((c) => c.id)).toEqual(['later']);
    });

    it('keeps a reporting node; a silent one stops being READY after its TTL; a permanent one stays', async () => {
      await h.store.registerNode(node('talker'), { ttlS: 2, permanent: false });
      await h.store.registerNode(node('silent'), { ttlS: 2, permanent: false });
      await h.store.registerNode(node('static'), { ttlS: 0, permanent: true });
      for (let i = 0; i < 8; i += 1) {
        await h.pass(500);
        expect((await h.store.reportStatus(status('talker', i))).kind).toBe('accepted');
      }
      await h.settle(() => !ready(h.store.getNode('silent')));
      expect(ready(h.store.getNode('talker'))).toBe(true);
      expect(ready(h.store.getNode('static'))).toBe(true);
      const late = await h.store.reportStatus(status('silent', 1));
      expect(['expired', 'unknown_node']).toContain(late.kind);
    });
  });
}
