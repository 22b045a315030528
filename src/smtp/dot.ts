// The DATA byte paths (RFC 5321 §4.5.2 transparency, §4.1.1.4 end of data).
//
// In: only CRLF.CRLF ends the data (design invariant 4); a dot that starts a line after
// a CRLF is stuffing and is removed; a dot after a bare LF or CR is content. Out: every
// bare LF or CR becomes CRLF, a dot at the start of a line is doubled, and the data ends
// with CRLF.CRLF, so no content can end or smuggle into the upstream's DATA.
//
// Both scan with indexOf and copy nothing on the common path (CRLF lines, no dots).

const CR = 13;
const LF = 10;
const DOT = 46;
const CRLF = Buffer.from('\r\n');
const CR_ONLY = Buffer.from('\r');
const DOT_ONLY = Buffer.from('.');

const enum In {
  Mid,
  MidCR,
  LineStart,
  Dot,
  DotCR,
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

  feed(buf: Buffer): Decoded {
    const parts: Buffer[] = [];
    const len = buf.length;
    let seg = 0;
    let i = 0;
    while (i < len) {
      switch (this.state) {
        case In.Mid: {
          const j = buf.indexOf(CR, i);
          if (j < 0) i = len;
          else {
            i = j + 1;
            this.state = In.MidCR;
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

/** Stuffs a message for the upstream and normalises line endings to CRLF. */
export class DotEncoder {
  private lineStart = true;
  private pendingCR = false;
  /** The message as the upstream stores it: CRLF endings, no stuffing, no final dot line. */
  contentBytes = 0;

  encode(buf: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let stuffed = 0;
    const len = buf.length;
    let seg = 0;
    let i = 0;
    if (this.pendingCR && len > 0) {
      this.pendingCR = false;
      out.push(CRLF);
      this.lineStart = true;
      if (buf[0] === LF) seg = i = 1;
    }
    let nextCR = -2;
    let nextLF = -2;
    while (i < len) {
      if (this.lineStart && buf[i] === DOT) {
        if (i > seg) out.push(buf.subarray(seg, i));
        out.push(DOT_ONLY);
        stuffed++;
        seg = i;
      }
      this.lineStart = false;
      if (nextCR !== -1 && nextCR < i) nextCR = buf.indexOf(CR, i);
      if (nextLF !== -1 && nextLF < i) nextLF = buf.indexOf(LF, i);
      const j = nextCR < 0 ? nextLF : nextLF < 0 ? nextCR : Math.min(nextCR, nextLF);
      if (j < 0) break;
      if (buf[j] === LF) {
        // A bare LF (a CRLF is consumed at its CR below).
        if (j > seg) out.push(buf.subarray(seg, j));
        out.push(CRLF);
        seg = i = j + 1;
      } else if (j + 1 === len) {
        if (j > seg) out.push(buf.subarray(seg, j));
        seg = i = len;
        this.pendingCR = true;
        return this.counted(out, stuffed);
      } else if (buf[j + 1] === LF) {
        i = j + 2;
      } else {
        if (j > seg) out.push(buf.subarray(seg, j));
        out.push(CRLF);
        seg = i = j + 1;
      }
      this.lineStart = true;
    }
    if (len > seg) out.push(buf.subarray(seg, len));
    return this.counted(out, stuffed);
  }

  private counted(out: Buffer[], stuffed: number): Buffer[] {
    for (const b of out) this.contentBytes += b.length;
    this.contentBytes -= stuffed;
    return out;
  }

  /** The end of the data: a CRLF if the message did not end with one, then `.` CRLF. */
  end(): Buffer {
    const needsCRLF = this.pendingCR || !this.lineStart;
    if (needsCRLF) this.contentBytes += 2;
    this.pendingCR = false;
    this.lineStart = true;
    return Buffer.from(needsCRLF ? '\r\n.\r\n' : '.\r\n');
  }
}
