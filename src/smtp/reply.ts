// SMTP replies (RFC 5321 §4.2). Protocol text is handled as latin1 strings throughout, a
// 1:1 mapping of bytes, so whatever an upstream says reaches the client byte for byte.

export interface Reply {
  readonly code: number;
  /** Each line's text after `ddd-` / `ddd `, without its line ending. */
  readonly lines: readonly string[];
  /** The reply exactly as it goes on the wire, every line ending included. */
  readonly wire: string;
}

/** Formats a reply of our own: `ddd-text` lines, the last one `ddd text`, CRLF endings. */
export function reply(code: number, ...lines: string[]): Reply {
  const texts = lines.length === 0 ? [''] : lines;
  const wire = texts
    .map((t, i) => `${code}${i === texts.length - 1 ? (t === '' ? '' : ' ') : '-'}${t}\r\n`)
    .join('');
  return { code, lines: texts, wire };
}

export const isPositive = (r: Reply): boolean => r.code >= 200 && r.code < 400;
export const isSuccess = (r: Reply): boolean => r.code >= 200 && r.code < 300;

/** The first line, for logs. */
export function summary(r: Reply): string {
  return `${r.code} ${r.lines[0] ?? ''}`.trimEnd();
}

/**
 * Collects reply lines into whole replies. A line is `ddd`, `ddd text`, `ddd<TAB>text` or
 * `ddd-text`; the reply ends at the first line without a `-`. Returns undefined until the
 * reply is complete.
 *
 * RFC 5321 §4.2 puts an SP after the code, but proxsmtpd takes any whitespace there (spec
 * §6: `220<TAB>host` is a greeting it rewrites) and relays a `250<TAB>ok` as it came, so a
 * TAB is a last line's separator too: refusing it ended sessions that proxsmtpd served
 * (audit D6). The line's bytes (`wire`) are kept as they came either way.
 */
export class ReplyAssembler {
  private wire = '';
  private texts: string[] = [];
  private code = 0;

  constructor(private readonly maxLines: number) {}

  /** `line` is one line with its ending (`raw`) and without it (`text`). */
  push(raw: string, text: string): Reply | undefined {
    const m = /^([2-5]\d\d)([ \t-]|$)/.exec(text);
    if (m === null) throw new ProtocolError(`malformed reply line '${text.slice(0, 80)}'`);
    const code = Number(m[1]);
    if (this.texts.length > 0 && code !== this.code) {
      throw new ProtocolError(`reply code changed within a multi-line reply ('${text.slice(0, 80)}')`);
    }
    this.code = code;
    this.wire += raw;
    this.texts.push(text.slice(4));
    if (m[2] === '-') {
      if (this.texts.length >= this.maxLines) throw new ProtocolError('reply has too many lines');
      return undefined;
    }
    const done: Reply = { code, lines: this.texts, wire: this.wire };
    this.wire = '';
    this.texts = [];
    return done;
  }
}

/** The peer broke the protocol; the session cannot go on with it. */
export class ProtocolError extends Error {}
