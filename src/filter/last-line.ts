// The last non-blank line a filter wrote to stderr (proxsmtpd §13.4): pieces written
// without a newline join up, surrounding whitespace is trimmed, at most 255 bytes are
// kept. Memory stays bounded whatever the filter writes: a filter that writes a gigabyte
// to stderr costs a few kilobytes here.

const MAX_KEPT = 255;
/** Enough of a line to trim leading blanks and keep 255 bytes; the rest is never needed. */
const MAX_LINE = 4096;
const LF = 10;

export class LastLine {
  private current: Buffer[] = [];
  private currentSize = 0;
  private last: string | undefined;

  write(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const lf = chunk.indexOf(LF, start);
      this.append(chunk.subarray(start, lf < 0 ? chunk.length : lf));
      if (lf < 0) return;
      this.endLine();
      start = lf + 1;
    }
  }

  private append(piece: Buffer): void {
    const room = MAX_LINE - this.currentSize;
    if (room <= 0 || piece.length === 0) return;
    const kept = piece.length > room ? piece.subarray(0, room) : piece;
    this.current.push(Buffer.from(kept)); // a copy: the chunk's memory is not ours to keep
    this.currentSize += kept.length;
  }

  private endLine(): void {
    const text = Buffer.concat(this.current).toString('latin1').trim();
    this.current = [];
    this.currentSize = 0;
    if (text !== '') this.last = text.slice(0, MAX_KEPT);
  }

  /** The verdict line, once the filter's stderr has ended. */
  get value(): string | undefined {
    if (this.currentSize > 0) this.endLine();
    return this.last;
  }
}
