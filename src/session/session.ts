// One client connection, relayed in lockstep to one upstream connection: every command is
// forwarded when the client sends it and the client sees the upstream's own reply, one
// round trip at a time, so pipelined input is answered in order by construction.

import type { Socket } from 'node:net';
import type { Config } from '../config/schema.js';
import { SiftError } from '../errors.js';
import { dialogue, type Direction, type Logger } from '../log/logger.js';
import { plainIp } from '../net/address.js';
import { SocketReader, type LineResult } from '../net/reader.js';
import { reply, type Reply } from '../smtp/reply.js';
import { hasControl, hideInitialResponse, verbOf } from '../smtp/command.js';
import type { Spool } from '../spool/spool.js';
import type { Router } from '../routing/router.js';
import type { Accounting } from '../accounting/accounting.js';
import { Upstream, type Endpoint } from '../upstream/upstream.js';
import { HANDLERS, relay } from './handlers.js';
import { ROUTED_HANDLERS, routedUnknown } from './routed.js';
import { Transaction } from './transaction.js';

/** proxsmtpd's limit (spec §5): a command of 4222 bytes or more, CRLF included, is refused. */
export const MAX_COMMAND_LINE = 4222;

export interface SessionServices {
  readonly config: Config;
  readonly spool: Spool;
  readonly log: Logger;
  /** Where this client's mail goes (the destination strategy); a SiftError refuses the client. */
  destination(socket: Socket, clientIp: string | undefined, log: Logger): Endpoint;
  /**
   * Routed (Moxy) mode, issue 5: set, the session greets by itself and dials an upstream at
   * the first RCPT of each transaction (src/session/routed.ts); `destination` is unused.
   */
  readonly router?: Router | undefined;
  /** Accounting (issue 6): one event per message with a known fate; unset = LogType nolog. */
  readonly accounting?: Accounting | undefined;
}

/** Routed mode: what the current upstream connection is for. */
export interface RouteState {
  /** The destination list's canonical text: recipients with the same key share the upstream. */
  readonly key: string;
  /** The host actually used (`host:port`), for the log. */
  readonly host: string;
  /** MAIL FROM was accepted upstream for the current transaction. */
  mailSent: boolean;
  /** The XFORWARD attributes this upstream offers (Postfix refuses any other). */
  xforward: readonly string[];
}

/** The client went away; there is nobody left to answer. */
export class ClientGone extends Error {}

export type Outcome = 'continue' | 'close';

export class Session {
  readonly reader: SocketReader;
  readonly txn = new Transaction();
  /** The client's IP address; undefined for a client on a unix socket. */
  readonly clientIp: string | undefined;
  /**
   * Where the client connected to, for the Header's %l: the local IP address, or for a
   * unix socket Listen its path, as proxsmtpd expands it (observed: `%l` gave the path).
   */
  readonly localName: string | undefined;
  readonly log: Logger;
  private up: Upstream | undefined;
  authenticated = false;
  xclientSent = false;
  /** Routed mode: the client's HELO/EHLO (answered locally), repeated to each upstream. */
  helo: { readonly ehlo: boolean; readonly name: string } | undefined;
  /** The client's last HELO/EHLO argument, for the accounting's %helo. */
  heloName: string | undefined;
  /** Routed mode: the open upstream connection's route, if any. */
  route: RouteState | undefined;
  private idle = false;
  private stopping = false;
  /** Stops a message body the addon's thread is relaying (CutThrough), while it does. */
  stopData: (() => void) | undefined;

  constructor(
    readonly id: string,
    readonly socket: Socket,
    readonly services: SessionServices,
  ) {
    socket.setNoDelay(true);
    this.reader = new SocketReader(socket); // which also takes the socket's errors, as end of input
    this.clientIp = plainIp(socket.remoteAddress);
    const listen = services.config.listen;
    this.localName = this.clientIp === undefined && listen.kind === 'unix' ? listen.path : plainIp(socket.localAddress);
    this.log = services.log.child(id);
  }

  /** The upstream connection; it exists from the greeting on (routed mode: from the first RCPT). */
  get upstream(): Upstream {
    if (this.up === undefined) throw new Error('no upstream connection yet');
    return this.up;
  }

  /** The host:port the upstream connection went to (kept after it closes), if any. */
  get upstreamPeer(): string | undefined {
    return this.up?.peer;
  }

  get hasUpstream(): boolean {
    return this.up !== undefined && !this.up.isClosed;
  }

  /** Routed mode: the upstream chosen at a RCPT, replacing none or a closed one. */
  attachUpstream(up: Upstream | undefined, route: RouteState | undefined): void {
    this.up = up;
    this.route = route;
  }

  /** Routed mode: drops the upstream connection at once (a failed dial or transaction). */
  detachUpstream(): void {
    this.up?.abort();
    this.attachUpstream(undefined, undefined);
  }

  get config(): Config {
    return this.services.config;
  }

  get timeoutMs(): number {
    return this.config.timeOut * 1000;
  }

