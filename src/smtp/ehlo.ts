// Rewriting the upstream's HELO/EHLO reply for the client (spec §7, issue #2): the host in
// the first line becomes ServerName (so MTAs on both sides see no mail loop), and the
// extensions this proxy cannot relay are removed.

import { reply, type Reply } from './reply.js';

/** Extensions that never pass: we do not relay TLS, BDAT or the upstream's XCLIENT. */
const ALWAYS_HIDDEN = ['STARTTLS', 'CHUNKING', 'BINARYMIME', 'CHECKPOINT', 'XCLIENT', 'XEXCH50'];

export interface HeloRewrite {
  readonly reply: Reply;
  /** The upstream offered XCLIENT (the XClient option uses it). */
  readonly offersXclient: boolean;
  readonly hidden: readonly string[];
}

const keyword = (line: string): string => (line.split(/[ \t]/)[0] ?? '').toUpperCase();

export function rewriteHelo(upstream: Reply, serverName: string, ehlo: boolean, pipelining: boolean): HeloRewrite {
  if (upstream.code < 200 || upstream.code > 299) return { reply: upstream, offersXclient: false, hidden: [] };
  const [, ...extensions] = upstream.lines;
  const offersXclient = extensions.some((l) => keyword(l) === 'XCLIENT');
  if (!ehlo) return { reply: reply(250, serverName), offersXclient, hidden: [] };
  const hide = pipelining ? ALWAYS_HIDDEN : [...ALWAYS_HIDDEN, 'PIPELINING'];
  const kept: string[] = [];
  const hidden: string[] = [];
  for (const line of extensions) (hide.includes(keyword(line)) ? hidden : kept).push(line);
  const last = extensions[extensions.length - 1];
  // proxsmtpd marks a removed last line with XFILTERED; clients that parse it keep working.
  if (last !== undefined && hidden.includes(last)) kept.push('XFILTERED');
  return { reply: reply(250, serverName, ...kept), offersXclient, hidden };
}
