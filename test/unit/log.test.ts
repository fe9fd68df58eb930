import { closeSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/ops/log.js';

function capture(run: (fd: number) => void): string {
  const file = join(mkdtempSync(join(tmpdir(), 'cpn-log-')), 'log');
  const fd = openSync(file, 'w');
  run(fd);
  closeSync(fd);
  return readFileSync(file, 'utf8');
}

describe('logs', () => {
  it('writes one JSON object per event with level names, and drops lines below the level', () => {
    const text = capture((fd) => {
      const log = createLogger('info', fd);
      log.debug('hidden', {});
      log.info('node registered', { node: 'edge-1', key: 'secret' });
    });
    const lines = text
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'info',
      msg: 'node registered',
      node: 'edge-1',
      key: '[redacted]',
      service: 'cpn',
    });
  });

  it('writes readable lines only when asked', () => {
    const text = capture((fd) =>
      createLogger('info', fd, 'pretty').warn('etcd unreachable', { err: 'refused' }),
    );
    expect(text).toMatch(/^\d\d:\d\d:\d\d WARN {2}etcd unreachable err=refused\n$/);
  });
});
