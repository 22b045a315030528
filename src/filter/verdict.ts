// What the client is told at the end of DATA, from how the filter ended (proxsmtpd(8)
// FILTER SCRIPTS; spec §13.4). Anything that is our failure or a crash is 451, never 5xx.

import { reply, type Reply } from '../smtp/reply.js';

export type FilterEnd =
  | { readonly kind: 'exit'; readonly code: number; readonly lastLine: string | undefined }
  /** Killed by a signal, timed out, could not be started: the filter never decided. */
  | { readonly kind: 'crash'; readonly why: string };

export type Verdict =
  | { readonly action: 'accept' }
  | { readonly action: 'reject' | 'drop' | 'tempfail'; readonly reply: Reply; readonly why: string };

export const LOCAL_ERROR = reply(451, 'Local Error');

/**
 * The line starts with an SMTP code: exactly three digits, then a space, a dash or the end
 * (proxsmtpd's strtol test; `5.7.1 x`, `2501 x` and `000 x` have no code). Only codes
 * that can end a DATA count: a 1xx or 3xx would leave the client waiting, so such a line
 * is text like any other.
 */
function codeOf(line: string): number | undefined {
  const m = /^([245]\d\d)(?:[ -]|$)/.exec(line);
  return m ? Number(m[1]) : undefined;
}

/**
 * Exit statuses that say the filter never ran to a decision: dash and bash report a child
 * killed by signal n as 128+n, and 126/127 mean the command could not be executed or found
 * (a broken installation must defer mail, not bounce it as proxsmtpd did).
 */
const isCrashStatus = (code: number): boolean => code === 126 || code === 127 || (code > 128 && code <= 128 + 64);

export function verdictOf(end: FilterEnd): Verdict {
  if (end.kind === 'crash') return { action: 'tempfail', reply: LOCAL_ERROR, why: end.why };
  if (end.code === 0) return { action: 'accept' };
  const line = end.lastLine;
  if ((line === undefined || codeOf(line) === undefined) && isCrashStatus(end.code)) {
    // E.g. the program under sh -c was killed (dash says "Killed"): a crash, not a verdict.
    return { action: 'tempfail', reply: LOCAL_ERROR, why: `filter failed (exit ${end.code}${line ? `: ${line}` : ''})` };
  }
  const r = rejection(line ?? 'Content Rejected');
  // The filter's own reply, verbatim; a 250 (any 2xx) is a silent drop.
  const action = r.code < 300 ? 'drop' : r.code < 500 ? 'tempfail' : 'reject';
  return { action, reply: r, why: line ?? '' };
}

/**
 * A line from a filter (its last stderr line) or FilterReject as a reply: verbatim when it
 * starts with a code, else `550 Content Rejected; <line>` (proxsmtpd §13.4, §13.6).
 */
export function rejection(line: string): Reply {
  const code = codeOf(line);
  if (code === undefined) return reply(550, `Content Rejected; ${line}`);
  return { code, lines: [line.slice(4)], wire: `${line}\r\n` };
}
