// SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit pseudorandom function for short
// inputs, the MAC of a reservation id's token. An HMAC-SHA256 cost 8 µs a Route in a busy server
// (making the Hmac object, more than hashing); this costs well under one.
//
// The 64-bit words are kept as 32-bit halves (hi, lo) in local variables: no BigInt is made.

/** Message bytes, grown to the longest message seen. */
let bytes = new Uint8Array(256);
const encoder = new TextEncoder();

/** Little-endian 32-bit word of `data` at `at` (bytes past `end` read as 0). */
function word(data: Uint8Array, at: number, end: number): number {
  let value = 0;
  for (let i = 3; i >= 0; i -= 1) value = (value << 8) | (at + i < end ? (data[at + i] as number) : 0);
  return value >>> 0;
}

/** A SipHash-2-4 key: the 16 key bytes as k0 and k1, each [hi, lo] (see sipHashKey). */
export type SipHashKey = Readonly<Uint32Array>;

/** The key made of 16 bytes (k0 from bytes 0-7, k1 from 8-15, little-endian). */
export function sipHashKey(key: Uint8Array): SipHashKey {
  if (key.length !== 16) throw new RangeError(`a SipHash key is 16 bytes, not ${key.length}`);
  return Uint32Array.of(word(key, 4, 16), word(key, 0, 16), word(key, 12, 16), word(key, 8, 16));
}

const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));

function hexBytes(hi: number, lo: number): string {
  // The 64-bit result as its 8 bytes, least significant first (as the reference vectors print).
  let out = '';
  for (let i = 0; i < 4; i += 1) out += HEX[(lo >>> (8 * i)) & 0xff];
  for (let i = 0; i < 4; i += 1) out += HEX[(hi >>> (8 * i)) & 0xff];
  return out;
}

/** SipHash-2-4 of `message` (as UTF-8) under `key`: its 8 bytes in 16 lowercase hex characters. */
export function sipHash24Hex(key: SipHashKey, message: string): string {
  // UTF-8 takes at most 3 bytes per UTF-16 unit.
  if (bytes.length < message.length * 3) bytes = new Uint8Array(message.length * 3);
  const length = encoder.encodeInto(message, bytes).written;
  const k0hi = key[0] as number;
  const k0lo = key[1] as number;
  const k1hi = key[2] as number;
  const k1lo = key[3] as number;
  // The state v0..v3 in 32-bit halves, from the key and "somepseudorandomlygeneratedbytes".
  let v0h = (k0hi ^ 0x736f6d65) >>> 0;
  let v0l = (k0lo ^ 0x70736575) >>> 0;
  let v1h = (k1hi ^ 0x646f7261) >>> 0;
  let v1l = (k1lo ^ 0x6e646f6d) >>> 0;
  let v2h = (k0hi ^ 0x6c796765) >>> 0;
  let v2l = (k0lo ^ 0x6e657261) >>> 0;
  let v3h = (k1hi ^ 0x74656462) >>> 0;
  let v3l = (k1lo ^ 0x79746573) >>> 0;
  // One step per 8-byte word (the last: the bytes left, and the length's low byte on top), each
  // v3 ^= m, two rounds, v0 ^= m; then the finalization, v2 ^= 0xff and four rounds.
  const words = (length >>> 3) + 1;
  for (let step = 0; step <= words; step += 1) {
    let mh = 0;
    let ml = 0;
    let rounds = 2;
    if (step < words) {
      const at = step * 8;
      mh = word(bytes, at + 4, length);
      ml = word(bytes, at, length);
      if (step === words - 1) mh = (mh | ((length & 0xff) << 24)) >>> 0;
      v3h = (v3h ^ mh) >>> 0;
      v3l = (v3l ^ ml) >>> 0;
    } else {
      v2l = (v2l ^ 0xff) >>> 0;
      rounds = 4;
    }
    for (let round = 0; round < rounds; round += 1) {
      // v0 += v1; v1 <<<= 13; v1 ^= v0; v0 <<<= 32
      let lo = (v0l + v1l) >>> 0;
      v0h = (v0h + v1h + (lo < v0l ? 1 : 0)) >>> 0;
      v0l = lo;
      let t = v1h;
      v1h = ((v1h << 13) | (v1l >>> 19)) >>> 0;
      v1l = ((v1l << 13) | (t >>> 19)) >>> 0;
      v1h = (v1h ^ v0h) >>> 0;
      v1l = (v1l ^ v0l) >>> 0;
      t = v0h;
      v0h = v0l;
      v0l = t;
      // v2 += v3; v3 <<<= 16; v3 ^= v2
      lo = (v2l + v3l) >>> 0;
      v2h = (v2h + v3h + (lo < v2l ? 1 : 0)) >>> 0;
      v2l = lo;
      t = v3h;
      v3h = ((v3h << 16) | (v3l >>> 16)) >>> 0;
      v3l = ((v3l << 16) | (t >>> 16)) >>> 0;
      v3h = (v3h ^ v2h) >>> 0;
      v3l = (v3l ^ v2l) >>> 0;
      // v0 += v3; v3 <<<= 21; v3 ^= v0
      lo = (v0l + v3l) >>> 0;
      v0h = (v0h + v3h + (lo < v0l ? 1 : 0)) >>> 0;
      v0l = lo;
      t = v3h;
      v3h = ((v3h << 21) | (v3l >>> 11)) >>> 0;
      v3l = ((v3l << 21) | (t >>> 11)) >>> 0;
      v3h = (v3h ^ v0h) >>> 0;
      v3l = (v3l ^ v0l) >>> 0;
      // v2 += v1; v1 <<<= 17; v1 ^= v2; v2 <<<= 32
      lo = (v2l + v1l) >>> 0;
      v2h = (v2h + v1h + (lo < v2l ? 1 : 0)) >>> 0;
      v2l = lo;
      t = v1h;
      v1h = ((v1h << 17) | (v1l >>> 15)) >>> 0;
      v1l = ((v1l << 17) | (t >>> 15)) >>> 0;
      v1h = (v1h ^ v2h) >>> 0;
      v1l = (v1l ^ v2l) >>> 0;
      t = v2h;
      v2h = v2l;
      v2l = t;
    }
    v0h = (v0h ^ mh) >>> 0;
    v0l = (v0l ^ ml) >>> 0;
  }
  return hexBytes((v0h ^ v1h ^ v2h ^ v3h) >>> 0, (v0l ^ v1l ^ v2l ^ v3l) >>> 0);
}
