// Limits on what a connection can make the server hold, whether or not it ever sends a call:
//   handshake   a connection must complete the HTTP/2 preface (client SETTINGS) within this time,
//               or it is closed: a client that opens TCP and says nothing holds nothing for long
//   idle        a connection with no call in flight for this long is closed with GOAWAY (clients
//               reconnect transparently when they next call)
//   connections at most this many open at once per listening port; more are closed on accept
//   streams     concurrent calls per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)
//   keepalive   the server pings each connection every keepaliveMs, and closes one that does not
//               answer within keepaliveTimeoutMs (a peer that vanished without closing)

import type { Http2Session } from 'node:http2';
import type { Server as NetServer, Socket } from 'node:net';
import type { ChannelOptions, Server } from '@grpc/grpc-js';
import type { Logger } from '../common/logger.js';

export interface ConnectionLimits {
  readonly handshakeTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxConnections: number;
  readonly maxStreamsPerConnection: number;
  readonly keepaliveMs: number;
  readonly keepaliveTimeoutMs: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
  maxConnections: 20_000,
  maxStreamsPerConnection: 128,
  keepaliveMs: 60_000,
  keepaliveTimeoutMs: 20_000,
};

/** The grpc-js server options that carry the limits grpc-js knows about. */
export function connectionChannelOptions(limits: ConnectionLimits): ChannelOptions {
  return {
    'grpc.max_connection_idle_ms': limits.idleTimeoutMs,
    'grpc.max_concurrent_streams': limits.maxStreamsPerConnection,
    'grpc.keepalive_time_ms': limits.keepaliveMs,
    'grpc.keepalive_timeout_ms': limits.keepaliveTimeoutMs,
  };
}

/**
 * Applies the handshake timeout and the connection ceiling to the HTTP/2 servers behind a bound
 * grpc-js server (which exposes neither). Throws if grpc-js no longer keeps them where this
 * looks, so that an upgrade cannot silently drop the limits.
 */
export function guardConnections(server: Server, limits: ConnectionLimits, logger: Logger): void {
  const servers = (server as unknown as { http2Servers?: Map<NetServer, unknown> }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) {
    throw new Error('cannot apply connection limits: grpc-js keeps its HTTP/2 servers elsewhere (upgrade?)');
  }
  for (const http2Server of servers.keys()) {
    http2Server.maxConnections = limits.maxConnections;
    let refusedSince: number | undefined;
    http2Server.on('drop', () => {
      if (refusedSince === undefined) {
        refusedSince = Date.now();
        logger.warn('refusing connections: at the ceiling', { maxConnections: limits.maxConnections });
        setTimeout(() => {
          refusedSince = undefined;
        }, 60_000).unref();
      }
    });
    // Node creates the HTTP/2 session, and emits 'session', synchronously inside its own
    // connection listener: a listener put before it sees the socket that session is about to own
    // (the session's own socket is a proxy that refuses to be closed).
    const accepted = 'setSecureContext' in http2Server ? 'secureConnection' : 'connection';
    let arriving: Socket | undefined;
    http2Server.prependListener(accepted, (socket: Socket) => {
      arriving = socket;
    });
    http2Server.on('session', (session: Http2Session) => {
      const socket = arriving;
      arriving = undefined;
      if (socket === undefined) return;
      // A plain destroy() leaves a socket whose session never started open (Node 20); a reset closes it.
      const timer = setTimeout(() => socket.resetAndDestroy(), limits.handshakeTimeoutMs);
      timer.unref();
      const clear = () => clearTimeout(timer);
      session.once('remoteSettings', clear);
      session.once('close', clear);
    });
  }
}
