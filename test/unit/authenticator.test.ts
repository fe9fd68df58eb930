import { describe, expect, it } from 'vitest';
import {
  BOOTSTRAP_KEY_ID,
  claimedKeyId,
  generateApiKey,
  hashApiKey,
  type KdfParams,
  verifyApiKey,
} from '../../src/auth/api-keys.js';
import { Authenticator, identityOfCertificate } from '../../src/auth/authenticator.js';
import { Accounts } from '../../src/plane/accounts.js';
import { type ApiKeyRecord, MemoryAccounts } from '../../src/store/accounts.js';

/** Cheap scrypt for tests; production keys use DEFAULT_KDF. */
const FAST: KdfParams = { n: 1024, r: 8, p: 1 };

async function keyRecord(role: ApiKeyRecord['role'], extra: Partial<ApiKeyRecord> = {}) {
  const { id, key } = generateApiKey();
  const record: ApiKeyRecord = {
    id,
    name: 'k',
    role,
    createdAtMs: 0,
    ...(await hashApiKey(key, FAST)),
    ...extra,
  };
  return { record, key };
}

function setup(options: { maxVerifying?: number; maxWaiting?: number; maxPerKey?: number } = {}) {
  const accounts = new MemoryAccounts();
  let now = 1000;
  const auth = new Authenticator({ mode: 'api-key', accounts, clock: () => now, ...options });
  return { accounts, auth, advance: (ms: number) => (now += ms) };
}

describe('API keys', () => {
  it('are cpn_<16 hex>_<256-bit secret>, unique, and verify only with their own secret', async () => {
    const a = generateApiKey();
    const b = generateApiKey();
    expect(a.key).toMatch(/^cpn_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(a.key).not.toBe(b.key);
    expect(claimedKeyId(a.key)).toBe(a.id);
    const stored = await hashApiKey(a.key, FAST);
    expect(JSON.stringify(stored)).not.toContain(a.key.slice(21));
    expect(await verifyApiKey(a.key, stored)).toBe(true);
    expect(await verifyApiKey(b.key, stored)).toBe(false);
    // Same key, new salt: a different hash.
    expect((await hashApiKey(a.key, FAST)).hash).not.toBe(stored.hash);
  });

  it('a long printable token is a bootstrap candidate; short, spaced or cpn_-shaped-but-wrong ones are not', () => {
    expect(claimedKeyId('x'.repeat(32))).toBe(BOOTSTRAP_KEY_ID);
    expect(claimedKeyId('x'.repeat(31))).toBeUndefined();
    expect(claimedKeyId(`${'x'.repeat(20)} ${'x'.repeat(20)}`)).toBeUndefined();
    expect(claimedKeyId(`cpn_${'x'.repeat(40)}`)).toBeUndefined();
    expect(claimedKeyId('x'.repeat(513))).toBeUndefined();
  });
});

describe('Authenticator', () => {
  it('verifies a key once, then answers synchronously from its digest', async () => {
    const { accounts, auth } = setup();
    const { record, key } = await keyRecord('client', { tenant: 'acme' });
    await accounts.putApiKey(record);
    const first = auth.authenticate(`Bearer ${key}`, undefined);
    expect(first).toBeInstanceOf(Promise);
    expect(await first).toMatchObject({ ok: true, identity: { role: 'client', tenant: 'acme' } });
    const second = auth.authenticate(`Bearer ${key}`, undefined);
    expect(second).not.toBeInstanceOf(Promise);
    expect(second).toMatchObject({ ok: true });
  });

  it('a burst of calls with one new key shares one verification (no queue, no busy refusals)', async () => {
    const { accounts, auth } = setup({ maxVerifying: 1, maxWaiting: 1 });
    const { record, key } = await keyRecord('client', { tenant: 'acme' });
    await accounts.putApiKey(record);
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, () => auth.authenticate(`Bearer ${key}`, undefined)),
    );
    expect(outcomes.every((outcome) => outcome.ok)).toBe(true);
  });

  it('a revoked, expired or replaced key stops working at the next call, cache or not', async () => {
    const { accounts, auth, advance } = setup();
    const { record, key } = await keyRecord('operator', { expiresAtMs: 5000 });
    await accounts.putApiKey(record);
    expect(await auth.authenticate(`Bearer ${key}`, undefined)).toMatchObject({ ok: true });
    advance(4000);
    expect(auth.authenticate(`Bearer ${key}`, undefined)).toMatchObject({ ok: false, failure: 'expired' });
    await accounts.putApiKey({ ...record, expiresAtMs: undefined, revokedAtMs: 10 });
    expect(auth.authenticate(`Bearer ${key}`, undefined)).toMatchObject({ ok: false, failure: 'revoked' });
    // The same id with another secret (a rotated bootstrap key): the old secret must verify again, and fails.
    await accounts.putApiKey({
      ...record,
      expiresAtMs: undefined,
      ...(await hashApiKey('another secret', FAST)),
    });
    expect(await auth.authenticate(`Bearer ${key}`, undefined)).toMatchObject({
      ok: false,
      failure: 'wrong_secret',
    });
  });

  it('refuses without work what cannot be a key, and names what is missing', () => {
    const { auth } = setup();
    expect(auth.authenticate(undefined, undefined)).toMatchObject({ ok: false, failure: 'missing' });
    expect(auth.authenticate('Basic abc', undefined)).toMatchObject({ ok: false, failure: 'malformed' });
    expect(auth.authenticate('Bearer short', undefined)).toMatchObject({ ok: false, failure: 'malformed' });
    expect(auth.authenticate(`Bearer ${'y'.repeat(600)}`, undefined)).toMatchObject({
      ok: false,
      failure: 'malformed',
    });
    expect(auth.authenticate(`Bearer ${generateApiKey().key}`, undefined)).toMatchObject({
      ok: false,
      failure: 'unknown_key',
    });
  });

  it('a wrong secret is remembered, and beyond the verification queue calls are refused as busy', async () => {
    const { accounts, auth } = setup({ maxVerifying: 1, maxWaiting: 2 });
    const { record } = await keyRecord('planner');
    await accounts.putApiKey(record);
    const wrong = (i: number) => `cpn_${record.id}_${String(i).padStart(43, 'A')}`;
    const outcomes = [0, 1, 2, 3, 4].map((i) => auth.authenticate(`Bearer ${wrong(i)}`, undefined));
    const settled = await Promise.all(outcomes);
    expect(settled.map((o) => (o.ok ? 'ok' : o.failure))).toEqual([
      'wrong_secret',
      'wrong_secret',
      'wrong_secret',
      'busy',
      'busy',
    ]);
    // Seen before: refused at once, without scrypt.
    expect(auth.authenticate(`Bearer ${wrong(0)}`, undefined)).toMatchObject({
      ok: false,
      failure: 'wrong_secret',
    });
  });

  it('a flood of wrong secrets for one key (or the bootstrap key) cannot keep another new key waiting', async () => {
    const { accounts, auth } = setup({ maxVerifying: 1, maxWaiting: 8, maxPerKey: 2 });
    const attacked = await keyRecord('operator');
    const victim = await keyRecord('client', { tenant: 'acme' });
    await accounts.putApiKey(attacked.record);
    await accounts.putApiKey(victim.record);
    const flood = Array.from({ length: 30 }, (_, i) =>
      auth.authenticate(`Bearer cpn_${attacked.record.id}_${String(i).padStart(43, 'B')}`, undefined),
    );
    const genuine = auth.authenticate(`Bearer ${victim.key}`, undefined);
    expect(await genuine).toMatchObject({ ok: true });
    const outcomes = await Promise.all(flood);
    expect(outcomes.filter((o) => !o.ok && o.failure === 'busy').length).toBeGreaterThanOrEqual(28);
  });

  it('with auth off, everyone is an operator', () => {
    const auth = new Authenticator({ mode: 'none', accounts: new MemoryAccounts(), clock: () => 0 });
    expect(auth.authenticate(undefined, undefined)).toMatchObject({
      ok: true,
      identity: { role: 'operator' },
    });
  });

  it('a client certificate names its role in the subject CN', () => {
    const cert = (CN: string) => ({ subject: { CN } }) as never;
    expect(identityOfCertificate(cert('operator'))).toMatchObject({ role: 'operator' });
    expect(identityOfCertificate(cert('planner'))).toMatchObject({ role: 'planner' });
    expect(identityOfCertificate(cert('agent:edge-gd-1'))).toMatchObject({
      role: 'agent',
      nodeId: 'edge-gd-1',
    });
    expect(identityOfCertificate(cert('client:acme'))).toMatchObject({ role: 'client', tenant: 'acme' });
    expect(identityOfCertificate(cert('root'))).toBeUndefined();
    expect(identityOfCertificate(cert('client:'))).toBeUndefined();
    expect(identityOfCertificate(cert('client:Acme~x'))).toBeUndefined();
    expect(identityOfCertificate(cert('agent:../etc'))).toBeUndefined();
  });
});

