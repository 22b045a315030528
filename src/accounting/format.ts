// LogFormat rendering (issue 6, "Configuration"; Moxy's log_format and log_dateformat,
// reference/moxy-setup.txt, logging section), and the reverse: a parser built from the
// same format, for `smtpsift logalyze`.
//
// A token is `%` and the longest token name that starts there, as Moxy's textual
// replacement did: `%durationms` is `%duration` then `ms`. When no token name starts there,
// the run of letters is the unknown token the start-up error names (`%bogus`).

import type { MessageEvent } from './event.js';
import { utf8Display } from '../smtp/utf8.js';

/** Moxy's own example (moxy-setup.txt): the default LogFormat. */
export const DEFAULT_LOG_FORMAT = "%date: %msize bytes from <%sender> [%shost] to [%dhost] for '%rcpts'";
/** Moxy's log_dateformat example: the default LogDateFormat. */
export const DEFAULT_DATE_FORMAT = '%d/%m/%y %T %z';

export const TOKENS = ['date', 'msize', 'sender', 'shost', 'dhost', 'rcpts', 'status', 'reply', 'id', 'helo', 'nrcpts', 'duration'] as const;
export type Token = (typeof TOKENS)[number];

type Piece = { readonly literal: string } | { readonly token: Token };

export class FormatError extends Error {
  override readonly name = 'FormatError';
}

/** Splits a LogFormat into literals and tokens; throws FormatError naming the first bad token. */
export function parseLogFormat(format: string): Piece[] {
  const pieces: Piece[] = [];
  let literal = '';
  for (let i = 0; i < format.length; i++) {
    const c = format[i];
    if (c !== '%') {
      literal += c;
      continue;
    }
    if (format[i + 1] === '%') {
      literal += '%';
      i++;
      continue;
    }
    const rest = format.slice(i + 1);
    const letters = /^[A-Za-z]+/.exec(rest)?.[0];
    if (letters === undefined) throw new FormatError(`a lone '%' at position ${i + 1}; write %% for a percent sign`);
    const name = [...TOKENS].sort((a, b) => b.length - a.length).find((t) => rest.startsWith(t));
    if (name === undefined) {
      throw new FormatError(`unknown token %${letters}; known: ${TOKENS.map((t) => `%${t}`).join(' ')} %%`);
    }
    if (literal !== '') pieces.push({ literal });
    literal = '';
    pieces.push({ token: name });
    i += name.length;
  }
  if (literal !== '') pieces.push({ literal });
  return pieces;
}

/** For the LogFormat schema row: the problem, or undefined when the format is good. */
export function validateLogFormat(format: string): string | undefined {
  try {
    parseLogFormat(format);
    return undefined;
  } catch (e) {
    if (e instanceof FormatError) return e.message;
    throw e;
  }
}

/**
 * An untrusted value (HELO, addresses, the upstream's reply text) as it goes in a line.
 * The event holds protocol text, one character per byte: decoded as UTF-8, so that the
 * line (written as UTF-8) carries the client's own bytes for an SMTPUTF8 address, never a
 * re-encoding of them; bytes that are not UTF-8 become '?'. A line must stay one line
 * whatever the client sent: control characters (C0, DEL, C1) and the Unicode line and
 * paragraph separators become '?' too. No length cap, so that logalyze can read every
 * field back.
 */
function clean(value: string): string {
  return utf8Display(value).replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]/g, '?');
}

function field(token: Token, e: MessageEvent, dateFormat: string): string {
  switch (token) {
    case 'date':
      return strftime(dateFormat, e.date);
    case 'msize':
      return String(e.size);
    case 'sender':
      return clean(e.sender);
    case 'shost':
      return clean(e.clientIp.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, ''));
    case 'dhost':
      return clean(e.destination);
    case 'rcpts':
      return clean(e.recipients.join(','));
    case 'status':
      return e.status;
    case 'reply':
      return clean(e.reply.replace(/\r?\n$/, '').split(/\r?\n/).pop() ?? '');
    case 'id':
      return clean(e.id);
    case 'helo':
      return clean(e.helo);
    case 'nrcpts':
      return String(e.recipients.length);
    case 'duration':
      return String(Math.round(e.durationMs));
  }
}

export type Renderer = (event: MessageEvent) => string;

/** Compiles a LogFormat once (start-up) into a renderer; throws FormatError on a bad token. */
export function compileLogFormat(format: string, dateFormat = DEFAULT_DATE_FORMAT): Renderer {
  const pieces = parseLogFormat(format);
  const bad = validateDateFormat(dateFormat);
  if (bad !== undefined) throw new FormatError(bad);
  return (event) => pieces.map((p) => ('literal' in p ? p.literal : field(p.token, event, dateFormat))).join('');
}

// ---------------------------------------------------------------------------------------
// Parsing log lines back (logalyze).

/** What each token can look like in a line; the date is free text (any LogDateFormat). */
const TOKEN_PATTERN: Record<Token, string> = {
  date: '.*?',
  msize: '\\d+',
  sender: '[^\\s]*?',
  shost: '[0-9A-Fa-f:.]*',
  dhost: '[^\\s]*?',
  rcpts: '[^\\s]*?',
  status: '[a-z]+',
  reply: '.*?',
  id: '[^\\s]*?',
  helo: '.*?',
  nrcpts: '\\d+',
  duration: '\\d+',
};

export type ParsedLine = Partial<Record<Token, string>>;

