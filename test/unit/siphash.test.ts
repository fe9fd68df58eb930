// SipHash-2-4, the MAC of reservation tokens, against outputs of an independent implementation:
// OpenSSL 3's (`openssl mac -macopt hexkey:<key> -macopt size:8 -in <file> SIPHASH`), which for the
// key 00..0f agree with the vectors in the SipHash paper's appendix.

import { describe, expect, it } from 'vitest';
import { sipHash24Hex, sipHashKey } from '../../src/plane/siphash.js';

const REFERENCE_KEY = sipHashKey(Uint8Array.from({ length: 16 }, (_, i) => i));
/** The message 00 01 02 .. (n - 1), as a string of those code units (each one UTF-8 byte). */
const counting = (n: number) => String.fromCharCode(...Array.from({ length: n }, (_, i) => i));

describe('SipHash-2-4', () => {
  it('matches the reference outputs across every tail length and a second block', () => {
    const expected: Record<number, string> = {
      0: '310e0edd47db6f72',
      1: 'fd67dc93c539f874',
      7: '37d1018bf50002ab',
      8: '6224939a79f5f593',
      9: 'b0e4a90bdf82009e',
      15: 'e545be4961ca29a1',
      16: 'db9bc2577fcc2a3f',
      17: '9447be2cf5e99a69',
      63: '724506eb4c328a95',
    };
    for (const [length, mac] of Object.entries(expected))
      expect(sipHash24Hex(REFERENCE_KEY, counting(Number(length))), `length ${length}`).toBe(mac);
  });

  it('hashes a message as UTF-8, under any key', () => {
    const key = sipHashKey(Buffer.from('5f3c1a0e9b7d2c4468a1f0e3d9c7b2a4', 'hex'));
    expect(sipHash24Hex(key, 'edge-1.2s.ss1x2y.~n-063~qwen2.5-72b~tenant-α')).toBe('26863cc881248c58');
  });

  it('gives another output for another key or a message one bit apart, and the same for the same', () => {
    const other = sipHashKey(Uint8Array.from({ length: 16 }, (_, i) => (i === 15 ? 0x0e : i)));
    const message = 'replica-1.1a.sx2y3z~n1~m~t';
    const mac = sipHash24Hex(REFERENCE_KEY, message);
    expect(sipHash24Hex(REFERENCE_KEY, message)).toBe(mac);
    expect(sipHash24Hex(other, message)).not.toBe(mac);
    expect(sipHash24Hex(REFERENCE_KEY, 'replica-1.1a.sx2y3z~n1~m~u')).not.toBe(mac);
    expect(mac).toMatch(/^[0-9a-f]{16}$/);
  });

  it('refuses a key that is not 16 bytes', () => {
    expect(() => sipHashKey(new Uint8Array(15))).toThrow(/16 bytes, not 15/);
  });
});
