// The accounting event: one per message, made when the message's fate is known, whatever
// the destination strategy (issue 6, "Semantics"). The log line sinks render it with the
// LogFormat (format.ts); the counters store (counters.ts) adds the delivered ones up.
//
// This module owns the event's shape and the small normalisations every sink relies on;
// it never does I/O.

import { randomBytes } from 'node:crypto';
import { utf8Display } from '../smtp/utf8.js';

/** What became of the message (`%status`). */
export type MessageStatus = 'delivered' | 'rejected' | 'dropped' | 'tempfail' | 'aborted';

export const STATUSES: readonly MessageStatus[] = ['delivered', 'rejected', 'dropped', 'tempfail', 'aborted'];

/**
 * The sender, recipients, HELO and reply are protocol text as the session holds it, one
 * character per byte (latin1), so an SMTPUTF8 address is its UTF-8 bytes here; the sinks
 * decode it (format.ts clean(), recipientDomains()).
 */
export interface MessageEvent {
  /** Unique per message (`%id`); see newMessageId(). */
  readonly id: string;
  /** When the fate was known; rendered in the daemon's local time (`%date`). */
  readonly date: Date;
  /** The bare reverse path, '' for the null sender (`%sender`, so `<%sender>` gives `<>`). */
  readonly sender: string;
  /** The client's IP address (`%shost`); plainIp() removes a `::ffff:` prefix. */
  readonly clientIp: string;
  /** The HELO/EHLO argument, '' if none was given (`%helo`). */
  readonly helo: string;
  /** Bare recipient addresses the upstream accepted, in acceptance order (`%rcpts`). */
  readonly recipients: readonly string[];
  /** The host:port actually used (`%dhost`), '' when no upstream was reached. */
  readonly destination: string;
  readonly status: MessageStatus;
  /** The whole final reply line to the client, code included (`%reply`). */
  readonly reply: string;
  /**
   * Bytes as delivered (after filter and Header, dot-unstuffed, CRLF line endings, without
   * the final dot line), or as received when the message was not delivered (`%msize`).
   */
  readonly size: number;
  /** From MAIL FROM to the final reply, in milliseconds (`%duration`). */
  readonly durationMs: number;
  /** Distinct recipient domains, decoded text in lower case, in order of first acceptance (recipientDomains()). */
  readonly domains: readonly string[];
}

/** The fields a session knows; messageEvent() derives the rest. */
export type EventFacts = Omit<MessageEvent, 'domains' | 'clientIp' | 'id'> & { readonly clientIp: string; readonly id?: string };

export function messageEvent(facts: EventFacts): MessageEvent {
  return {
    ...facts,
    id: facts.id ?? newMessageId(),
    clientIp: plainIp(facts.clientIp),
    domains: recipientDomains(facts.recipients),
  };
}

/**
 * Distinct recipient domains in acceptance order. Domains compare case-insensitively
 * (RFC 5321 §2.4), so they are lower-cased; a recipient with no `@` (e.g. `postmaster`)
 * has no domain and is not counted per domain. The bytes are decoded as UTF-8 (RFC 6531),
 * so `bücher.example` is counted as the text `stats --domain bücher.example` asks for.
 */
export function recipientDomains(recipients: readonly string[]): string[] {
  const seen = new Set<string>();
  for (const r of recipients) {
    const at = r.lastIndexOf('@');
    if (at < 0 || at === r.length - 1) continue;
    seen.add(utf8Display(r.slice(at + 1)).toLowerCase().replace(/\.$/, ''));
  }
  return [...seen];
}

/** `::ffff:192.0.2.1` (an IPv4 client on a dual-stack socket) is `192.0.2.1`. */
export function plainIp(ip: string): string {
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(ip) ? ip.slice(7) : ip;
}

let sequence = 0;
const processTag = randomBytes(3).toString('hex');

/**
 * Unique per message across processes and restarts: time in ms (base 36), a random tag
 * per process, and a per-process sequence number.
 */
export function newMessageId(now = Date.now()): string {
  sequence = (sequence + 1) % 0x100000;
  return `${now.toString(36)}.${processTag}.${sequence.toString(36)}`;
}
