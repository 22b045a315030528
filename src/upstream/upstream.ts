// The lockstep client to the upstream MTA: `await upstream.send(line)` gives its reply.
// Every failure is a SiftError carrying the 4xx the client gets for it.

import { connect, Socket } from 'node:net';
import { once } from 'node:events';
import { drained, written, type DrainResult } from '../net/drain.js';
import { SiftError } from '../errors.js';
import { transparentConnect } from '../native.js';
import { plainIp } from '../net/address.js';
import { descriptorOf, SocketReader } from '../net/reader.js';
import { ProtocolError, ReplyAssembler, type Reply } from '../smtp/reply.js';

/** proxsmtpd's SP_LINE_LENGTH: longer reply lines are truncated (spec §5). */
const MAX_REPLY_LINE = 4224;
const MAX_REPLY_LINES = 1000;

export type Endpoint =
  | {
      readonly host: string;
      readonly port: number;
      /**
       * TransparentProxy full: the client's address, bound with IP_TRANSPARENT so that the
       * upstream sees the client, not us. `host` is then an IP address.
       */
      readonly source?: string;
    }
  | { readonly path: string };

export function describe(e: Endpoint): string {
  return 'path' in e ? e.path : e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
}

function ignore(): void {}

/** Out of descriptors is said plainly (Node's text is `connect EMFILE host:port - Local (undefined:undefined)`). */
function connectError(e: unknown): string {
  const code = (e as { code?: unknown }).code;
  return code === 'EMFILE' || code === 'ENFILE' ? `out of file descriptors (${code})` : (e as Error).message;
}

export class Upstream {
  private readonly reader: SocketReader;
  private closed = false;
  /** The client's own QUIT went up: closing must not say it a second time. */
  private quitSent = false;