  /** Writes a reply in one write (design invariant 7). */
  send(r: Reply): void {
    this.dialogue('CLIENT >', r.wire);
    if (!this.socket.destroyed) this.socket.write(Buffer.from(r.wire, 'latin1'));
  }

  /**
   * Reads the client's next line; ends the session on EOF or idle timeout. `secret` lines
   * (AUTH answers) are not written to the debug log: they carry credentials.
   */
  async readLine(secret = false): Promise<LineResult> {
    const line = await this.reader.line(MAX_COMMAND_LINE, this.timeoutMs);
    if (line === 'eof') throw new ClientGone('client closed the connection');
    if (line === 'timeout') throw new SiftError('CLIENT_TIMEOUT', `client idle for ${this.config.timeOut} s`);
    if (line.kind === 'line') this.dialogue('CLIENT <', secret ? '(authentication data)' : hideInitialResponse(line.text));
    return line;
  }

  /** A command to the upstream and its reply, logged at debug level (`secret`: not its text). */
  async forward(raw: string, secret = false): Promise<Reply> {
    this.dialogue('SERVER >', secret ? '(authentication data)' : raw);
    const r = await this.upstream.send(raw);
    this.dialogue('SERVER <', r.wire);
    return r;
  }

  /** A line or reply on the wire, in the debug log as proxsmtpd wrote it (log/logger.ts). */
  dialogue(direction: Direction, wire: string): void {
    dialogue(this.log, direction, wire);
  }

  /** `done` is told when the session is over (one function for all sessions, not a closure each). */
  async run(done?: (s: Session) => void): Promise<void> {
    this.log.info(`accepted connection from: ${this.clientIp ?? 'unix socket'}`);
    try {
      await this.greet();
      let outcome: Outcome = 'continue';
      while (outcome === 'continue') {
        if (this.stopping) throw new SiftError('SHUTDOWN', 'shutting down');
        this.idle = !this.reader.pending;
        const line = await this.readLine();
        this.idle = false;
        if (line.kind === 'toolong') {
          this.send(reply(500, 'Line too long'));
          continue;
        }
        if (hasControl(line.text)) {
          this.send(reply(500, '5.5.2 Syntax error: control character in the command'));
          continue;
        }
        const routed = this.services.router !== undefined;
        const verb = verbOf(line.text);
        if (verb === 'HELO' || verb === 'EHLO') this.heloName = /^[ \t]*\S+[ \t]+(\S+)/.exec(line.text)?.[1] ?? this.heloName;
        const handler = (routed ? ROUTED_HANDLERS : HANDLERS)[verbOf(line.text)] ?? (routed ? routedUnknown : relay);
        outcome = await handler(this, line.text, line.raw);
      }
    } catch (e) {
      this.fail(e);
    } finally {
      try {
        await this.close();
      } finally {
        done?.(this);
      }
    }
  }

  /** Dials the upstream and relays its greeting (spec §6, with a 421 where proxsmtpd went silent). */
  private async greet(): Promise<void> {
    if (this.services.router !== undefined) {
      // Routed mode: no upstream yet, the greeting is ours (Moxy's banner).
      this.send(reply(220, this.config.banner ?? `${this.config.serverName} ESMTP`));
      return;
    }
    const endpoint = this.services.destination(this.socket, this.clientIp, this.log);
    this.up = await Upstream.connect(endpoint, this.timeoutMs);
    const greeting = await this.upstream.reply();
    this.dialogue('SERVER <', greeting.wire);
    const single = greeting.code === 220 && greeting.lines.length === 1;
    this.send(single ? reply(220, this.config.serverName) : greeting);
  }

  private fail(e: unknown): void {
    if (e instanceof ClientGone) {
      this.log.info(e.message);
    } else if (e instanceof SiftError) {
      (e.code === 'SHUTDOWN' || e.code === 'CLIENT_TIMEOUT' ? this.log.info : this.log.warn).call(this.log, e.message);
      this.send(e.reply);
    } else {
      this.log.error(`internal error: ${(e as Error).stack ?? String(e)}`);
      this.send(reply(421, '4.3.0 Local Error, closing connection'));
    }
  }

  private async close(): Promise<void> {
    this.socket.end();
    // Upstream gets a polite QUIT; a session that failed mid-DATA has already aborted it.
    await this.up?.quit();
    this.socket.destroy();
  }

  /**
   * SIGTERM: a session waiting for a command gets 421 now; one in the middle of a command
   * or message finishes it first and gets the 421 before its next command.
   */
  shutdown(): void {
    this.stopping = true;
    if (this.idle && !this.reader.pending) {
      this.send(new SiftError('SHUTDOWN', '').reply);
      this.socket.end(() => this.socket.destroy());
    }
  }

  /** The drain deadline has passed: 421 and end at once (an unfinished DATA is dropped). */
  abort(): void {
    this.stopData?.();
    this.up?.abort();
    this.send(new SiftError('SHUTDOWN', '').reply);
    this.socket.end(() => this.socket.destroy());
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }
}
