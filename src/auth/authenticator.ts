// Turns a call's credential into an Identity: an API key from `authorization: Bearer <key>`, or
// else the client certificate of an mTLS connection. Every RPC passes here, so the common case is
// a synchronous map lookup: a key that verified once is remembered by its SHA-256 (the secret is
// never kept) and only re-checked against its record — revoked, expired or replaced keys stop
// working at the next call. The slow scrypt verification runs on the thread pool, a few at a time;
// beyond a bounded queue the call is refused, so a flood of wrong keys cannot exhaust the server.

import { createHash } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { BoundedQueue } from '../common/bounded-queue.js';
import { NODE_ID_PATTERN, TENANT_PATTERN } from '../core/model.js';
import type { AccountsStore, ApiKeyRecord } from '../store/accounts.js';
import { BOOTSTRAP_KEY_ID, claimedKeyId, MAX_BEARER_CHARS, verifyApiKey } from './api-keys.js';
import { ANONYMOUS_OPERATOR, type Identity } from './identity.js';

export type AuthMode = 'api-key' | 'none';

/** Why a call was not authenticated (a bounded label for metrics). */
export type AuthFailure =
  | 'missing'
  | 'malformed'
  | 'unknown_key'
  | 'wrong_secret'
  | 'revoked'
  | 'expired'
  | 'busy'
  | 'bad_certificate';

export type AuthOutcome =
  | { readonly ok: true; readonly identity: Identity }
  | { readonly ok: false; readonly failure: AuthFailure; readonly message: string };

export interface AuthenticatorOptions {
  readonly mode: AuthMode;
  readonly accounts: Pick<AccountsStore, 'apiKey'>;
  readonly clock: () => number;
  /** scrypt verifications running at once (default 2) and waiting (default 64). */
  readonly maxVerifying?: number;
  readonly maxWaiting?: number;
  /** Different secrets of one key id verified at once (default 4). */
  readonly maxPerKey?: number;
  /** Verified and refused tokens remembered (by hash), each (default 10,000). */
  readonly cacheEntries?: number;
}

const CERT_SUBJECT = /^(operator|planner|agent:(.+)|client:(.+))$/;

function keySubject(record: ApiKeyRecord): string {
  return `key ${record.id}${record.name ? ` (${record.name})` : ''}`;
}

export function identityOfKey(record: ApiKeyRecord): Identity {
  const subject = keySubject(record);
  switch (record.role) {
    case 'operator':
      return { role: 'operator', subject };
    case 'planner':
      return { role: 'planner', subject };
    case 'agent':
      return { role: 'agent', subject, nodeId: record.nodeId ?? '' };
    case 'client':
      return { role: 'client', subject, tenant: record.tenant ?? '' };
  }
}

/**
 * The identity of a client certificate: its subject CN names the role — `operator`, `planner`,
 * `agent:<node id>` or `client:<tenant>`.
 */
export function identityOfCertificate(certificate: PeerCertificate): Identity | undefined {
  const cn = certificate.subject?.CN;
  const name = Array.isArray(cn) ? undefined : cn;
  const match = name === undefined ? null : CERT_SUBJECT.exec(name);
  if (!match) return undefined;
  const subject = `certificate CN=${name}`;
  if (match[1] === 'operator') return { role: 'operator', subject };
  if (match[1] === 'planner') return { role: 'planner', subject };
  if (match[2] !== undefined)
    return NODE_ID_PATTERN.test(match[2]) ? { role: 'agent', subject, nodeId: match[2] } : undefined;
  const tenant = match[3] as string;
  return TENANT_PATTERN.test(tenant) ? { role: 'client', subject, tenant } : undefined;
}

/** A bounded map that forgets its oldest entry first. */
class Remembered<V> {
  private readonly entries = new Map<string, V>();
  constructor(private readonly limit: number) {}
  get(key: string): V | undefined {
    return this.entries.get(key);
  }
  set(key: string, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    if (this.entries.size > this.limit) this.entries.delete(this.entries.keys().next().value as string);
  }
}

export class Authenticator {
  /** token hash → the stored hash it verified against (a replaced key must verify again). */
  private readonly verified: Remembered<string>;
  /** token hash → the stored hash it failed against. */
  private readonly refused: Remembered<string>;
  /** Verifications under way, by token digest (at most maxVerifying + maxWaiting). */
  private readonly inflight = new Map<string, Promise<AuthOutcome>>();
  /** Verifications under way per claimed key id, and how many one id may have. */
  private readonly perKey = new Map<string, number>();
  private readonly maxPerKey: number;
  /** The slow scrypt verifications: a few at a time, a bounded queue behind them. */
  private readonly queue: BoundedQueue;

