// DATA with `CutThrough: on`, for mail no filter reads: the message goes upstream as the
// client sends it. The 354 is the upstream's own, each piece of data is passed on as it
// arrives (dot-stuffed with CRLF endings, as after a spool), and nothing touches the disk.
// Memory stays bounded: the next piece is read only once the upstream took the last one.
//
// The body is moved by a thread of the addon (native/pump.c) when it can be: the event loop
// then relays other sessions' commands while the message flows (issue 7: 1 MB messages).
// A message that gets a Header, or a socket that cannot be lent, takes the loop's path below.
//
// The end of data goes upstream only with the client's own, so a message the client or the
// upstream leaves unfinished is never delivered: the upstream connection is dropped
// instead. After an upstream failure the client's data is still read to its CRLF.CRLF, so
// that no body line is taken for a command, and then it gets the failure's 421.

import { SiftError } from '../errors.js';
import { native, type RelayResult } from '../native.js';
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
  const thread = headerText === undefined ? onThread(s) : undefined;
  const { size, contentBytes, final } = await settle(s, thread !== undefined ? byThread(s, await thread) : byLoop(s, headerText));
  if (s.log.enabled(Level.Debug)) s.log.debug(`SERVER > ${q(summary(final))}`);
  s.send(final);
  logMessage(s, size, final, undefined, contentBytes);
  s.txn.reset();
  return 'continue';
}

/** What passed: bytes received (unstuffed), and those the upstream stores. */
interface Passed {
  size: number;
  contentBytes: number;
}

/**
 * The upstream's final reply once `passing` is over. Whatever failed, the upstream must not
 * end this message: its connection is dropped, and the failure goes on to the session.
 */
async function settle(s: Session, [passing, passed]: [Promise<void>, Passed]): Promise<Passed & { final: Reply }> {
  try {
    await passing;
    return { ...passed, final: await s.upstream.reply() };
  } catch (e) {
    s.upstream.abort();
    if (e instanceof ClientGone || e instanceof SiftError) logMessage(s, passed.size, e instanceof SiftError ? e.reply : undefined, undefined);
    throw e;
  }
}

/** The body through the event loop, chunk by chunk. */
function byLoop(s: Session, headerText: string | undefined): [Promise<void>, Passed] {
  const message: Relayed = {
    writer: new MessageWriter(s.upstream),
    inserter: headerText === undefined ? undefined : new HeaderInserter(headerText),
  };
  const passed: Passed = { size: 0, contentBytes: 0 };
  const passing = async (): Promise<void> => {
    /** The upstream's failure; the rest of the client's data is then read and dropped. */
    let failure: SiftError | undefined;
    for await (const d of clientData(s)) {
      for (const part of d.parts) passed.size += part.length;
      failure ??= await pass(s, message, d);
    }
    passed.contentBytes = message.writer.contentBytes;
    if (failure !== undefined) throw failure;
  };
  return [passing(), passed];
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

/** Relay threads at once, at most; more messages take the event loop's path meanwhile. */
const THREADS_MAX = 64;
let threads = 0;

/** The body on the addon's thread; undefined when it cannot take it (nothing was read then). */
function onThread(s: Session): Promise<RelayResult> | undefined {
  const upstreamFd = s.upstream.idleDescriptor;
  if (threads >= THREADS_MAX || upstreamFd === undefined) return undefined;
  const lent = s.reader.lend();
  if (lent === undefined) return undefined;
  let resolve: (r: RelayResult) => void = () => {};
  const done = new Promise<RelayResult>((r) => (resolve = r));
  try {
    const handle = native.relayData(lent.fd, upstreamFd, lent.queued, s.timeoutMs, (r) => {
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

/** The thread's outcome, as the loop's path would have thrown it. */
function byThread(s: Session, r: RelayResult): [Promise<void>, Passed] {
  const passed = { size: r.size, contentBytes: r.contentBytes };
  const outcome = async (): Promise<void> => {
    if (r.status === 'timeout') throw new SiftError('CLIENT_TIMEOUT', `client silent for ${s.config.timeOut} s during DATA`);
    if (r.status === 'cancelled') throw new ClientGone('shutting down: the message was left unfinished');
    if (r.status !== 'done') throw new ClientGone('client closed the connection during DATA');
    if (r.upstreamError === 'timeout') throw new SiftError('UPSTREAM_TIMEOUT', `upstream did not take data in ${s.timeoutMs / 1000} s`);
    if (r.upstreamError !== undefined) throw new SiftError('UPSTREAM_GONE', `upstream connection failed: ${r.upstreamError}`);
  };
  return [outcome(), passed];
}
