// The DATA byte paths (RFC 5321 §4.5.2 transparency, §4.1.1.4 end of data).
//
// In: only CRLF.CRLF ends the data (design invariant 4); a dot that starts a line after
// a CRLF is stuffing and is removed; a dot after a bare LF or CR is content. Out: every
// bare LF or CR becomes CRLF, a dot at the start of a line is doubled, and the data ends
// with CRLF.CRLF, so no content can end or smuggle into the upstream's DATA.
//
// The decoder searches for CRLF-dot only, one search per chunk on the common path, and
// copies nothing; that search and the encoder are in C (native/dot.c): per-line work in
// JavaScript cost 2.5-5 ms per MB each way on this machine (issue 7).

import { native } from '../native.js';

const CR = 13;
const LF = 10;
const DOT = 46;
const CR_ONLY = Buffer.from('\r');
/** The encoder's flags, as native/dot.c keeps them. */
const LINE_START = 1;
const PENDING_CR = 2;

/** The decoder's states; native/pump.c numbers them alike. */
const enum In {
  Mid = 0,
  MidCR = 1,
  LineStart = 2,
  Dot = 3,
  DotCR = 4,
}

export interface Decoded {
  /** Message bytes, unstuffed; slices of the input, valid until it is reused. */
  readonly parts: Buffer[];
  /** How many input bytes were used: all of them, or up to and including the terminator. */
  readonly used: number;
  readonly done: boolean;
}

/** Unstuffs client DATA and finds its end. One instance per message. */
export class DotDecoder {
  private state = In.LineStart;

  /** Where the decoder is, for the relay thread that goes on from here. */
  get position(): number {
    return this.state;
  }

  feed(buf: Buffer): Decoded {
    const parts: Buffer[] = [];
    const len = buf.length;
    let seg = 0;
    let i = 0;
    while (i < len) {
      switch (this.state) {
        case In.Mid: {
          // Only a dot after a CRLF matters: one search per chunk on the common path.
          const j = native.findCrlfDot(buf, i);
          if (j >= 0) {
            i = j + 2;
            this.state = In.LineStart;
          } else {
            // None here; a CR or a CRLF at the very end may still begin one.
            if (buf[len - 1] === CR) this.state = In.MidCR;
            else if (len - 2 >= i && buf[len - 2] === CR && buf[len - 1] === LF) this.state = In.LineStart;
            i = len;
          }
          break;
        }
        case In.MidCR: {
          const b = buf[i++];
          this.state = b === LF ? In.LineStart : b === CR ? In.MidCR : In.Mid;
          break;
        }
        case In.LineStart: {
          const b = buf[i];
          if (b === DOT) {
            // Either stuffing or the terminator: the dot is never content.
            if (i > seg) parts.push(buf.subarray(seg, i));
            seg = ++i;
            this.state = In.Dot;
          } else {
            i++;
            this.state = b === CR ? In.MidCR : In.Mid;
          }
          break;
        }
        case In.Dot: {
          if (buf[i] === CR) {
            // Hold the CR: with an LF next it belongs to the terminator.
            seg = ++i;
            this.state = In.DotCR;
          } else {
            this.state = In.Mid;
          }
          break;
        }
        case In.DotCR: {
          if (buf[i] === LF) return { parts, used: i + 1, done: true };
          parts.push(CR_ONLY);
          this.state = In.MidCR;
          break;
        }
      }
    }
    if (len > seg && this.state !== In.DotCR) parts.push(buf.subarray(seg, len));
    return { parts, used: len, done: false };
  }
}

/** The most bytes encoding `n` bytes can give: every byte a bare LF or CR, plus a pending CR's LF. */
export const encodedMax = (n: number): number => 2 * n + 2;

/** The longest end of data (DotEncoder.end()). */
export const END_MAX = 5;

/** Stuffs a message for the upstream and normalises line endings to CRLF (native/dot.c). */
export class DotEncoder {
  /** [0]: LINE_START | PENDING_CR, carried between calls; [1]: dots added by the last call. */
  private readonly state = Int32Array.of(LINE_START, 0);
  /** The message as the upstream stores it: CRLF endings, no stuffing, no final dot line. */
  contentBytes = 0;

  /** LINE_START | PENDING_CR: where the encoder is, for the relay thread that goes on from here. */
  get flags(): number {
    return this.state[0] as number;
  }

  /** The piece, stuffed (possibly empty: a final CR waits for the next piece). */
  encode(buf: Buffer): Buffer {
    const out = Buffer.allocUnsafe(encodedMax(buf.length));
    return out.subarray(0, this.encodeInto(buf, out, 0));
  }

  /**
   * The piece, stuffed, into `out` from `at`, which must leave room for encodedMax() bytes;
   * returns how many were written.
   */
  encodeInto(buf: Buffer, out: Buffer, at: number): number {
    const n = native.dotEncode(buf, at === 0 ? out : out.subarray(at), this.state);
    this.contentBytes += n - (this.state[1] as number);
    return n;
  }

  /** The end of the data: a CRLF if the message did not end with one, then `.` CRLF. */
  end(): Buffer {
    const flags = this.state[0] as number;
    const needsCRLF = (flags & PENDING_CR) !== 0 || (flags & LINE_START) === 0;
    if (needsCRLF) this.contentBytes += 2;
    this.state[0] = LINE_START;
    return Buffer.from(needsCRLF ? '\r\n.\r\n' : '.\r\n');
  }
}
