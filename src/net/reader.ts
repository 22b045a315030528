// Pull-based reading of a socket, so that protocol code reads like the conversation:
// `const line = await reader.line(...)`. Bytes are queued as they arrive; the socket is
// paused while more than HIGH_WATER bytes wait unread (backpressure to the peer).
//
// Most connections spend most of their life idle, waiting for a line (issue 7: 10,000 of
// them), so that wait is kept small: no chain of suspended async calls, no closures, one
// timer, and no queue array unless more than one chunk waits.

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

/** A line being read: what has come of it so far, and whom to tell when it is whole. */
interface LineWait {
  readonly maxBytes: number;
  readonly timeoutMs: number;
  /** The line's bytes so far; undefined until a chunk without LF arrives. */
  parts: Buffer[] | undefined;
  size: number;
  tooLong: boolean;
  head: string;
  resolve: ((r: ReadResult<LineResult>) => void) | undefined;
}

/**
 * The libuv stream under a net.Socket (Node's own `pause()` stops it this way when it reads
 * into a buffer of the caller's): `reading` is Node's note of whether readStart is in force.
 */
interface StreamHandle {
  readonly fd?: number;
  reading?: boolean;
  readStop(): number;
  readStart(): number;
}

function handleOf(socket: Socket): StreamHandle | undefined {
  return (socket as unknown as { _handle?: StreamHandle | null })._handle ?? undefined;
}

