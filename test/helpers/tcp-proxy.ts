// A TCP proxy for fault injection between cpn and etcd, on loopback:
//   pause()    holds every byte in both directions (a partition: TCP keeps the connections, nothing
//              arrives); new connections are accepted and held too
//   resume()   delivers what was held, in order, and forwards again
//   drop()     resets every connection and refuses new ones until resume()
//   delay(ms)  delays every chunk by `ms` (0: none)
// Bytes held while paused are bounded (16 MiB per direction per connection; beyond it the
// connection is reset, as a real network would eventually give up).

import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  /** host:port to connect to instead of the target. */
  readonly address: string;
  pause(): void;
  resume(): void;
  drop(): void;
  delay(ms: number): void;
  /** Connections currently open through the proxy. */
  connections(): number;
  close(): Promise<void>;
}

const MAX_HELD_BYTES = 16 * 1024 * 1024;

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  let paused = false;
  let dropping = false;
  let delayMs = 0;
  let resumed: { promise: Promise<void>; resolve: () => void } | undefined;
  const sockets = new Set<Socket>();

  const gate = (): Promise<void> | undefined => (paused ? resumed?.promise : undefined);

  /** Forwards `from` to `to` through the gate, in order. */
  const forward = (from: Socket, to: Socket) => {
    let chain: Promise<void> = Promise.resolve();
    let held = 0;
    from.on('data', (chunk: Buffer) => {
      held += chunk.length;
      if (held > MAX_HELD_BYTES) {
        from.destroy();
        to.destroy();
        return;
      }
      chain = chain.then(async () => {
        await gate();
        if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
        held -= chunk.length;
        if (!to.destroyed) to.write(chunk);
      });
    });
    from.on('end', () => {
      chain = chain.then(async () => {
        await gate();
        to.end();
      });
    });
  };

  const server: Server = createServer((client) => {
    if (dropping) {
      client.resetAndDestroy();
      return;
    }
    const upstream = createConnection({ host: targetHost, port: targetPort });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;

  return {
    address: `127.0.0.1:${port}`,
    pause() {
      if (paused) return;
      paused = true;
      let resolve: () => void = () => {};
      const promise = new Promise<void>((done) => {
        resolve = done;
      });
      resumed = { promise, resolve };
    },
    resume() {
      paused = false;
      dropping = false;
      resumed?.resolve();
      resumed = undefined;
    },
    drop() {
      dropping = true;
      for (const socket of sockets) socket.resetAndDestroy();
    },
    delay(ms: number) {
      delayMs = ms;
    },
    connections: () => sockets.size / 2,
    close() {
      paused = false;
      resumed?.resolve();
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
