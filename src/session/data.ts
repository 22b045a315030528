// DATA: receive the message into the spool (354 is ours), then hand it to the upstream
// and give the client the upstream's final reply. The client's data is always read to its
// CRLF.CRLF, whatever fails meanwhile, so no body line is ever taken for a command.

import { rmSync } from 'node:fs';
import { SiftError } from '../errors.js';
import { DotDecoder, DotEncoder, encodedMax, END_MAX } from '../smtp/dot.js';
import { reply, summary, type Reply } from '../smtp/reply.js';
import { MessageStore } from '../spool/message.js';
import { Level, q } from '../log/logger.js';
import { filterMessage, type FilterRequest } from '../filter/filter.js';
import { expandHeader } from '../filter/header.js';
import { outgoing, READ_CHUNK } from '../filter/outgoing.js';
import type { Verdict } from '../filter/verdict.js';
import { plainIp } from '../net/address.js';
import { keepAlive, type KeepAlive } from '../upstream/keepalive.js';
import { received } from '../net/garbage.js';
import { ClientGone, type Outcome, type Session } from './session.js';
import { messageEvent, type MessageStatus } from '../accounting/event.js';

/** How the message ended, for the log line. */
type Fate = 'DELIVERED' | 'REJECTED' | 'DROPPED' | 'TEMPFAIL' | 'ABORTED';

function fateOf(r: Reply | undefined, action: Verdict['action'] | undefined): Fate {
  if (r === undefined) return 'ABORTED';
  if (action === 'drop') return 'DROPPED';
  return r.code < 300 ? 'DELIVERED' : r.code < 500 ? 'TEMPFAIL' : 'REJECTED';
}

/** `Skip: authenticated` (proxsmtpd §11): such a client's mail passes unfiltered, no Header. */
export const skipsFilter = (s: Session): boolean => s.config.skip === 'authenticated' && s.authenticated;

export async function receiveMessage(s: Session): Promise<Outcome> {
  if (s.txn.recipients.length === 0) {
    s.send(reply(554, '5.5.1 No valid recipients'));
    return 'continue';
  }
  const filtered = !skipsFilter(s) && s.config.filterCommand !== undefined;
  const store = await openStore(s, filtered);
  if (store === undefined) return 'continue';
  // A fresh private path for the filter's output (pipe mode); none when nothing is filtered.
  const output = filtered ? s.services.spool.path() : undefined;
  let size = 0;
  /** Bytes the upstream was sent (unstuffed), once the whole message went up. */
  let sent: number | undefined;
  let final: Reply;
  let action: Verdict['action'] | undefined;
  let outcome: Outcome = 'continue';
  let upstreamIdle: KeepAlive | undefined;
  try {
    s.send(reply(354, 'Start mail input; end with <CRLF>.<CRLF>'));
    upstreamIdle = keepAlive(s.upstream, s.config.keepAlives, s.log);
    size = await receive(s, store);
    const message = store.finish();
    // A filtered message is always in a file (the store was made with toFile).
    const verdict =
      output !== undefined && typeof message === 'string'
        ? await filterMessage({ config: s.config, log: s.log, message, output, facts: facts(s) })
        : undefined;
    await upstreamIdle.stop();
    action = verdict?.verdict.action;
    if (verdict !== undefined && verdict.verdict.action !== 'accept') {
      // The filter decided: the client gets its reply, the upstream forgets the envelope.
      final = verdict.verdict.reply;
      await s.forward('RSET\r\n');
    } else {
      [final, outcome, sent] = await deliver(s, verdict?.send ?? message, skipsFilter(s) ? undefined : header(s));
    }
  } catch (e) {
    await upstreamIdle?.stop();
    // Every message that got its 354 gets its log line, however it ended.
    if (e instanceof ClientGone) logMessage(s, size, undefined, action);
    if (e instanceof SiftError && e.closes) logMessage(s, size, e.reply, action);
    if (!(e instanceof SiftError) || e.closes) throw e;
    // Our own failure with the data fully read: a 4xx, and the upstream forgets the envelope.
    s.log.error(e.message);
    final = e.reply;
    if (!s.upstream.isClosed) await s.forward('RSET\r\n');
  } finally {
    store.remove();
    if (output !== undefined) rmSync(output, { force: true });
  }
  s.send(final);
  logMessage(s, size, final, action, sent);
  s.txn.reset();
  return outcome;
}

/**
 * Where the message will be received; a message for a filter goes to a spool file, and if
 * that cannot be made, the client gets a 451 before sending any data.
 */
async function openStore(s: Session, toFile: boolean): Promise<MessageStore | undefined> {
  try {
    return new MessageStore(s.services.spool, toFile);
  } catch (e) {
    if (!(e instanceof SiftError)) throw e;
    s.log.error(e.message);
    s.send(e.reply);
    await s.forward('RSET\r\n');
    s.txn.reset();
    return undefined;
  }
}

/** What the filter is told of this message (its environment). */
function facts(s: Session): FilterRequest['facts'] {
  return {
    sender: s.txn.sender,
    recipients: s.txn.recipients,
    client: s.clientIp,
    server: plainIp(s.upstream.remoteAddress),
    remote: s.txn.remote,
    remoteHelo: s.txn.remoteHelo,
  };
}

