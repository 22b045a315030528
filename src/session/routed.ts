// Routed (Moxy) mode, issue 5: the verb table of a session whose upstream is chosen per
// recipient domain. The greeting, HELO/EHLO, MAIL, RSET and NOOP are answered here; the
// first RCPT of a transaction names the destination list, the proxy dials it (failover in
// src/routing/router.ts), repeats the client's EHLO, XFORWARDs the real client when offered,
// sends the kept MAIL FROM and the RCPT, and the client gets the upstream's reply verbatim.
// From then on the transaction is in lockstep with that upstream, as in the fixed mode.
//
// One transaction, one upstream: a recipient whose list differs gets 452 4.5.3 (RFC 5321
// §4.5.3.1.10: the client sends the rest in another transaction; nothing is lost). The
// connection is kept for the next transaction when that one routes to the same list, and
// closed with QUIT when it routes elsewhere (issue 5).

import { SiftError } from '../errors.js';
import { formatHost, type DestinationList } from '../routing/destinations.js';
import { pathOf, xclientAddr } from '../smtp/command.js';
import { isSuccess, reply, type Reply } from '../smtp/reply.js';
import { utf8Text } from '../smtp/utf8.js';
import { receiveMessage } from './data.js';
import { refuse, refusesAll, sendXclient, xclient, type Handler } from './handlers.js';
import type { Outcome, Session } from './session.js';

/** The fixed capability set of routed mode (documented in smtpsiftd(8) ROUTING). */
export function routedCapabilities(pipelining: boolean): string[] {
  return [...(pipelining ? ['PIPELINING'] : []), '8BITMIME'];
}

const keyword = (line: string): string => (line.split(/[ \t]/)[0] ?? '').toUpperCase();

