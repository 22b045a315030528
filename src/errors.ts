// One catalogue of the failures a session can meet, each with the SMTP reply the client
// gets for it. Anything internal is temporary (4xx): only the upstream or a filter may
// refuse mail permanently (design invariant 1).

import { reply, type Reply } from './smtp/reply.js';

export type SiftCode =
  | 'UPSTREAM_UNREACHABLE'
  | 'UPSTREAM_GONE'
  | 'UPSTREAM_TIMEOUT'
  | 'UPSTREAM_PROTOCOL'
  | 'CLIENT_TIMEOUT'
  | 'SPOOL_FAILED'
  | 'SHUTDOWN'
  /** Routed mode: no host of a recipient's destination list answered; that recipient only. */
  | 'ROUTE_UNAVAILABLE';

const REPLIES: Record<SiftCode, Reply> = {
  UPSTREAM_UNREACHABLE: reply(421, '4.4.1 Upstream server unavailable, try again later'),
  UPSTREAM_GONE: reply(421, '4.4.2 Upstream server closed the connection, try again later'),
  UPSTREAM_TIMEOUT: reply(421, '4.4.2 Upstream server timed out, try again later'),
  UPSTREAM_PROTOCOL: reply(421, '4.4.0 Upstream server protocol error, try again later'),
  CLIENT_TIMEOUT: reply(421, '4.4.2 Timeout exceeded, closing connection'),
  SPOOL_FAILED: reply(451, '4.3.0 Local Error: cannot spool the message, try again later'),
  SHUTDOWN: reply(421, '4.3.2 Service shutting down, closing connection'),
  ROUTE_UNAVAILABLE: reply(451, '4.4.1 No destination host available for this recipient, try again later'),
};

/** A failure that carries the reply to give the client. */
export class SiftError extends Error {
  readonly reply: Reply;
  constructor(
    readonly code: SiftCode,
    detail: string,
  ) {
    super(detail);
    this.reply = REPLIES[code];
  }
  /** Whether the session must end after the reply (a 421). */
  get closes(): boolean {
    return this.reply.code === 421;
  }
}
