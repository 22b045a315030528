// The Header option (proxsmtpd §16): expanded per message, then placed in the outgoing
// message: a `Received:` header first, any other just before the first blank line (the
// end of the header block), or at the end of a message that has no blank line at all
// (proxsmtpd added nothing there: bug B9).

import { zoneAbbreviation } from './zone.js';

const MAX_HEADER = 1023;
const LF = 10;
const CRLF = Buffer.from('\r\n');

export interface HeaderFacts {
  readonly clientIp: string | undefined;
  readonly localIp: string | undefined;
  readonly date: Date;
}

const pad = (n: number, width = 2, fill = '0'): string => String(Math.abs(n)).padStart(width, fill);

/** asctime() plus the UTC offset and zone: `Sun Nov 22 00:01:25 2026 +0000 (UTC)`. */
export function headerDate(d: Date): string {
  const [weekday, month] = d.toString().split(' ');
  const off = -d.getTimezoneOffset();
  const zone =
    zoneAbbreviation(d) ?? new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' }).formatToParts(d).find((p) => p.type === 'timeZoneName')?.value ?? '';
  return (
    `${weekday} ${month} ${pad(d.getDate(), 2, ' ')} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ` +
    `${d.getFullYear()} ${off < 0 ? '-' : '+'}${pad(Math.trunc(off / 60))}${pad(off % 60)} (${zone})`
  );
}

/** Expands `%i %l %d %%` and `\r \n \t \X`; an unknown `%X` is dropped and reported. */
export function expandHeader(template: string, facts: HeaderFacts, warn: (m: string) => void): string {
  let out = '';
  for (let i = 0; i < template.length; i++) {
    const c = template[i];
    const next = template[i + 1];
    if (c === '\\' && next !== undefined) {
      out += next === 'r' ? '\r' : next === 'n' ? '\n' : next === 't' ? '\t' : next;
      i++;
    } else if (c === '%' && next !== undefined) {
      i++;
      if (next === 'i') out += facts.clientIp ?? '';
      else if (next === 'l') out += facts.localIp ?? '';
      else if (next === 'd') out += headerDate(facts.date);
      else if (next === '%') out += '%';
      else warn(`invalid header symbol: %${next}`);
    } else {
      out += c;
    }
  }
  return out.slice(0, MAX_HEADER);
}

const isBlank = (b: number): boolean => b === 32 || b === 9 || b === 13;

/** Puts the header into the message as it streams past; one instance per message. */
export class HeaderInserter {
  private readonly header: Buffer;
  private readonly first: boolean;
  private done = false;
  /** Whether the current line has been nothing but blanks so far (it may be the blank line). */
  private blankSoFar = true;
  /** Such a line's bytes from earlier chunks, held back until we know what it is. */
  private held: Buffer[] = [];

  constructor(expanded: string) {
    this.header = Buffer.concat([Buffer.from(expanded, 'latin1'), CRLF]);
    this.first = /^received:/i.test(expanded);
  }

  /** In place: what follows passes untouched. */
  get inserted(): boolean {
    return this.done;
  }

  push(chunk: Buffer): Buffer[] {
    if (this.done) return [chunk];
    if (this.first) {
      this.done = true;
      return [this.header, chunk];
    }
    const out: Buffer[] = [];
    let lineBegin = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i] as number;
      if (this.blankSoFar) {
        if (b === LF) {
          // The blank line: the header goes just before it, the rest passes untouched.
          out.push(chunk.subarray(0, lineBegin), this.header, ...this.held, chunk.subarray(lineBegin));
          this.held = [];
          this.done = true;
          return out;
        }
        if (isBlank(b)) continue;
        this.blankSoFar = false;
      }
      if (b === LF) {
        this.blankSoFar = true;
        lineBegin = i + 1;
      }
    }
    if (this.held.length > 0 && !this.blankSoFar) out.push(...this.held.splice(0));
    if (this.blankSoFar) {
      out.push(chunk.subarray(0, lineBegin));
      // A copy: the chunk's buffer may be filled again before this is passed on (outgoing()).
      this.held.push(Buffer.from(chunk.subarray(lineBegin)));
    } else {
      out.push(chunk);
    }
    return out;
  }

  end(): Buffer[] {
    if (this.done) return [];
    this.done = true;
    const endsAtLineStart = this.blankSoFar && this.held.every((b) => b.length === 0);
    return [...this.held.splice(0), ...(endsAtLineStart ? [] : [CRLF]), this.header];
  }
}
