// The last non-blank line a filter wrote to stderr (proxsmtpd §13.4): pieces written
// without a newline join up, surrounding whitespace is trimmed, at most 255 bytes are
// kept. Memory stays bounded whatever the filter writes: a filter that writes a gigabyte
// to stderr costs a few kilobytes here.

const MAX_KEPT = 255;
/** Enough of a line to trim leading blanks and keep 255 bytes; the rest is never needed. */
const MAX_LINE = 4096;
const LF = 10;

/** What String.prototype.trim() removes, as latin1 bytes: a line of only these is blank. */
const isBlank = (b: number): boolean => b === 32 || (b >= 9 && b <= 13) || b === 0xa0;

export class LastLine {
  private current: Buffer[] = [];
  private currentSize = 0;
  private last: string | undefined;

  /**
   * Only the last non-blank line that ends in a chunk can matter, so it is found from the
   * chunk's end: a flood of short or blank lines costs one scan per chunk, not a string per
   * line (line by line, a gigabyte of them kept the event loop busy past FilterTimeout).
   */
  write(chunk: Buffer): void {
    const lastLf = chunk.lastIndexOf(LF);
    if (lastLf < 0) {
      this.append(chunk);
      return;
    }
    let i = lastLf - 1;
    while (i >= 0 && isBlank(chunk[i] as number)) i--;
    if (i >= 0) {
      const start = chunk.lastIndexOf(LF, i) + 1;
      // A line that starts in this chunk supersedes the one held from earlier chunks.
      if (start > 0) this.discard();
      this.append(chunk.subarray(start, chunk.indexOf(LF, i)));
    }
    // With nothing but blanks up to lastLf, the held line (if any) ends here.
    this.endLine();
    this.append(chunk.subarray(lastLf + 1));
  }

  private discard(): void {
    this.current = [];
    this.currentSize = 0;
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
    this.discard();
    if (text !== '') this.last = text.slice(0, MAX_KEPT);
  }

  /** The verdict line, once the filter's stderr has ended. */
  get value(): string | undefined {
    if (this.currentSize > 0) this.endLine();
    return this.last;
  }
}