/** The Header option expanded for this message, if set. */
function header(s: Session): string | undefined {
  const template = s.config.header;
  if (template === undefined) return undefined;
  return expandHeader(template, { clientIp: s.clientIp, localIp: s.localIp, date: new Date() }, (m) => s.log.warn(m));
}

/**
 * Reads the client's data up to CRLF.CRLF into the store; returns its size. The store
 * writes synchronously, so the socket reader's high-water mark is the backpressure. A
 * spool failure does not stop the reading: the rest is discarded, and the failure is
 * reported when the store is finished, so that no body line is taken for a command.
 */
async function receive(s: Session, store: MessageStore): Promise<number> {
  const decoder = new DotDecoder();
  let size = 0;
  for (;;) {
    const chunk = await s.reader.chunk(s.timeoutMs);
    if (chunk === 'eof') throw new ClientGone('client closed the connection during DATA');
    if (chunk === 'timeout') throw new SiftError('CLIENT_TIMEOUT', `client silent for ${s.config.timeOut} s during DATA`);
    received(chunk.length);
    const d = decoder.feed(chunk);
    for (const part of d.parts) {
      size += part.length;
      store.write(part);
    }
    if (d.done) {
      s.reader.unshift(chunk.subarray(d.used));
      return size;
    }
  }
}

/**
 * The buffers one delivery fills again and again: `read` for the file's pieces, `out` for
 * their stuffed form, which has room for a whole piece however it grows, and the end of
 * data. Taken from a small pool and given back, so that a large message costs no buffer
 * per piece (issue 7: a buffer per piece, each at least glibc's 128 KiB mmap threshold,
 * was an mmap, page faults and an munmap with a TLB shootdown every 256 KiB of message).
 */
interface Scratch {
  readonly read: Buffer;
  readonly out: Buffer;
}

const OUT_SIZE = encodedMax(READ_CHUNK) + END_MAX;
const idle: Scratch[] = [];
/** Idle sets kept for the next deliveries; more are made when more deliver at once. */
const IDLE_MAX = 8;

function takeScratch(): Scratch {
  return idle.pop() ?? { read: Buffer.allocUnsafeSlow(READ_CHUNK), out: Buffer.allocUnsafeSlow(OUT_SIZE) };
}

/** Only once nothing holds them any more: every write of `out` done, the file closed. */
function giveScratch(scratch: Scratch): void {
  if (idle.length < IDLE_MAX) idle.push(scratch);
}

/** DATA upstream, the message dot-stuffed with CRLF endings, and the final reply. */
async function deliver(s: Session, source: string | Buffer, headerText: string | undefined): Promise<[Reply, Outcome, number?]> {
  const dataReply = await s.forward('DATA\r\n');
  if (dataReply.code !== 354) {
    // A refused DATA leaves the envelope open upstream, while for the client the
    // transaction is over (its data was read, the refusal is its final reply): RSET so
    // that the next MAIL is not a nested one (issue #2: the upstream gets RSET).
    await s.forward('RSET\r\n');
    return [dataReply, 'continue'];
  }
  // The encoder also counts what the upstream stores (the accounting's %msize).
  const encoder = new DotEncoder();
  const scratch = takeScratch();
  const out = scratch.out;
  /** Stuffed bytes in `out` not yet written: written when the next piece might not fit. */
  let used = 0;
  try {
    // Each piece is stuffed into `out` before the next is read into `scratch.read`.
    for (const chunk of outgoing(source, headerText, scratch.read)) {
      for (let at = 0; at < chunk.length; at += READ_CHUNK) {
        const piece = chunk.subarray(at, at + READ_CHUNK);
        if (used + encodedMax(piece.length) + END_MAX > out.length) {
          await s.upstream.writeOut(out.subarray(0, used));
          used = 0;
        }
        used += encoder.encodeInto(piece, out, used);
      }
    }
    if (s.socket.destroyed) {
      // Nobody would hear the reply and the client will send again: do not deliver.
      throw new ClientGone('client closed the connection before the message was delivered');
    }
    // The last piece and the end of data in one write (design invariant 7).
    used += encoder.end().copy(out, used);
    await s.upstream.writeOut(out.subarray(0, used));
  } catch (e) {
    // The upstream has part of the message: only dropping the connection guarantees that
    // nothing half-sent is ever delivered. The scratch buffers are not reused: a write
    // may still hold `out`.
    s.upstream.abort();
    if (e instanceof SiftError || e instanceof ClientGone) throw e;
    s.log.error(`reading ${typeof source === 'string' ? source : 'the message'}: ${(e as Error).message}`);
    return [new SiftError('SPOOL_FAILED', '').reply, 'close'];
  }
  giveScratch(scratch);
  const final = await s.upstream.reply();
  if (s.log.enabled(Level.Debug)) s.log.debug(`SERVER > ${q(summary(final))}`);
  return [final, 'continue', encoder.contentBytes];
}

function logMessage(s: Session, size: number, final: Reply | undefined, action: Verdict['action'] | undefined, sent?: number): void {
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