  /** The host:port (or socket path) connected to, for the accounting's %dhost. */
  readonly peer: string;
  /** The unix socket's path, when the upstream is one. */
  private readonly path: string | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly timeoutMs: number,
    endpoint?: Endpoint,
  ) {
    const ip = socket.remoteAddress?.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1');
    this.peer =
      ip !== undefined && socket.remotePort !== undefined
        ? describe({ host: ip, port: socket.remotePort })
        : endpoint !== undefined ? describe(endpoint) : '';
    this.path = endpoint !== undefined && 'path' in endpoint ? endpoint.path : undefined;
    this.reader = new SocketReader(socket);
    socket.on('close', () => (this.closed = true));
  }

  static async connect(endpoint: Endpoint, timeoutMs: number): Promise<Upstream> {
    if ('host' in endpoint && endpoint.source !== undefined) return Upstream.connectFrom(endpoint.source, endpoint, timeoutMs);
    const socket = connect({ ...endpoint, noDelay: true });
    socket.on('error', ignore); // reported by `once` below; from then on, by the reader
    const timer = setTimeout(() => socket.destroy(new Error('connect timed out')), timeoutMs);
    try {
      await once(socket, 'connect');
    } catch (e) {
      socket.destroy();
      throw new SiftError('UPSTREAM_UNREACHABLE', `cannot connect to ${describe(endpoint)}: ${connectError(e)}`);
    } finally {
      clearTimeout(timer);
    }
    socket.off('error', ignore);
    return new Upstream(socket, timeoutMs, endpoint);
  }

  /**
   * A connection from someone else's address (TransparentProxy full). Node cannot set
   * IP_TRANSPARENT, so the addon makes the socket and connects it; Node adopts the fd only
   * once the connect is done, so the socket is a plain connected one from then on.
   */
  private static async connectFrom(source: string, to: { host: string; port: number }, timeoutMs: number): Promise<Upstream> {
    let fd: number;
    try {
      fd = await transparentConnect(source, to.host, to.port, timeoutMs);
    } catch (e) {
      throw new SiftError('UPSTREAM_UNREACHABLE', `cannot connect to ${describe(to)} from ${source}: ${connectError(e)}`);
    }
    const socket = new Socket({ fd, readable: true, writable: true });
    socket.setNoDelay(true);
    return new Upstream(socket, timeoutMs, to); // whose reader takes the socket's errors
  }

  /**
   * The upstream as the filter sees it (SERVER): its IP address, or the path of a unix
   * socket, which is what proxsmtpd sets there (observed: `SERVER=/path/to/socket`).
   */
  get filterAddress(): string | undefined {
    return this.path ?? plainIp(this.socket.remoteAddress);
  }

  /** The socket's descriptor, when it is open with nothing of ours waiting to be written. */
  get idleDescriptor(): number | undefined {
    if (this.closed || this.socket.destroyed || this.socket.writableLength > 0) return undefined;
    return descriptorOf(this.socket);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Reads one whole reply (the greeting, or after a write of our own). */
  async reply(): Promise<Reply> {
    const assembler = new ReplyAssembler(MAX_REPLY_LINES);
    for (;;) {
      const line = await this.reader.line(MAX_REPLY_LINE, this.timeoutMs);
      if (line === 'eof') throw new SiftError('UPSTREAM_GONE', 'upstream closed the connection');
      if (line === 'timeout') throw new SiftError('UPSTREAM_TIMEOUT', `no reply from upstream in ${this.timeoutMs / 1000} s`);
      // An over-long line is cut, as proxsmtpd did (spec §5); its code still decides.
      const { raw, text } = line.kind === 'toolong' ? { raw: `${line.head}\r\n`, text: line.head } : line;
      try {
        const reply = assembler.push(raw, text);
        if (reply) return reply;
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        throw new SiftError('UPSTREAM_PROTOCOL', e.message);
      }
    }
  }

  /** Writes bytes, waiting for the socket to drain (backpressure). */
  async write(data: Buffer | string): Promise<void> {
    if (this.closed || this.socket.destroyed) throw new SiftError('UPSTREAM_GONE', 'upstream closed the connection');
    if (!this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data)) {
      await this.drained();
    }
  }

  /**
   * Writes bytes and resolves once the socket has handed all of them to the kernel: the
   * caller may then fill `data` again (a delivery's reused buffers).
   */
  async writeOut(data: Buffer): Promise<void> {
    if (this.closed || this.socket.destroyed) throw new SiftError('UPSTREAM_GONE', 'upstream closed the connection');
    const pending = written(this.socket, data, this.timeoutMs);
    if (pending !== undefined) this.check(await pending);
  }

  private async drained(): Promise<void> {
    this.check(await drained(this.socket, this.timeoutMs));
  }

  private check(r: DrainResult): void {
    if (r.kind === 'error' || r.kind === 'timeout') throw this.writeFailure(r.kind === 'error' ? r.error.message : undefined);
    if (this.closed) throw new SiftError('UPSTREAM_GONE', 'upstream closed the connection');
  }

  /** A write that failed (`why`, e.g. EPIPE or ECONNRESET: a connection gone) or timed out. */
  writeFailure(why: string | undefined): SiftError {
    if (why !== undefined) return new SiftError('UPSTREAM_GONE', `upstream connection failed: ${why}`);
    return new SiftError('UPSTREAM_TIMEOUT', `upstream did not take data in ${this.timeoutMs / 1000} s`);
  }

  /** One round trip: a command line (with its CRLF) and its reply. */
  async send(line: string): Promise<Reply> {
    if (/^[ \t]*QUIT(?:[ \t]|\r?\n)/i.test(line)) this.quitSent = true;
    await this.write(line);
    return this.reply();
  }

  /** Says QUIT without waiting long for the answer, then closes. */
  async quit(): Promise<void> {
    if (this.closed) return;
    if (this.quitSent) this.socket.end();
    else this.socket.end('QUIT\r\n');
    const timer = setTimeout(() => this.socket.destroy(), 1000);
    try {
      await once(this.socket, 'close');
    } catch {
      // closing anyway
    } finally {
      clearTimeout(timer);
    }
  }

  /** Drops the connection at once: an unfinished DATA is never completed. */
  abort(): void {
    this.closed = true;
    this.socket.destroy();
  }
}
