// API keys: `cpn_<id>_<secret>`. The id (16 hex characters) is public — it names the key in lists,
// logs and revocations; the secret is 256 random bits, shown once at creation and stored only as a
// salted scrypt hash. Verification compares in constant time.
//
// A key that does not have this shape can still be the bootstrap operator key an operator
// installs from a Kubernetes secret (CPN_BOOTSTRAP_OPERATOR_KEY): it is looked up under the fixed
// id `bootstrap`.

import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

export const BOOTSTRAP_KEY_ID = 'bootstrap';
/** A bootstrap key is any printable secret of at least this many characters. */
export const MIN_BOOTSTRAP_KEY_CHARS = 32;
/** Longer bearer tokens are refused before any work. */
export const MAX_BEARER_CHARS = 512;

const KEY_PATTERN = /^cpn_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const PRINTABLE = /^[\x21-\x7e]+$/;

/** scrypt cost: 2^14 × 8 × 128 bytes = 16 MiB and tens of milliseconds per verification. */
export interface KdfParams {
  readonly n: number;
  readonly r: number;
  readonly p: number;
}
export const DEFAULT_KDF: KdfParams = { n: 16_384, r: 8, p: 1 };
const HASH_BYTES = 32;

/** What is stored for a key: never the secret. */
export interface KeyHash {
  readonly salt: string;
  readonly hash: string;
  readonly kdf: KdfParams;
}

export function newKeyId(): string {
  return randomBytes(8).toString('hex');
}

/** A fresh key: its public id and the whole secret string the caller must keep. */
export function generateApiKey(): { id: string; key: string } {
  const id = newKeyId();
  return { id, key: `cpn_${id}_${randomBytes(32).toString('base64url')}` };
}

/**
 * Which stored key a presented token claims to be: the id of a `cpn_<id>_<secret>` key, the
 * bootstrap id for any other printable token long enough (not starting `cpn_`), or undefined
 * (refused without work).
 */
export function claimedKeyId(token: string): string | undefined {
  const match = KEY_PATTERN.exec(token);
  if (match) return match[1];
  if (token.startsWith('cpn_')) return undefined;
  if (token.length >= MIN_BOOTSTRAP_KEY_CHARS && token.length <= MAX_BEARER_CHARS && PRINTABLE.test(token))
    return BOOTSTRAP_KEY_ID;
  return undefined;
}

function derive(token: string, salt: Buffer, kdf: KdfParams): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(
      token,
      salt,
      HASH_BYTES,
      { N: kdf.n, r: kdf.r, p: kdf.p, maxmem: 64 * 1024 * 1024 },
      (error, out) => (error ? reject(error) : resolve(out)),
    ),
  );
}

export async function hashApiKey(token: string, kdf: KdfParams = DEFAULT_KDF): Promise<KeyHash> {
  const salt = randomBytes(16);
  const hash = await derive(token, salt, kdf);
  return { salt: salt.toString('base64'), hash: hash.toString('base64'), kdf };
}

/** True when `token` hashes to `stored` (constant-time comparison). */
export async function verifyApiKey(token: string, stored: KeyHash): Promise<boolean> {
  const expected = Buffer.from(stored.hash, 'base64');
  const actual = await derive(token, Buffer.from(stored.salt, 'base64'), stored.kdf);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}