  constructor(private readonly options: AuthenticatorOptions) {
    this.verified = new Remembered(options.cacheEntries ?? 10_000);
    this.refused = new Remembered(options.cacheEntries ?? 10_000);
    this.queue = new BoundedQueue(options.maxVerifying ?? 2, options.maxWaiting ?? 64);
    this.maxPerKey = options.maxPerKey ?? 4;
  }

  get mode(): AuthMode {
    return this.options.mode;
  }

  /** Synchronous when the key was seen before (the hot path); a promise when it must be verified. */
  authenticate(
    authorization: string | undefined,
    certificate: PeerCertificate | undefined,
  ): AuthOutcome | Promise<AuthOutcome> {
    if (this.options.mode === 'none') return { ok: true, identity: ANONYMOUS_OPERATOR };
    if (authorization === undefined || authorization === '') {
      if (certificate !== undefined && certificate.subject !== undefined) {
        const identity = identityOfCertificate(certificate);
        if (identity !== undefined) return { ok: true, identity };
        return fail(
          'bad_certificate',
          'the client certificate\'s subject CN must be "operator", "planner", "agent:<node id>" or "client:<tenant>" (valid names)',
        );
      }
      return fail('missing', 'this method needs a credential: send "authorization: Bearer <API key>"');
    }
    if (authorization.length > MAX_BEARER_CHARS + 7)
      return fail('malformed', `the authorization header is longer than ${MAX_BEARER_CHARS} characters`);
    const match = /^Bearer +(\S+)$/i.exec(authorization);
    if (!match) return fail('malformed', 'the authorization header must be "Bearer <API key>"');
    const token = match[1] as string;
    const keyId = claimedKeyId(token);
    if (keyId === undefined)
      return fail('malformed', 'that is not a cpn API key (cpn_<16 hex>_<43 characters>)');
    const record = this.options.accounts.apiKey(keyId);
    if (record === undefined) {
      return fail(
        'unknown_key',
        keyId === BOOTSTRAP_KEY_ID
          ? 'that is not a cpn API key (cpn_<16 hex>_<43 characters>), and no bootstrap operator key is installed'
          : `API key ${keyId} does not exist`,
      );
    }
    const usable = this.usable(record);
    if (usable !== undefined) return usable;
    const digest = createHash('sha256').update(token).digest('base64');
    if (this.verified.get(digest) === record.hash) return { ok: true, identity: identityOfKey(record) };
    if (this.refused.get(digest) === record.hash)
      return fail('wrong_secret', `wrong secret for API key ${keyId}`);
    // Calls that bring the same new key at once share one verification.
    const pending = this.inflight.get(digest);
    if (pending !== undefined) return pending;
    // Different secrets for one key id (a guessing attack, or any token against the bootstrap
    // key) take at most a few places in the queue, so they cannot keep other keys waiting.
    const underWay = this.perKey.get(keyId) ?? 0;
    if (underWay >= this.maxPerKey)
      return fail(
        'busy',
        `too many different secrets for API key ${keyId} being verified at once; retry shortly`,
      );
    this.perKey.set(keyId, underWay + 1);
    const verifying = this.verify(token, digest, record).finally(() => {
      this.inflight.delete(digest);
      const left = (this.perKey.get(keyId) ?? 1) - 1;
      if (left === 0) this.perKey.delete(keyId);
      else this.perKey.set(keyId, left);
    });
    this.inflight.set(digest, verifying);
    return verifying;
  }

  private usable(record: ApiKeyRecord): AuthOutcome | undefined {
    if (record.revokedAtMs !== undefined)
      return fail(
        'revoked',
        `API key ${record.id} was revoked at ${new Date(record.revokedAtMs).toISOString()}`,
      );
    if (record.expiresAtMs !== undefined && this.options.clock() >= record.expiresAtMs)
      return fail('expired', `API key ${record.id} expired at ${new Date(record.expiresAtMs).toISOString()}`);
    return undefined;
  }

  private async verify(token: string, digest: string, record: ApiKeyRecord): Promise<AuthOutcome> {
    const slot = this.queue.acquire();
    if (slot === undefined) {
      return fail(
        'busy',
        `too many new API keys to verify at once (limit ${this.queue.running} running, ${this.queue.waiting} waiting); retry shortly`,
      );
    }
    const release = await slot;
    try {
      const good = await verifyApiKey(token, record);
      (good ? this.verified : this.refused).set(digest, record.hash);
      if (!good) return fail('wrong_secret', `wrong secret for API key ${record.id}`);
      // The record may have changed while scrypt ran.
      const current = this.options.accounts.apiKey(record.id);
      if (current === undefined) return fail('unknown_key', `API key ${record.id} does not exist`);
      if (current.hash !== record.hash) return this.authenticate(`Bearer ${token}`, undefined);
      return this.usable(current) ?? { ok: true, identity: identityOfKey(current) };
    } finally {
      release();
    }
  }
}

function fail(failure: AuthFailure, message: string): AuthOutcome {
  return { ok: false, failure, message };
}
