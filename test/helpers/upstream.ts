// A raw, scriptable upstream SMTP server that records every byte it gets. The default
// script is a plain ESMTP server; `respond` overrides the reply to any command.

import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';

export interface UpstreamSession {
  readonly socket: Socket;
  /** Command lines as received, line endings included. */
  readonly commands: string[];
  /** The raw DATA bytes of each message, as on the wire (still dot-stuffed, without `.CRLF`). */
  readonly messages: Buffer[];
}

/**
 * Returns the reply (lines joined by CRLF, no final CRLF), or `null` for the default
 * reply, `'close'` to drop the connection, `'silent'` to never answer.
 */
export type Respond = (line: string, s: UpstreamSession) => string | null | 'close' | 'silent';

export interface UpstreamOptions {
  /**
   * The greeting; `'close'` drops each connection at once, `'silent'` never greets. A
   * function decides per connection (e.g. fail only the first).
   */
  greeting?: string | 'close' | 'silent' | ((s: UpstreamSession) => string | 'close' | 'silent');
  ehlo?: string[];
  respond?: Respond;
  /** The reply after the end of data; default `250 2.0.0 Ok: queued as N`. */
  afterData?: (message: Buffer, s: UpstreamSession) => string | 'close' | 'silent';
  /** Listen on this unix socket path instead of 127.0.0.1 (`port` stays 0). */
  path?: string;
  /** Listen on this address and port instead of 127.0.0.1 and a free port (inside a test's own network namespace). */
  host?: string;
  port?: number;
}

export const DEFAULT_EHLO = [
  '250-upstream.test Hello',
  '250-PIPELINING',
  '250-SIZE 104857600',
  '250-STARTTLS',
  '250-AUTH PLAIN LOGIN',
  '250-8BITMIME',
  '250-CHUNKING',
  '250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT',
];

/** The EHLO reply of proxsmtpd-behavior.md §7's example (Postfix's list, in its order). */
export const SPEC_EHLO = [
  '250-upstream.test',
  '250-PIPELINING',
  '250-SIZE 104857600',
  '250-VRFY',
  '250-ETRN',
  '250-STARTTLS',
  '250-AUTH PLAIN LOGIN',
  '250-ENHANCEDSTATUSCODES',
  '250-8BITMIME',
  '250-DSN',
  '250-SMTPUTF8',
  '250-CHUNKING',
  '250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT',
];

export class RecordingUpstream {
  readonly sessions: UpstreamSession[] = [];
  private server: Server;
  private queued = 0;
  port = 0;

  constructor(private readonly opts: UpstreamOptions = {}) {
    this.server = createServer((socket) => this.serve(socket));
  }

  static async start(opts: UpstreamOptions = {}): Promise<RecordingUpstream> {
    const u = new RecordingUpstream(opts);
    if (opts.path !== undefined) u.server.listen(opts.path);
    else u.server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1');
    await once(u.server, 'listening');
    const a = u.server.address();
    u.port = typeof a === 'object' && a !== null ? a.port : 0;
    return u;
  }

  /** Every message received on every connection. */
  get messages(): Buffer[] {
    return this.sessions.flatMap((s) => s.messages);
  }

  get commands(): string[] {
    return this.sessions.flatMap((s) => s.commands);
  }

  private serve(socket: Socket): void {
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    const s: UpstreamSession = { socket, commands: [], messages: [] };
    this.sessions.push(s);
    const write = (r: string): void => {
      if (!socket.destroyed) socket.write(`${r}\r\n`, 'latin1');
    };
    const g = this.opts.greeting ?? '220 upstream.test ESMTP recording';
    const greeting = typeof g === 'function' ? g(s) : g;
    if (greeting === 'close') return void socket.destroy();
    if (greeting !== 'silent') write(greeting);
    let buf = Buffer.alloc(0);
    let inData = false;
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          const atStart = buf.subarray(0, 3).toString() === '.\r\n';
          if (end < 0 && !atStart) return;
          const body = atStart ? Buffer.alloc(0) : buf.subarray(0, end + 2);
          buf = buf.subarray(atStart ? 3 : end + 5);
          inData = false;
          s.messages.push(Buffer.from(body));
          const r = this.opts.afterData?.(body, s) ?? `250 2.0.0 Ok: queued as Q${++this.queued}`;
          if (r === 'close') return void socket.destroy();
          if (r !== 'silent') write(r);
          continue;
        }
        const lf = buf.indexOf('\n');
        if (lf < 0) return;
        const line = buf.subarray(0, lf + 1).toString('latin1');
        buf = buf.subarray(lf + 1);
        s.commands.push(line);
        const custom = this.opts.respond?.(line, s) ?? null;
        if (custom === 'close') return void socket.destroy();
        if (custom === 'silent') continue;
        const verb = line.trim().split(/\s+/)[0]?.toUpperCase() ?? '';
        if (custom !== null) {
          write(custom);
          if (verb === 'DATA' && custom.startsWith('354')) inData = true;
          continue;
        }
        switch (verb) {
          case 'EHLO':
            write((this.opts.ehlo ?? DEFAULT_EHLO).join('\r\n'));
            break;
          case 'HELO':
            write('250 upstream.test');
            break;
          case 'DATA':
            write('354 End data with <CR><LF>.<CR><LF>');
            inData = true;
            break;
          case 'QUIT':
            write('221 2.0.0 Bye');
            socket.end();
            return;
          case 'MAIL':
          case 'RSET':
          case 'NOOP':
          case 'XFORWARD':
          case 'XCLIENT':
            write(verb === 'XCLIENT' ? '220 upstream.test ESMTP' : '250 2.0.0 Ok');
            break;
          case 'RCPT':
            write(/reject/i.test(line) ? '550 5.1.1 <reject>: Recipient address rejected' : '250 2.1.5 Ok');
            break;
          default:
            write(`502 5.5.2 Error: command not recognized`);
        }
      }
    });
  }

  async close(): Promise<void> {
    for (const s of this.sessions) s.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