describe('Accounts', () => {
  it('installs a bootstrap key once; a new secret replaces it', async () => {
    const store = new MemoryAccounts();
    const accounts = new Accounts(store, () => 0);
    await accounts.installBootstrapKey('first-secret-0123456789abcdef0123456');
    const first = store.apiKey(BOOTSTRAP_KEY_ID);
    await accounts.installBootstrapKey('first-secret-0123456789abcdef0123456');
    expect(store.apiKey(BOOTSTRAP_KEY_ID)).toBe(first);
    await accounts.installBootstrapKey('second-secret-0123456789abcdef012345');
    const second = store.apiKey(BOOTSTRAP_KEY_ID) as ApiKeyRecord;
    expect(second.hash).not.toBe(first?.hash);
    expect(await verifyApiKey('first-secret-0123456789abcdef0123456', second)).toBe(false);
    expect(second.role).toBe('operator');
  });

  it('client keys need an existing tenant; counts are bounded', async () => {
    const store = new MemoryAccounts();
    const accounts = new Accounts(store, () => 0, { maxTenants: 1, maxApiKeys: 1 });
    expect(await accounts.createApiKey({ role: 'client', name: '', tenant: 'acme' })).toMatchObject({
      kind: 'unknown_tenant',
    });
    expect(await accounts.createTenant('acme', 'Acme')).toMatchObject({ kind: 'created' });
    expect(await accounts.createTenant('acme', 'Acme')).toMatchObject({ kind: 'exists' });
    expect(await accounts.createTenant('beta', 'Beta')).toMatchObject({ kind: 'limit', limit: 1 });
    expect(await accounts.createApiKey({ role: 'client', name: '', tenant: 'acme' })).toMatchObject({
      kind: 'created',
    });
    expect(await accounts.createApiKey({ role: 'planner', name: '' })).toMatchObject({
      kind: 'limit',
      limit: 1,
    });
  });
});
