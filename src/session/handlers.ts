// The protocol as a table: one small handler per verb the relay has to look at. Every verb
// not in the table is relayed byte for byte and the upstream's reply goes back as it is
// (spec §8); the upstream, not us, enforces the order of commands.

import { hideInitialResponse, pathOf, xclientAddr, xforwardAttributes } from '../smtp/command.js';
import { rewriteHelo } from '../smtp/ehlo.js';
import { isSuccess, reply } from '../smtp/reply.js';
import { rejection } from '../filter/verdict.js';
import { receiveMessage } from './data.js';
import { skipsFilter } from './message.js';
import type { Outcome, Session } from './session.js';

export type Handler = (s: Session, text: string, raw: string) => Promise<Outcome>;

/** Any command we do not need to understand. */
export const relay: Handler = async (s, _text, raw) => {
  s.send(await s.forward(raw));
  return 'continue';
};

const helo: Handler = async (s, text, raw) => {
  const ehlo = /^[ \t]*EHLO/i.test(text);
  const upstream = await s.forward(raw);
  const rw = rewriteHelo(upstream, s.config.serverName, ehlo, s.config.pipelining);
  if (isSuccess(upstream)) s.txn.reset();
  for (const ext of rw.hidden) s.log.debug(`filtered ESMTP feature: ${ext}`);
  s.send(rw.reply);
  // proxsmtpd §10.1: after an EHLO that offers XCLIENT, or after any HELO.
  if (s.config.xClient && !s.xclientSent && isSuccess(upstream) && (!ehlo || rw.offersXclient)) {
    s.xclientSent = true;
    await sendXclient(s, raw);
  }
  return 'continue';
};

/**
 * `XCLIENT ADDR=`, so the upstream sees the real client (once per upstream connection).
 * Postfix answers 220 and starts the session afresh; unlike proxsmtpd we then repeat the
 * client's HELO/EHLO (its reply is not the client's business), so the upstream knows it.
 */
export async function sendXclient(s: Session, heloLine: string): Promise<void> {
  if (s.clientIp === undefined) return;
  const r = await s.forward(`XCLIENT ADDR=${xclientAddr(s.clientIp)}\r\n`);
  if (!isSuccess(r)) s.log.warn(`server didn't accept XCLIENT: ${r.code}`);
  else if (r.code === 220) await s.forward(heloLine);
}

/**
 * `FilterType: reject` (proxsmtpd §13.6): MAIL, RCPT and DATA get FilterReject and nothing
 * of the envelope goes upstream; DATA also resets the upstream. An authenticated client
 * with `Skip: authenticated` is let through.
 */
export function refusesAll(s: Session): boolean {
  return s.config.filterType === 'reject' && !skipsFilter(s);
}

export function refuse(s: Session): Outcome {
  s.txn.reset();
  s.send(rejection(s.config.filterReject));
  s.log.info(`client=${s.clientIp ?? 'unix'} status=REJECTED (FilterType reject)`);
  return 'continue';
}

const data: Handler = async (s) => {
  if (!refusesAll(s)) return receiveMessage(s);
  await s.forward('RSET\r\n');
  return refuse(s);
};

const mail: Handler = async (s, text, raw) => {
  if (refusesAll(s)) return refuse(s);
  const r = await s.forward(raw);
  if (isSuccess(r)) s.txn.sender = pathOf(text);
  s.send(r);
  return 'continue';
};

const rcpt: Handler = async (s, text, raw) => {
  if (refusesAll(s)) return refuse(s);
  const r = await s.forward(raw);
  const path = pathOf(text);
  if (isSuccess(r) && path !== undefined) s.txn.recipients.push(path);
  s.send(r);
  return 'continue';
};

const rset: Handler = async (s, _text, raw) => {
  const r = await s.forward(raw);
  if (isSuccess(r)) s.txn.reset();
  s.send(r);
  return 'continue';
};

const xforward: Handler = async (s, text, raw) => {
  const r = await s.forward(raw);
  if (isSuccess(r)) {
    const attrs = xforwardAttributes(text);
    s.txn.remote = attrs.get('ADDR') ?? s.txn.remote;
    s.txn.remoteHelo = attrs.get('HELO') ?? s.txn.remoteHelo;
  }
  s.send(r);
  return 'continue';
};

/**
 * AUTH is relayed line by line: while the upstream says 334, the client's next line is
 * its answer (not a command) and goes up verbatim. A 235 authenticates the session.
 */
const auth: Handler = async (s, text, raw) => {
  // `AUTH PLAIN <initial response>` carries the password on the command line itself.
  let r = await s.forward(raw, hideInitialResponse(text) !== text);
  while (r.code === 334) {
    s.send(r);
    const line = await s.readLine(true);
    if (line.kind === 'toolong') {
      await s.forward('*\r\n'); // cancels the exchange upstream (RFC 4954 §4)
      s.send(reply(500, 'Line too long'));
      return 'continue';
    }
    r = await s.forward(line.raw, true);
  }
  if (r.code === 235) s.authenticated = true;
  s.send(r);
  return 'continue';
};

const quit: Handler = async (s, _text, raw) => {
  s.send(await s.forward(raw));
  return 'close';
};

const notImplemented: Handler = async (s) => {
  s.send(reply(502, 'Command not implemented'));
  return 'continue';
};

/** A client must not claim another client's identity through us (proxsmtpd §8). */
export const xclient: Handler = async (s) => {
  s.log.warn('client attempted use of privileged XCLIENT feature');
  s.send(reply(554, 'Insufficient authorization'));
  return 'continue';
};

export const HANDLERS: Readonly<Record<string, Handler>> = {
  EHLO: helo,
  HELO: helo,
  MAIL: mail,
  RCPT: rcpt,
  RSET: rset,
  DATA: data,
  XFORWARD: xforward,
  AUTH: auth,
  QUIT: quit,
  STARTTLS: notImplemented,
  BDAT: notImplemented,
  XCLIENT: xclient,
};
