// What a connection can make the server hold: a TCP connection that never completes the HTTP/2
// preface is closed after the handshake timeout, an idle one after the idle timeout, connections
// beyond the ceiling are closed on accept, and the stream ceiling is announced in SETTINGS.
import { connect as http2Connect } from 'node:http2';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/etcd.js';
import { ok, rpc, startTestServer, type TestServer } from '../helpers/grpc.js';

const closed = (socket: Socket) =>
  new Promise<void>((resolve) => {
    if (socket.destroyed) resolve();
    socket.once('close', () => resolve());
  });

const opened = (port: number) =>
  new Promise<Socket>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => resolve(socket));
    socket.on('error', () => undefined);
    socket.once('close', () => reject(new Error('closed before connecting')));
  });

describe('connection limits', () => {
  let t: TestServer | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it('a connection that never sends the preface is closed after the handshake timeout; one that does is kept', async () => {
    t = await startTestServer({ connections: { handshakeTimeoutMs: 200 } });
    const silent = await opened(t.server.port);
    const session = http2Connect(`http://127.0.0.1:${t.server.port}`);
    await new Promise<void>((resolve) => session.once('remoteSettings', () => resolve()));
    await closed(silent);
    // The session that completed its handshake, opened at the same time, still carries a call.
    const headers = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const stream = session.request({
        ':method': 'POST',
        ':path': '/grpc.health.v1.Health/Check',
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      stream.on('response', resolve);
      stream.on('error', reject);
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
    });
    expect(headers[':status']).toBe(200);
    session.destroy();
    // And the server still serves calls.
    expect(await ok(t.registry, t.registry.getStoreStatus, {})).toMatchObject({ kind: 'memory' });
  });

  it('an idle connection is closed with GOAWAY after the idle timeout', async () => {
    t = await startTestServer({ connections: { idleTimeoutMs: 1000 } });
    const session = http2Connect(`http://127.0.0.1:${t.server.port}`);
    session.on('error', () => undefined);
    const goaway = new Promise<void>((resolve) => session.once('goaway', () => resolve()));
    await goaway;
    await new Promise<void>((resolve) =>
      session.closed ? resolve() : session.once('close', () => resolve()),
    );
    expect(session.closed).toBe(true);
  });

  it('connections beyond the ceiling are closed on accept; calls go through again once others close', async () => {
    t = await startTestServer({ connections: { maxConnections: 5, handshakeTimeoutMs: 60_000 } });
    const port = t.server.port;
    const held: Socket[] = [];
    for (let i = 0; i < 5; i += 1) held.push(await opened(port));
    // The sixth is accepted by the kernel and closed by the server at once.
    const extra = connect({ host: '127.0.0.1', port });
    extra.on('error', () => undefined);
    await closed(extra);
    const refused = await rpc(t.registry, t.registry.getStoreStatus, {});
    expect(refused.ok).toBe(false);
    for (const socket of held) socket.destroy();
    const { registry } = t;
    await eventually(async () => (await rpc(registry, registry.getStoreStatus, {})).ok, 10_000, 100);
  });

  it('announces the stream ceiling in its SETTINGS', async () => {
    t = await startTestServer({ connections: { maxStreamsPerConnection: 7 } });
    const session = http2Connect(`http://127.0.0.1:${t.server.port}`);
    const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve) =>
      session.once('remoteSettings', resolve),
    );
    expect(settings.maxConcurrentStreams).toBe(7);
    session.close();
  });
});
