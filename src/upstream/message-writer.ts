// A message on its way to the upstream, after its DATA got 354: dot-stuffed with CRLF
// endings (design invariant 4) into buffers that deliveries share, written as they fill,
// and ended with the last piece and CRLF.CRLF in one write (invariant 7).

import { DotEncoder, encodedMax, END_MAX } from '../smtp/dot.js';
import { READ_CHUNK } from '../filter/outgoing.js';
import type { Upstream } from './upstream.js';

/**
 * The buffers one delivery fills again and again: `read` for a spool file's pieces, `out`
 * for their stuffed form, which has room for a whole piece however it grows, and the end
 * of data. Taken from a small pool and given back, so that a large message costs no buffer
 * per piece (issue 7: a buffer per piece, each at least glibc's 128 KiB mmap threshold,
 * was an mmap, page faults and an munmap with a TLB shootdown every 256 KiB of message).
 */
interface Scratch {
  readonly read: Buffer;
  readonly out: Buffer;
}

const OUT_SIZE = encodedMax(READ_CHUNK) + END_MAX;
const idle: Scratch[] = [];
/** Idle sets kept for the next deliveries; more are made when more deliver at once. */
const IDLE_MAX = 8;

export class MessageWriter {
  /** Also counts what the upstream stores (the accounting's %msize). */
  private readonly encoder = new DotEncoder();
  private readonly scratch: Scratch = idle.pop() ?? { read: Buffer.allocUnsafeSlow(READ_CHUNK), out: Buffer.allocUnsafeSlow(OUT_SIZE) };
  /** Stuffed bytes in `out` not yet written. */
  private used = 0;
  private released = false;

  constructor(private readonly upstream: Upstream) {}

  /** A buffer to read the message's next piece into; the piece must be put before the next read. */
  get readBuffer(): Buffer {
    return this.scratch.read;
  }

  /** The encoder's flags, for the relay thread that goes on from here (native/pump.c). */
  get encoderFlags(): number {
    return this.encoder.flags;
  }

  /** The message's size as the upstream stores it (unstuffed, with CRLF endings). */
  get contentBytes(): number {
    return this.encoder.contentBytes;
  }

  /** Stuffs a piece of the message, writing what came before it when it might not fit. */
  async put(chunk: Buffer): Promise<void> {
    const out = this.scratch.out;
    for (let at = 0; at < chunk.length; at += READ_CHUNK) {
      const piece = chunk.subarray(at, at + READ_CHUNK);
      if (this.used + encodedMax(piece.length) + END_MAX > out.length) await this.flush();
      this.used += this.encoder.encodeInto(piece, out, this.used);
    }
  }

  /** Writes what is stuffed so far; resolves once the kernel has all of it (`out` is free again). */
  async flush(): Promise<void> {
    const n = this.used;
    if (n === 0) return;
    this.used = 0;
    await this.upstream.writeOut(this.scratch.out.subarray(0, n));
  }

  /**
   * The end of data, in one write with what is left. Only then are the buffers given back:
   * after a failed write they are dropped, as the socket may still hold `out`.
   */
  async end(): Promise<void> {
    this.used += this.encoder.end().copy(this.scratch.out, this.used);
    await this.flush();
    this.release();
  }

  /** The buffers back to the pool, once all is written: at the end, or when the message goes on elsewhere. */
  release(): void {
    if (this.released || this.used !== 0) return;
    this.released = true;
    if (idle.length < IDLE_MAX) idle.push(this.scratch);
  }
}
