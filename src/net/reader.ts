// Pull-based reading of a socket, so that protocol code reads like the conversation:
// `const line = await reader.line(...)`. Bytes are queued as they arrive; the socket is
// paused while more than HIGH_WATER bytes wait unread (backpressure to the peer).

import type { Socket } from 'node:net';

const HIGH_WATER = 64 * 1024;
const LF = 10;

export type ReadResult<T> = T | 'eof' | 'timeout';

export type LineResult =
  /** `text` without its line ending; `raw` with it; both latin1. */
  | { readonly kind: 'line'; readonly text: string; readonly raw: string }
  /**
   * The line reached the limit without an LF; it was read to its end and discarded but for
   * `head`, its first `maxBytes - 2` bytes (latin1), for readers that cut rather than refuse.
   */
  | { readonly kind: 'toolong'; readonly head: string };

export class SocketReader {
  private queue: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private waiter: (() => void) | undefined;

  constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      this.queued += chunk.length;
      if (this.queued > HIGH_WATER) socket.pause();
      this.wake();
    });
    const end = (): void => {
      this.ended = true;
      this.wake();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Whether unread bytes are waiting (e.g. pipelined commands). */
  get pending(): boolean {
    return this.queued > 0;
  }

  get isEnded(): boolean {
    return this.ended && this.queued === 0;
  }

  /** The next chunk of bytes, as it came from the socket. */
  async chunk(timeoutMs: number): Promise<ReadResult<Buffer>> {
    if (this.queued === 0) {
      if (this.ended) return 'eof';
      const timedOut = await this.wait(timeoutMs);
      if (this.queued === 0) return this.ended ? 'eof' : timedOut ? 'timeout' : this.chunk(timeoutMs);
    }
    const chunk = this.queue.shift() as Buffer;
    this.queued -= chunk.length;
    if (this.queued <= HIGH_WATER && this.socket.isPaused()) this.socket.resume();
    return chunk;
  }

  /** Gives back bytes read too far (e.g. commands pipelined after the end of DATA). */
  unshift(buf: Buffer): void {
    if (buf.length === 0) return;
    this.queue.unshift(buf);
    this.queued += buf.length;
  }

  /** Resolves true on timeout, false when something happened. */
  private wait(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve(true);
      }, timeoutMs);
      this.waiter = () => {
        clearTimeout(timer);
        resolve(false);
      };
    });
  }

  /**
   * The next line, up to LF. A line of `maxBytes` or more (line ending included) is read
   * to its end and reported as too long. `timeoutMs` bounds the wait for each chunk.
   */
  async line(maxBytes: number, timeoutMs: number): Promise<ReadResult<LineResult>> {
    const parts: Buffer[] = [];
    let size = 0;
    let tooLong = false;
    let head = '';
    for (;;) {
      const chunk = await this.chunk(timeoutMs);
      if (typeof chunk === 'string') {
        // A last line without LF before EOF is dropped: it was never a whole command.
        return chunk;
      }
      const lf = chunk.indexOf(LF);
      const end = lf < 0 ? chunk.length : lf + 1;
      if (!tooLong) {
        parts.push(lf < 0 ? chunk : chunk.subarray(0, end));
        size += end;
        if (size >= maxBytes) {
          tooLong = true;
          head = Buffer.concat(parts).subarray(0, maxBytes - 2).toString('latin1');
          parts.length = 0;
        }
      }
      if (lf >= 0) {
        this.unshift(chunk.subarray(end));
        if (tooLong) return { kind: 'toolong', head };
        const raw = (parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts)).toString('latin1');
        const text = raw.endsWith('\r\n') ? raw.slice(0, -2) : raw.slice(0, -1);
        return { kind: 'line', text, raw };
      }
    }
  }
}