/** xtext (RFC 3461 §4) for XFORWARD values. */
function xtext(value: string): string {
  return value.replace(/[^\x21-\x2a\x2c-\x3c\x3e-\x7e]/g, (c) => `+${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/**
 * The domain of a recipient path (after the last @), '' for none (`postmaster`). The path
 * is protocol text (one character per byte); the domain is looked up as the text its bytes
 * spell in UTF-8 (RFC 6531), so `RCPT TO:<u@bücher.example>` finds the route of
 * `bücher.example` and of `xn--bcher-kva.example`. Bytes that are not UTF-8 are no domain
 * (no route). Only the lookup decodes: what is relayed stays the client's own bytes.
 */
function domainOf(path: string): string {
  const at = path.lastIndexOf('@');
  return at < 0 ? '' : (utf8Text(path.slice(at + 1)) ?? '');
}

/** Ends the upstream's side of an open transaction (RSET), keeping the connection. */
async function abandonUpstream(s: Session): Promise<void> {
  const route = s.route;
  if (route === undefined || !route.mailSent) return;
  route.mailSent = false;
  if (!s.hasUpstream) return;
  try {
    await s.forward('RSET\r\n');
  } catch (e) {
    if (!(e instanceof SiftError)) throw e;
    await dropUpstream(s);
  }
}

/** QUIT and forget the upstream connection, if any. */
async function dropUpstream(s: Session): Promise<void> {
  if (s.hasUpstream) await s.upstream.quit();
  s.attachUpstream(undefined, undefined);
}

/** Dials `list` and introduces the client there: EHLO with its own name, XCLIENT/XFORWARD. */
async function dial(s: Session, list: DestinationList): Promise<void> {
  const router = s.services.router;
  const helo = s.helo;
  if (router === undefined || helo === undefined) throw new Error('routed dial without a router or HELO');
  const d = await router.dial(list, s.timeoutMs, s.log);
  const route = { key: list.key, host: formatHost(d.host), mailSent: false, xforward: [] as readonly string[] };
  s.attachUpstream(d.upstream, route);
  s.log.info(`routed to ${formatHost(d.host)} (destinations ${list.key})`);
  let r = await s.forward(`${helo.ehlo ? 'EHLO' : 'HELO'} ${helo.name}\r\n`);
  if (helo.ehlo && !isSuccess(r)) r = await s.forward(`HELO ${helo.name}\r\n`);
  if (!isSuccess(r)) throw new SiftError('ROUTE_UNAVAILABLE', `${formatHost(d.host)} refused HELO: ${r.code}`);
  const extensions = helo.ehlo ? r.lines.slice(1) : [];
  if (s.config.xClient && extensions.some((l) => keyword(l) === 'XCLIENT')) {
    await sendXclient(s, `EHLO ${helo.name}\r\n`);
  }
  const xf = extensions.find((l) => keyword(l) === 'XFORWARD');
  route.xforward = xf === undefined ? [] : xf.toUpperCase().split(/[ \t]+/).slice(1);
}

/** XFORWARD of the real client, before each MAIL (Postfix resets it per transaction). */
async function xforward(s: Session): Promise<void> {
  const offered = s.route?.xforward ?? [];
  if (offered.length === 0 || s.clientIp === undefined || s.helo === undefined) return;
  const attrs: string[] = [];
  if (offered.includes('ADDR')) attrs.push(`ADDR=${xclientAddr(s.clientIp)}`);
  if (offered.includes('HELO')) attrs.push(`HELO=${xtext(s.helo.name)}`);
  if (offered.includes('PROTO')) attrs.push(`PROTO=${s.helo.ehlo ? 'ESMTP' : 'SMTP'}`);
  if (attrs.length === 0) return;
  const r = await s.forward(`XFORWARD ${attrs.join(' ')}\r\n`);
  if (!isSuccess(r)) s.log.warn(`server didn't accept XFORWARD: ${r.code}`);
}

const helo: Handler = async (s, text) => {
  const m = /^[ \t]*(EHLO|HELO)(?:[ \t]+([^ \t]+))?/i.exec(text);
  const name = m?.[2];
  const ehlo = (m?.[1] ?? '').toUpperCase() === 'EHLO';
  if (name === undefined) {
    s.send(reply(501, `5.5.4 Syntax: ${ehlo ? 'EHLO' : 'HELO'} hostname`));
    return 'continue';
  }
  // A new HELO resets the session (RFC 5321 §4.1.4); an upstream introduced under the old
  // name is let go, the next RCPT dials afresh with the new one.
  await dropUpstream(s);
  s.txn.reset();
  s.helo = { ehlo, name };
  s.send(ehlo ? reply(250, s.config.serverName, ...routedCapabilities(s.config.pipelining)) : reply(250, s.config.serverName));
  return 'continue';
};

const mail: Handler = async (s, text, raw) => {
  if (refusesAll(s)) return refuse(s);
  if (s.helo === undefined) return say(s, reply(503, '5.5.1 Error: send HELO/EHLO first'));
  if (s.txn.sender !== undefined) return say(s, reply(503, '5.5.1 Error: nested MAIL command'));
  const path = pathOf(text);
  if (path === undefined) return say(s, reply(501, '5.5.4 Syntax: MAIL FROM:<address>'));
  // Kept, not sent: the upstream is not known before the first RCPT. Its verdict on this
  // MAIL reaches the client as the reply to that RCPT.
  s.txn.sender = path;
  s.txn.mailLine = raw;
  return say(s, reply(250, '2.1.0 Ok'));
};

function say(s: Session, r: Reply): Outcome {
  s.send(r);
  return 'continue';
}

const rcpt: Handler = async (s, text, raw) => {
  const router = s.services.router;
  if (router === undefined) throw new Error('routed handler without a router');
  if (refusesAll(s)) return refuse(s);
  if (s.txn.sender === undefined || s.txn.mailLine === undefined) return say(s, reply(503, '5.5.1 Error: need MAIL command'));
  const path = pathOf(text);
  if (path === undefined) return say(s, reply(501, '5.5.4 Syntax: RCPT TO:<address>'));
  const domain = domainOf(path);
  const routing = router.route(domain, s.clientIp);
  if (routing.kind === 'denied') {
    s.log.info(`client=${s.clientIp ?? 'unix'} rcpt=<${path}> relaying denied`);
    return say(s, reply(550, '5.7.1 Relaying denied'));
  }
  const list = routing.list;
  if (s.txn.recipients.length > 0 && s.route !== undefined && s.route.key !== list.key) {
    return say(s, reply(452, `4.5.3 <${path}> is routed to another destination; send it in a separate transaction`));
  }
  // The recipients already accepted live on the transaction's connection: if it is gone,
  // so is the transaction (a new connection would deliver to the later recipients only).
  if (s.txn.recipients.length > 0 && !s.hasUpstream) throw new SiftError('UPSTREAM_GONE', 'upstream closed the connection during the transaction');
  // A kept connection may have died while idle: one fresh dial before giving up.
  for (let attempt = 0; ; attempt++) {
    const reused = s.hasUpstream && s.route?.key === list.key;
    try {
      if (!reused) {
        await dropUpstream(s);
        await dial(s, list);
      }
      const route = s.route;
      if (route === undefined) throw new Error('no route after dial');
      if (!route.mailSent) {
        await xforward(s);
        const mr = await s.forward(s.txn.mailLine);
        // The upstream refused the sender: that is this recipient's answer, verbatim.
        if (!isSuccess(mr)) return say(s, mr);
        route.mailSent = true;
      }
      const r = await s.forward(raw);
      if (isSuccess(r)) s.txn.recipients.push(path);
      return say(s, r);
    } catch (e) {
      if (!(e instanceof SiftError)) throw e;
      // Recipients already accepted there: the transaction cannot go on (421, as lockstep).
      if (s.txn.recipients.length > 0) throw e;
      s.detachUpstream();
      if (reused && attempt === 0) continue;
      s.log.warn(`rcpt=<${path}>: ${e.message}`);
      return say(s, new SiftError('ROUTE_UNAVAILABLE', '').reply);
    }
  }
};

const data: Handler = async (s) => {
  if (refusesAll(s)) {
    await abandonUpstream(s);
    return refuse(s);
  }
  const outcome = await receiveMessage(s);
  // The message is done (the transaction was reset): the upstream's side of it is too.
  if (s.txn.sender === undefined && s.route !== undefined) s.route.mailSent = false;
  return outcome;
};

const rset: Handler = async (s) => {
  await abandonUpstream(s);
  s.txn.reset();
  return say(s, reply(250, '2.0.0 Ok'));
};

const fixed =
  (r: Reply, outcome: Outcome = 'continue'): Handler =>
  async (s) => {
    s.send(r);
    return outcome;
  };

const notImplemented = fixed(reply(502, '5.5.1 Command not implemented'));

/** Any verb not in the table. */
export const routedUnknown: Handler = fixed(reply(500, '5.5.2 Error: command not recognized'));

export const ROUTED_HANDLERS: Readonly<Record<string, Handler>> = {
  EHLO: helo,
  HELO: helo,
  MAIL: mail,
  RCPT: rcpt,
  DATA: data,
  RSET: rset,
  NOOP: fixed(reply(250, '2.0.0 Ok')),
  QUIT: fixed(reply(221, '2.0.0 Bye'), 'close'),
  VRFY: fixed(reply(252, '2.0.0 Cannot VRFY user, but will accept the message and attempt delivery')),
  HELP: fixed(reply(214, '2.0.0 See RFC 5321')),
  EXPN: notImplemented,
  AUTH: notImplemented,
  STARTTLS: notImplemented,
  BDAT: notImplemented,
  ETRN: notImplemented,
  XFORWARD: notImplemented,
  XCLIENT: xclient,
};
