// DATA with `CutThrough: on`, for mail no filter reads: the message goes upstream as the
// client sends it. The 354 is the upstream's own, each piece of data is passed on as it
// arrives (dot-stuffed with CRLF endings, as after a spool), and nothing touches the disk.
// Memory stays bounded: the next piece is read only once the upstream took the last one.
//
// The end of data goes upstream only with the client's own, so a message the client or the
// upstream leaves unfinished is never delivered: the upstream connection is dropped
// instead. After an upstream failure the client's data is still read to its CRLF.CRLF, so
// that no body line is taken for a command, and then it gets the failure's 421.

import { SiftError } from '../errors.js';
import { HeaderInserter } from '../filter/header.js';
import { Level, q } from '../log/logger.js';
import type { Decoded } from '../smtp/dot.js';
import { summary, type Reply } from '../smtp/reply.js';
import { MessageWriter } from '../upstream/message-writer.js';
import { clientData, header, logMessage, skipsFilter } from './message.js';
import { ClientGone, type Outcome, type Session } from './session.js';

export async function relayMessage(s: Session): Promise<Outcome> {
  const dataReply = await s.forward('DATA\r\n');
  s.send(dataReply);
  // A refusal leaves the transaction open on both sides alike: nothing to undo.
  if (dataReply.code !== 354) return 'continue';
  const headerText = skipsFilter(s) ? undefined : header(s);
  const message: Relayed = {
    writer: new MessageWriter(s.upstream),
    inserter: headerText === undefined ? undefined : new HeaderInserter(headerText),
  };
  let size = 0;
  /** The upstream's failure; the rest of the client's data is then read and dropped. */
  let failure: SiftError | undefined;
  let final: Reply;
  try {
    for await (const d of clientData(s)) {
      for (const part of d.parts) size += part.length;
      failure ??= await pass(s, message, d);
    }
    if (failure !== undefined) throw failure;
    final = await s.upstream.reply();
  } catch (e) {
    // Whatever failed, the upstream must not end this message: drop its connection.
    s.upstream.abort();
    if (e instanceof ClientGone || e instanceof SiftError) logMessage(s, size, e instanceof SiftError ? e.reply : undefined, undefined);
    throw e;
  }
  if (s.log.enabled(Level.Debug)) s.log.debug(`SERVER > ${q(summary(final))}`);
  s.send(final);
  logMessage(s, size, final, undefined, message.writer.contentBytes);
  s.txn.reset();
  return 'continue';
}

interface Relayed {
  readonly writer: MessageWriter;
  /** The Header option, put in as the message streams past. */
  readonly inserter: HeaderInserter | undefined;
}

/**
 * Passes one chunk's data upstream, and the end of data with the last one. Returns the
 * upstream's failure (its connection is then dropped), for the caller to report once the
 * client's data is over.
 */
async function pass(s: Session, { writer, inserter }: Relayed, d: Decoded): Promise<SiftError | undefined> {
  try {
    for (const part of d.parts) {
      for (const piece of inserter === undefined ? [part] : inserter.push(part)) await writer.put(piece);
    }
    // Not done: what the client sent goes on now, so that a slow client's upstream sees data.
    if (!d.done) return void (await writer.flush());
    for (const piece of inserter?.end() ?? []) await writer.put(piece);
    // Nobody would hear the reply and the client will send again: do not deliver.
    if (s.socket.destroyed) throw new ClientGone('client closed the connection before the message was delivered');
    await writer.end();
    return undefined;
  } catch (e) {
    if (!(e instanceof SiftError)) throw e;
    s.upstream.abort();
    return e;
  }
}