/** The socket's descriptor, if it has one (a TCP or unix socket Node still holds). */
export function descriptorOf(socket: Socket): number | undefined {
  const fd = handleOf(socket)?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** A wait for a chunk (chunk()): resolves true on timeout. */
type ChunkWait = (timedOut: boolean) => void;

/**
 * The socket's listeners are shared by all readers (they find theirs on the socket), so
 * a reader costs no closures.
 */
const READER = Symbol('SocketReader');
type ReaderSocket = Socket & { [READER]?: SocketReader };

function onData(this: ReaderSocket, chunk: Buffer): void {
  this[READER]?.onSocketData(chunk);
}

function onEnd(this: ReaderSocket): void {
  this[READER]?.onSocketEnd();
}

function onTimeout(reader: SocketReader): void {
  reader.onTimer();
}

export class SocketReader {
  /** The first chunk waiting; further ones in `more` (only when more than one waits). */
  private first: Buffer | undefined;
  private more: Buffer[] | undefined;
  private queued = 0;
  private ended = false;
  private lineWait: LineWait | undefined;
  private chunkWait: ChunkWait | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly socket: Socket) {
    (socket as ReaderSocket)[READER] = this;
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.on('error', onEnd);
  }

  /** A chunk from the socket (its 'data' listener). */
  onSocketData(chunk: Buffer): void {
    if (this.first === undefined) this.first = chunk;
    else (this.more ??= []).push(chunk);
    this.queued += chunk.length;
    if (this.queued > HIGH_WATER) this.socket.pause();
    this.wake(false);
  }

  /** The socket's 'end', 'close' or 'error'. */
  onSocketEnd(): void {
    this.ended = true;
    this.wake(false);
  }

  /** Called by the timer. */
  onTimer(): void {
    this.timer = undefined;
    this.wake(true);
  }

  private wake(timedOut: boolean): void {
    const w = this.lineWait;
    // A chunk wait ends with any data. A line has one deadline, from when it was awaited:
    // bytes that trickle in do not put it off, so a peer sending a byte a second (slowloris)
    // cannot hold a connection past TimeOut with a line that never ends.
    if (this.timer !== undefined && !timedOut && w === undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const c = this.chunkWait;
    if (c !== undefined) {
      this.chunkWait = undefined;
      c(timedOut);
    }
    if (w === undefined) return;
    const r = this.scanLine(w);
    if (r === undefined && !timedOut) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.lineWait = undefined;
    const resolve = w.resolve;
    w.resolve = undefined;
    resolve?.(r ?? 'timeout');
  }

  private arm(timeoutMs: number): void {
    this.timer = setTimeout(onTimeout, timeoutMs, this);
  }

  /** Whether unread bytes are waiting (e.g. pipelined commands). */
  get pending(): boolean {
    return this.queued > 0;
  }

  get isEnded(): boolean {
    return this.ended && this.queued === 0;
  }

  private shift(): Buffer | undefined {
    const chunk = this.first;
    if (chunk === undefined) return undefined;
    this.first = this.more?.shift();
    if (this.more !== undefined && this.more.length === 0) this.more = undefined;
    this.queued -= chunk.length;
    if (this.queued <= HIGH_WATER && this.socket.isPaused()) this.socket.resume();
    return chunk;
  }

  /** The next chunk of bytes, as it came from the socket. */
  async chunk(timeoutMs: number): Promise<ReadResult<Buffer>> {
    for (;;) {
      const chunk = this.shift();
      if (chunk !== undefined) return chunk;
      if (this.ended) return 'eof';
      const timedOut = await new Promise<boolean>((resolve) => {
        this.chunkWait = resolve;
        this.arm(timeoutMs);
      });
      if (timedOut && this.queued === 0 && !this.ended) return 'timeout';
    }
  }

  /**
   * Lends the socket's reading to the addon's relay thread: libuv stops reading it, and the
   * bytes read but not yet taken are handed over. Undefined when that cannot be done now:
   * no descriptor, input over, or bytes in the stream's own buffer (the socket is paused).
   */
  lend(): { readonly fd: number; readonly queued: Buffer } | undefined {
    const h = handleOf(this.socket);
    const fd = descriptorOf(this.socket);
    if (h === undefined || fd === undefined || this.ended || h.reading !== true) return undefined;
    if (this.socket.readableFlowing !== true || this.socket.readableLength > 0) return undefined;
    if (h.readStop() !== 0) return undefined;
    h.reading = false;
    const parts: Buffer[] = [];
    for (let c = this.shift(); c !== undefined; c = this.shift()) parts.push(c);
    return { fd, queued: parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts) };
  }

  /** Reads the socket again after lend(), `leftover` first (what the relay read too far). */
  takeBack(leftover: Buffer): void {
    this.unshift(leftover);
    const h = handleOf(this.socket);
    if (h === undefined || this.socket.destroyed || h.reading !== false) return;
    h.reading = true;
    const err = h.readStart();
    if (err !== 0) this.socket.destroy(new Error(`restarting to read the socket failed (${err})`));
  }

  /** Gives back bytes read too far (e.g. commands pipelined after the end of DATA). */
  unshift(buf: Buffer): void {
    if (buf.length === 0) return;
    if (this.first !== undefined) (this.more ??= []).unshift(this.first);
    this.first = buf;
    this.queued += buf.length;
  }

  /**
   * The next line, up to LF. A line of `maxBytes` or more (line ending included) is read
   * to its end and reported as too long. `timeoutMs` bounds the wait for the whole line.
   */
  line(maxBytes: number, timeoutMs: number): Promise<ReadResult<LineResult>> {
    const w: LineWait = { maxBytes, timeoutMs, parts: undefined, size: 0, tooLong: false, head: '', resolve: undefined };
    const r = this.scanLine(w);
    if (r !== undefined) return Promise.resolve(r);
    return new Promise((resolve) => {
      w.resolve = resolve;
      this.lineWait = w;
      this.arm(timeoutMs);
    });
  }

  /** Takes the queued chunks into `w`: the result, or undefined while the line is not whole yet. */
  private scanLine(w: LineWait): ReadResult<LineResult> | undefined {
    for (;;) {
      const chunk = this.shift();
      // A last line without LF before EOF is dropped: it was never a whole command.
      if (chunk === undefined) return this.ended ? 'eof' : undefined;
      const lf = chunk.indexOf(LF);
      const end = lf < 0 ? chunk.length : lf + 1;
      if (lf >= 0 && w.parts === undefined && !w.tooLong && end < w.maxBytes) {
        // The usual case: the whole line in one chunk.
        this.unshift(chunk.subarray(end));
        return lineOf(chunk.toString('latin1', 0, end));
      }
      if (!w.tooLong) {
        (w.parts ??= []).push(lf < 0 ? chunk : chunk.subarray(0, end));
        w.size += end;
        if (w.size >= w.maxBytes) {
          w.tooLong = true;
          w.head = Buffer.concat(w.parts).subarray(0, w.maxBytes - 2).toString('latin1');
          w.parts = undefined;
        }
      }
      if (lf >= 0) {
        this.unshift(chunk.subarray(end));
        if (w.tooLong) return { kind: 'toolong', head: w.head };
        const parts = w.parts ?? [];
        return lineOf((parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts)).toString('latin1'));
      }
    }
  }
}

function lineOf(raw: string): LineResult {
  const text = raw.endsWith('\r\n') ? raw.slice(0, -2) : raw.slice(0, -1);
  return { kind: 'line', text, raw };
}
