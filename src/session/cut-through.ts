// DATA with `CutThrough: on`, for mail no filter reads: the message goes upstream as the
// client sends it. The 354 is the upstream's own, each piece of data is passed on as it
// arrives (dot-stuffed with CRLF endings, as after a spool), and nothing touches the disk.
// Memory stays bounded: the next piece is read only once the upstream took the last one.
//
// Past its first 64 KiB, a message moves on a thread of the addon (native/pump.c) when one
// can take it: the event loop then relays other sessions' commands while the bulk of the
// message flows, and the thread moves it for about a third of the loop's CPU (issue 7).
//
// The end of data goes upstream only with the client's own, so a message the client or the
// upstream leaves unfinished is never delivered: the upstream connection is dropped
// instead. After an upstream failure the client's data is still read to its CRLF.CRLF, so
// that no body line is taken for a command, and then it gets the failure's 421.

import { SiftError } from '../errors.js';
import { native, type RelayResult } from '../native.js';
import { HeaderInserter } from '../filter/header.js';
import { DotDecoder, type Decoded } from '../smtp/dot.js';
import type { Reply } from '../smtp/reply.js';
import { MessageWriter } from '../upstream/message-writer.js';
import { clientData, clientFailure, header, logMessage, skipsFilter } from './message.js';
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
    size: 0,
    contentBytes: 0,
  };
  let final: Reply;
  try {
    await passAll(s, message);
    s.dialogue('SERVER >', '.');
    final = await s.upstream.reply();
  } catch (e) {
    // Whatever failed, the upstream must not end this message: drop its connection.
    s.upstream.abort();
    if (e instanceof ClientGone || e instanceof SiftError) logMessage(s, message.size, e instanceof SiftError ? e.reply : undefined, undefined);
    throw e;
  }
  s.dialogue('SERVER <', final.wire);
  s.send(final);
  logMessage(s, message.size, final, undefined, message.contentBytes);
  s.txn.reset();
  return 'continue';
}

interface Relayed {
  readonly writer: MessageWriter;
  /** The Header option, put in as the message streams past. */
  readonly inserter: HeaderInserter | undefined;
  /** Bytes received (unstuffed), and those the upstream stores. */
  size: number;
  contentBytes: number;
}

/**
 * A message passes to the relay thread once this much of it went through the loop: the
 * start of every message (and any Header) is the loop's, and mail smaller than this never
 * costs a thread.
 */
const THREAD_AFTER = 64 * 1024;
/** Relay threads at once, at most; more messages stay on the loop's path meanwhile. */
const THREADS_MAX = 64;
let threads = 0;

/**
 * The client's data up to its end, passed upstream: chunk by chunk on the event loop, the
 * bulk of a large message on the addon's thread. Throws the first failure once the client's
 * data is over (or the client is gone).
 */
async function passAll(s: Session, message: Relayed): Promise<void> {
  /** The upstream's failure; the rest of the client's data is then read and dropped. */
  let failure: SiftError | undefined;
  const decoder = new DotDecoder();
  for await (const d of clientData(s, decoder)) {
    for (const part of d.parts) message.size += part.length;
    failure ??= await pass(s, message, d);
    if (d.done || failure !== undefined || message.size < THREAD_AFTER || message.inserter?.inserted === false) continue;
    const thread = onThread(s, decoder.position, message.writer.encoderFlags);
    if (thread === undefined) continue;
    message.writer.release();
    const r = await thread;
    message.size += r.size;
    message.contentBytes = message.writer.contentBytes + r.contentBytes;
    return threadOutcome(s, r);
  }
  message.contentBytes = message.writer.contentBytes;
  if (failure !== undefined) throw failure;
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

/**
 * The rest of the message on the addon's thread, going on from the loop's decoder and
 * encoder; undefined when it cannot take it now (nothing was read then).
 */
function onThread(s: Session, decoderPosition: number, encoderFlags: number): Promise<RelayResult> | undefined {
  const upstreamFd = s.upstream.idleDescriptor;
  if (threads >= THREADS_MAX || upstreamFd === undefined) return undefined;
  const lent = s.reader.lend();
  if (lent === undefined) return undefined;
  let resolve: (r: RelayResult) => void = () => {};
  const done = new Promise<RelayResult>((r) => (resolve = r));
  try {
    const handle = native.relayData(lent.fd, upstreamFd, lent.queued, s.timeoutMs, decoderPosition, encoderFlags, (r) => {
      threads--;
      s.stopData = undefined;
      s.reader.takeBack(r.leftover);
      resolve(r);
    });
    s.stopData = () => native.cancelRelay(handle);
  } catch (e) {
    s.log.warn(`no thread for the message, relaying it on the event loop: ${(e as Error).message}`);
    s.reader.takeBack(lent.queued);
    return undefined;
  }
  threads++;
  return done;
}

/** How the thread's part ended, thrown as the loop's path would have thrown it. */
function threadOutcome(s: Session, r: RelayResult): void {
  if (r.status === 'cancelled') throw new ClientGone('shutting down: the message was left unfinished');
  if (r.status !== 'done') throw clientFailure(s, r.status === 'timeout' ? 'timeout' : 'eof');
  if (r.upstreamError !== undefined) throw s.upstream.writeFailure(r.upstreamError === 'timeout' ? undefined : r.upstreamError);
}
