// What both ways of taking a message (received whole first, or cut through) share: the
// client's data, whether a filter reads it, the Header for it, and its log line and
// accounting event.

import { messageEvent, type MessageStatus } from '../accounting/event.js';
import { SiftError } from '../errors.js';
import { expandHeader } from '../filter/header.js';
import type { Verdict } from '../filter/verdict.js';
import { Level, q } from '../log/logger.js';
import { received } from '../net/garbage.js';
import { DotDecoder, type Decoded } from '../smtp/dot.js';
import { summary, type Reply } from '../smtp/reply.js';
import { ClientGone, type Session } from './session.js';

/**
 * The client's data, a chunk at a time, unstuffed, up to its CRLF.CRLF; what follows that
 * is left for the next command.
 */
export async function* clientData(s: Session, decoder = new DotDecoder()): AsyncGenerator<Decoded> {
  for (;;) {
    const chunk = await s.reader.chunk(s.timeoutMs);
    if (chunk === 'eof' || chunk === 'timeout') throw clientFailure(s, chunk);
    received(chunk.length);
    const d = decoder.feed(chunk);
    yield d;
    if (d.done) {
      s.reader.unshift(chunk.subarray(d.used));
      return;
    }
  }
}

/** The client went away, or fell silent, in the middle of its data. */
export function clientFailure(s: Session, how: 'eof' | 'timeout'): SiftError | ClientGone {
  if (how === 'eof') return new ClientGone('client closed the connection during DATA');
  return new SiftError('CLIENT_TIMEOUT', `client silent for ${s.config.timeOut} s during DATA`);
}

/** How the message ended, for the log line. */
type Fate = 'DELIVERED' | 'REJECTED' | 'DROPPED' | 'TEMPFAIL' | 'ABORTED';

function fateOf(r: Reply | undefined, action: Verdict['action'] | undefined): Fate {
  if (r === undefined) return 'ABORTED';
  if (action === 'drop') return 'DROPPED';
  return r.code < 300 ? 'DELIVERED' : r.code < 500 ? 'TEMPFAIL' : 'REJECTED';
}

/** `Skip: authenticated` (proxsmtpd §11): such a client's mail passes unfiltered, no Header. */
export const skipsFilter = (s: Session): boolean => s.config.skip === 'authenticated' && s.authenticated;

/** Whether a filter reads this message. */
export const isFiltered = (s: Session): boolean => !skipsFilter(s) && s.config.filterCommand !== undefined;

/** The Header option expanded for this message, if set. */
export function header(s: Session): string | undefined {
  const template = s.config.header;
  if (template === undefined) return undefined;
  return expandHeader(template, { clientIp: s.clientIp, localIp: s.localName, date: new Date() }, (m) => s.log.warn(m));
}

export function logMessage(s: Session, size: number, final: Reply | undefined, action: Verdict['action'] | undefined, sent?: number): void {
  const t = s.txn;
  const fate = fateOf(final, action);
  // Accounting (issue 6): the message's one event, now that its fate is known.
  s.services.accounting?.record(
    messageEvent({
      date: new Date(),
      sender: t.sender === '<>' ? '' : (t.sender ?? ''),
      clientIp: s.clientIp ?? '',
      helo: s.helo?.name ?? s.heloName ?? '',
      recipients: [...t.recipients],
      destination: s.route?.host ?? s.upstreamPeer ?? '',
      status: fate.toLowerCase() as MessageStatus,
      reply: final === undefined ? '' : (final.wire.trimEnd().split('\r\n').pop() ?? ''),
      size: fate === 'DELIVERED' ? (sent ?? size) : size,
      durationMs: Date.now() - t.startedAt,
    }),
  );
  if (!s.log.enabled(Level.Info)) return;
  const filter = skipsFilter(s) ? 'skipped' : s.config.filterCommand === undefined ? 'none' : (action ?? 'unfinished');
  s.log.info(
    `client=${s.clientIp ?? 'unix'} from=<${q(t.sender === '<>' ? '' : (t.sender ?? ''))}> ` +
      `rcpts=${t.recipients.length} size=${size} filter=${filter} status=${fateOf(final, action)} ` +
      `reply="${final ? q(summary(final)) : ''}"` +
      // Routed mode (issue 5): the host the message actually went to.
      (s.route !== undefined ? ` dest=${s.route.host}` : ''),
  );
}
