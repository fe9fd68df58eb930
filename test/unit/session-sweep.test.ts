// The sessions sweep stays bounded in work: a drain that strands thousands of sessions is decided
// a capped number per run, and a session found with nowhere to go is not decided again every run.
import { describe, expect, it } from 'vitest';
import { offer, spec } from '../helpers/fixtures.js';
import { planesOnOneStore, sessionInput } from '../helpers/plane.js';

describe('sessions sweep', () => {
  it('caps its decisions per run and leaves stranded sessions alone for a while', async () => {
    const {
      planes: [plane],
      store,
      advance,
    } = planesOnOneStore(1, { maxSessionsPerTenant: 10_000 });
    if (plane === undefined) throw new Error('one plane');
    await plane.registerNode(spec({ id: 'only', offers: [offer({ maxConcurrency: 5000 })] }), {
      ttlS: 0,
      permanent: true,
    });
    for (let i = 0; i < 2500; i += 1) {
      const opened = await plane.sessions.open(sessionInput());
      expect(opened.kind).toBe('opened');
    }
    // Drained with nowhere else to go: every session is stranded.
    await store.setDraining('only', true);
    await plane.sessions.sweep();
    expect(plane.sessions.lastSweep).toEqual({ decided: 2000, moved: 0 });
    await plane.sessions.sweep();
    expect(plane.sessions.lastSweep).toEqual({ decided: 500, moved: 0 });
    await plane.sessions.sweep();
    expect(plane.sessions.lastSweep).toEqual({ decided: 0, moved: 0 });
    // After the retry time they are looked at again (a node may have appeared).
    advance(11_000);
    await plane.registerNode(spec({ id: 'other', km: 10, offers: [offer({ maxConcurrency: 5000 })] }), {
      ttlS: 0,
      permanent: true,
    });
    await plane.sessions.sweep();
    expect(plane.sessions.lastSweep).toEqual({ decided: 2000, moved: 2000 });
  });
});
