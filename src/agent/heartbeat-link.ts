// The agent's end of the Heartbeat stream: one stream at a time, opened on first use, one response
// awaited per message (in order). A broken stream fails what was waiting on it and tells the
// agent, which sends its latest state on the next stream. Opening again after a failure waits an
// exponentially growing, jittered delay (full jitter between half and all of it), so a fleet of
// agents does not reconnect in step after a control-plane restart; a success resets the delay.

import { type ServiceError, status } from '@grpc/grpc-js';
import { type BackoffOptions, backoffDelay } from '../common/backoff.js';
import type { HeartbeatRequest, HeartbeatResponse } from '../gen/cpn/v1/registry.js';

/** What the link needs of a grpc-js client duplex stream. */
export interface HeartbeatStream {
  write(message: HeartbeatRequest): boolean;
  end(): void;
  cancel(): void;
  on(event: 'data', listener: (response: HeartbeatResponse) => void): unknown;
  on(event: 'error', listener: (error: ServiceError) => void): unknown;
  on(event: 'end', listener: () => void): unknown;
}

/** Codes that say the server could not be reached (try another replica), not that it refused. */
export const UNREACHABLE_CODES: ReadonlySet<number> = new Set([
  status.UNAVAILABLE,
  status.DEADLINE_EXCEEDED,
  status.CANCELLED,
]);

export class HeartbeatUnavailableError extends Error {
  readonly code = status.UNAVAILABLE;
}

interface Waiter {
  resolve(response: HeartbeatResponse): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

export class HeartbeatLink {
  private stream: HeartbeatStream | undefined;
  private readonly waiting: Waiter[] = [];
  private failures = 0;
  private notBeforeMs = 0;
  private closed = false;
  /** The stream a goodbye went on. */
  private farewell: HeartbeatStream | undefined;
  /** Streams opened, and streams that broke, for tests and logs. */
  readonly counts = { opened: 0, broken: 0 };

  constructor(
    /** Opens a stream to the current server. */
    private readonly open: () => HeartbeatStream,
    private readonly options: BackoffOptions & {
      /** How long to wait for the response to one message before giving the stream up. */
      readonly timeoutMs: number;
      /** Told when a stream breaks (an error or an end nobody asked for) with the error's code. */
      readonly onBroken?: (code: number, message: string) => void;
    },
  ) {}

  get connected(): boolean {
    return this.stream !== undefined;
  }

  /** Sends one message on the stream (opening one if needed) and resolves with its response. */
  send(message: HeartbeatRequest): Promise<HeartbeatResponse> {
    if (this.closed) return Promise.reject(new HeartbeatUnavailableError('the heartbeat link is closed'));
    const clock = this.options.clock ?? Date.now;
    if (this.stream === undefined) {
      const waitMs = this.notBeforeMs - clock();
      if (waitMs > 0)
        return Promise.reject(
          new HeartbeatUnavailableError(`reconnecting to the control plane in ${Math.ceil(waitMs)} ms`),
        );
      this.stream = this.connect();
    }
    const stream = this.stream;
    // After a goodbye the server ends the stream with OK: that end is expected, not a break.
    if (message.goodbye !== undefined) this.farewell = stream;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.broke(stream, status.DEADLINE_EXCEEDED, `no response within ${this.options.timeoutMs} ms`);
        stream.cancel();
      }, this.options.timeoutMs);
      this.waiting.push({ resolve, reject, timer });
      stream.write(message);
    });
  }

  /** Ends the stream politely (half-close) without waiting; what is in flight still completes. */
  close(): void {
    this.closed = true;
    this.stream?.end();
  }

  private connect(): HeartbeatStream {
    const stream = this.open();
    this.counts.opened += 1;
    stream.on('data', (response) => {
      if (stream !== this.stream) return;
      const waiter = this.waiting.shift();
      if (waiter === undefined) return;
      clearTimeout(waiter.timer);
      this.failures = 0;
      waiter.resolve(response);
    });
    stream.on('error', (error) =>
      this.broke(stream, error.code ?? status.UNKNOWN, error.details ?? error.message),
    );
    stream.on('end', () => {
      if (stream === this.farewell && stream === this.stream && this.waiting.length === 0) {
        this.stream = undefined;
        return;
      }
      this.broke(stream, status.UNAVAILABLE, 'the control plane ended the stream');
    });
    return stream;
  }

  private broke(stream: HeartbeatStream, code: number, message: string): void {
    if (stream !== this.stream) return;
    this.stream = undefined;
    const error = Object.assign(new Error(message), { code, details: message }) as ServiceError;
    for (const waiter of this.waiting.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    if (this.closed) return;
    this.counts.broken += 1;
    // A refusal (unknown node, bad message) is answered by the agent at once; only failures to
    // reach the control plane back off.
    if (UNREACHABLE_CODES.has(code)) {
      this.failures += 1;
      this.notBeforeMs = (this.options.clock ?? Date.now)() + backoffDelay(this.failures, this.options);
    }
    this.options.onBroken?.(code, message);
  }
}