export interface LineParser {
  readonly tokens: ReadonlySet<Token>;
  parse(line: string): ParsedLine | undefined;
}

/** A parser for lines written with `format`: each token becomes a named capture group. */
export function logLineParser(format: string): LineParser {
  const pieces = parseLogFormat(format);
  const tokens = new Set<Token>();
  let source = '';
  for (const p of pieces) {
    if ('literal' in p) {
      source += p.literal.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    } else if (tokens.has(p.token)) {
      // A token used twice: the first occurrence captures, the rest must look alike.
      source += `(?:${TOKEN_PATTERN[p.token]})`;
    } else {
      tokens.add(p.token);
      source += `(?<${p.token}>${TOKEN_PATTERN[p.token]})`;
    }
  }
  const re = new RegExp(`^${source}$`);
  return {
    tokens,
    parse(line) {
      const m = re.exec(line);
      return m === null ? undefined : { ...m.groups };
    },
  };
}

// ---------------------------------------------------------------------------------------
// A small strftime (the conversions log formats use), in local time unless utc is set.

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const CONVERSIONS = new Set('aAbBdeHIjmMpSTyYzZFDRsnt%');

function pad(n: number, width = 2, fill = '0'): string {
  return String(n).padStart(width, fill);
}

interface Parts {
  year: number;
  month: number;
  day: number;
  weekday: number;
  hour: number;
  minute: number;
  second: number;
  /** Minutes east of UTC. */
  offset: number;
}

function parts(d: Date, utc: boolean): Parts {
  return utc
    ? { year: d.getUTCFullYear(), month: d.getUTCMonth(), day: d.getUTCDate(), weekday: d.getUTCDay(), hour: d.getUTCHours(), minute: d.getUTCMinutes(), second: d.getUTCSeconds(), offset: 0 }
    : { year: d.getFullYear(), month: d.getMonth(), day: d.getDate(), weekday: d.getDay(), hour: d.getHours(), minute: d.getMinutes(), second: d.getSeconds(), offset: -d.getTimezoneOffset() };
}

function zoneName(d: Date, utc: boolean): string {
  if (utc) return 'UTC';
  const name = new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' }).formatToParts(d).find((p) => p.type === 'timeZoneName')?.value;
  return name ?? '';
}

/** For the LogDateFormat schema row: the problem, or undefined. */
export function validateDateFormat(format: string): string | undefined {
  for (let i = 0; i < format.length; i++) {
    if (format[i] !== '%') continue;
    const c = format[i + 1];
    if (c === undefined) return "a lone '%' at the end; write %% for a percent sign";
    if (!CONVERSIONS.has(c)) return `unknown conversion %${c}; known: ${[...CONVERSIONS].map((x) => `%${x}`).join(' ')}`;
    i++;
  }
  return undefined;
}

/** strftime(3) for %a %A %b %B %d %e %H %I %j %m %M %p %S %T %y %Y %z %Z %F %D %R %s %n %t %%. */
export function strftime(format: string, date: Date, options: { utc?: boolean } = {}): string {
  const utc = options.utc ?? false;
  const p = parts(date, utc);
  let out = '';
  for (let i = 0; i < format.length; i++) {
    const c = format[i];
    if (c !== '%' || i + 1 >= format.length) {
      out += c;
      continue;
    }
    const conv = format[++i];
    switch (conv) {
      case 'a': out += (DAYS[p.weekday] ?? '').slice(0, 3); break;
      case 'A': out += DAYS[p.weekday] ?? ''; break;
      case 'b': out += (MONTHS[p.month] ?? '').slice(0, 3); break;
      case 'B': out += MONTHS[p.month] ?? ''; break;
      case 'd': out += pad(p.day); break;
      case 'e': out += pad(p.day, 2, ' '); break;
      case 'H': out += pad(p.hour); break;
      case 'I': out += pad(p.hour % 12 === 0 ? 12 : p.hour % 12); break;
      case 'j': out += pad(dayOfYear(p), 3); break;
      case 'm': out += pad(p.month + 1); break;
      case 'M': out += pad(p.minute); break;
      case 'p': out += p.hour < 12 ? 'AM' : 'PM'; break;
      case 'S': out += pad(p.second); break;
      case 'T': out += `${pad(p.hour)}:${pad(p.minute)}:${pad(p.second)}`; break;
      case 'y': out += pad(p.year % 100); break;
      case 'Y': out += String(p.year); break;
      case 'z': {
        const a = Math.abs(p.offset);
        out += `${p.offset < 0 ? '-' : '+'}${pad(Math.floor(a / 60))}${pad(a % 60)}`;
        break;
      }
      case 'Z': out += zoneName(date, utc); break;
      case 'F': out += `${p.year}-${pad(p.month + 1)}-${pad(p.day)}`; break;
      case 'D': out += `${pad(p.month + 1)}/${pad(p.day)}/${pad(p.year % 100)}`; break;
      case 'R': out += `${pad(p.hour)}:${pad(p.minute)}`; break;
      case 's': out += String(Math.floor(date.getTime() / 1000)); break;
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case '%': out += '%'; break;
      default: out += `%${conv ?? ''}`; // unknown: kept as written (validateDateFormat refuses it at start-up)
    }
  }
  return out;
}

function dayOfYear(p: Parts): number {
  return Math.round((Date.UTC(p.year, p.month, p.day) - Date.UTC(p.year, 0, 1)) / 86_400_000) + 1;
}
