// DATA: receive the message into the spool (354 is ours), then hand it to the upstream
// and give the client the upstream's final reply (with CutThrough on, unfiltered mail goes
// through cut-through.ts instead). The client's data is always read to its CRLF.CRLF,
// whatever fails meanwhile, so no body line is ever taken for a command.

import { rmSync } from 'node:fs';
import { SiftError } from '../errors.js';
import { reply, type Reply } from '../smtp/reply.js';
import { MessageStore } from '../spool/message.js';
import { filterMessage, type FilterRequest } from '../filter/filter.js';
import { outgoing } from '../filter/outgoing.js';
import { MessageWriter } from '../upstream/message-writer.js';
import type { Verdict } from '../filter/verdict.js';
import { clientData, header, isFiltered, logMessage, skipsFilter } from './message.js';
import { relayMessage } from './cut-through.js';
import { keepAlive, type KeepAlive } from '../upstream/keepalive.js';
import { ClientGone, type Outcome, type Session } from './session.js';

/**
 * DATA, once the envelope is in place: without a recipient, 554; with CutThrough on and no
 * filter to read the message, relayed as it arrives; else received whole first.
 */
export async function receiveMessage(s: Session): Promise<Outcome> {
  if (s.txn.recipients.length === 0) {
    s.send(reply(554, '5.5.1 No valid recipients'));
    return 'continue';
  }
  const filtered = isFiltered(s);
  if (s.config.cutThrough && !filtered) return relayMessage(s);
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
    // A client on a unix socket has no IP: proxsmtpd sets CLIENT to the empty string then.
    client: s.clientIp ?? '',
    server: s.upstream.filterAddress,
    remote: s.txn.remote,
    remoteHelo: s.txn.remoteHelo,
  };
}

/**
 * Reads the client's data up to CRLF.CRLF into the store; returns its size. The store
 * writes synchronously, so the socket reader's high-water mark is the backpressure. A
 * spool failure does not stop the reading: the rest is discarded, and the failure is
 * reported when the store is finished, so that no body line is taken for a command.
 */
async function receive(s: Session, store: MessageStore): Promise<number> {
  let size = 0;
  for await (const d of clientData(s)) {
    for (const part of d.parts) {
      size += part.length;
      store.write(part);
    }
  }
  return size;
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
  const writer = new MessageWriter(s.upstream);
  try {
    // Each piece is stuffed before the next is read into the writer's buffer.
    for (const chunk of outgoing(source, headerText, writer.readBuffer)) await writer.put(chunk);
    if (s.socket.destroyed) {
      // Nobody would hear the reply and the client will send again: do not deliver.
      throw new ClientGone('client closed the connection before the message was delivered');
    }
    await writer.end();
    s.dialogue('SERVER >', '.');
  } catch (e) {
    // The upstream has part of the message: only dropping the connection guarantees that
    // nothing half-sent is ever delivered.
    s.upstream.abort();
    if (e instanceof SiftError || e instanceof ClientGone) throw e;
    s.log.error(`reading ${typeof source === 'string' ? source : 'the message'}: ${(e as Error).message}`);
    return [new SiftError('SPOOL_FAILED', '').reply, 'close'];
  }
  const final = await s.upstream.reply();
  s.dialogue('SERVER <', final.wire);
  return [final, 'continue', writer.contentBytes];
}
