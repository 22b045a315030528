// The listening socket, the connection limit and the drain on shutdown.

import { createServer, type Server, type Socket } from 'node:net';
import { lstatSync, unlinkSync } from 'node:fs';
import { once } from 'node:events';
import { formatAddress, type ListenAddress } from '../config/addresses.js';
import type { Logger } from '../log/logger.js';
import { native, type NativeError } from '../native.js';
import { Session, type SessionServices } from '../session/session.js';
import { connectionSlots, type ConnectionSlots } from './slots.js';

/** proxsmtpd used 5, which left half of a connection burst without a greeting. */
const BACKLOG = 511;
const EMFILE_LOG_MS = 10_000;
const BUSY = Buffer.from('421 Server busy, too many connections\r\n');

export class Listener {
  private readonly server: Server;
  private readonly sessions = new Set<Session>();
  /** Out of descriptors at accept: logged at most every EMFILE_LOG_MS, with a count. */
  private emfileCount = 0;
  private emfileLogAt = 0;
  private readonly forget = (s: Session): void => {
    this.sessions.delete(s);
    this.slots.release();
  };

  /**
   * `slots`: the MaxConnections count and the connection ids, shared by all the worker
   * processes' listeners with Workers > 1 (src/server/slots.ts). `perProcess`: the
   * connections this process has descriptors for (src/server/fdlimit.ts).
   */
  constructor(
    private readonly services: SessionServices,
    private readonly log: Logger,
    private readonly slots: ConnectionSlots = connectionSlots(services.config.maxConnections),
    private readonly perProcess = Infinity,
  ) {
    // Half-open: a client that shuts down its sending side still gets its replies.
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
    this.server.on('error', (e: NativeError) => this.serverError(e));
  }

  /**
   * Out of descriptors (EMFILE, ENFILE) when accepting. libuv first closes the connections
   * it cannot accept by itself, using a descriptor it keeps in reserve, and says nothing;
   * only when that fails does the error come here. Either way the server keeps listening.
   * Logged at most every 10 s, however often it happens.
   */
  private serverError(e: NativeError): void {
    // Before it listens, a failure is listen()'s to report, once.
    if (!this.server.listening) return;
    if (e.code !== 'EMFILE' && e.code !== 'ENFILE') {
      this.log.error(`listener: ${e.message}`);
      return;
    }
    this.emfileCount++;
    const now = Date.now();
    if (now < this.emfileLogAt) return;
    this.log.error(
      `cannot accept a connection: out of file descriptors (${e.code}) with ${this.sessions.size} connections open; ` +
        `${this.emfileCount} time${this.emfileCount === 1 ? '' : 's'} since the last report; waiting connections were closed`,
    );
    this.emfileCount = 0;
    this.emfileLogAt = now + EMFILE_LOG_MS;
  }

  get connections(): number {
    return this.sessions.size;
  }

  /**
   * `transparent`: the socket gets IP_TRANSPARENT before bind, so that TPROXY rules may
   * hand it connections addressed to anyone (TransparentProxy full). Node cannot set it,
   * so the addon makes the socket and Node serves the descriptor.
   */
  async listen(address: ListenAddress, transparent = false): Promise<void> {
    if (address.kind === 'unix' && !removeStaleSocket(address.path)) {
      throw new Error(`cannot listen on ${address.path}: a file that is not a socket is there; it is left alone`);
    }
    // once() rejects with the 'error' event's error, so this also catches a failed bind.
    const ready = once(this.server, 'listening');
    if (address.kind === 'unix') this.server.listen({ path: address.path, backlog: BACKLOG });
    else if (transparent) {
      let fd: number;
      try {
        fd = native.transparentListen(address.host, address.port, BACKLOG);
      } catch (e) {
        throw new Error(`cannot listen on ${formatAddress(address)} with IP_TRANSPARENT: ${(e as Error).message}`);
      }
      this.server.listen({ fd, backlog: BACKLOG });
    } else this.server.listen({ host: address.host, port: address.port, backlog: BACKLOG });
    try {
      await ready;
    } catch (e) {
      throw new Error(`cannot listen on ${formatAddress(address)}: ${(e as Error).message}`);
    }
  }

  /**
   * The bound TCP address and port (e.g. the port chosen for `Listen: 127.0.0.1:0`);
   * undefined for a unix socket or before listening.
   */
  tcpAddress(): { readonly address: string; readonly port: number } | undefined {
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? a : undefined;
  }

  private accept(socket: Socket): void {
    let full: string | undefined;
    if (!this.slots.take()) full = `too many connections open (max ${this.slots.limit()})`;
    else if (this.sessions.size >= this.perProcess) {
      // Workers: the daemon has room, this process has no descriptors for more.
      this.slots.release();
      full = `too many connections open in this process (max ${this.perProcess}, its open files limit)`;
    }
    if (full !== undefined) {
      this.log.error(`${full}. sent busy response`);
      socket.on('error', () => undefined);
      socket.end(BUSY);
      return;
    }
    const session = new Session(this.slots.nextId().toString(16).toUpperCase(), socket, this.services);
    this.sessions.add(session);
    void session.run(this.forget);
  }

  /**
   * Shutdown, in order: 1. stop accepting; 2. idle sessions get 421 now, busy ones when
   * their current command or message is done; 3. at the deadline, the rest are cut.
   */
  async close(deadlineMs: number): Promise<void> {
    this.server.close();
    for (const s of this.sessions) s.shutdown();
    const deadline = Date.now() + deadlineMs;
    while (this.sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const s of this.sessions) {
      this.log.warn('shutdown deadline reached; closing a session that is still busy');
      s.abort();
    }
  }

  /** Workers: the listening socket's descriptor, which each worker process is given. */
  listeningFd(): number {
    // Node keeps the handle internal; its fd getter is the descriptor on Unix.
    const fd = (this.server as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) throw new Error('the listening socket has no descriptor');
    return fd;
  }

  /** Workers: serves a listening socket made by the main process. */
  async adopt(fd: number): Promise<void> {
    const ready = once(this.server, 'listening');
    this.server.listen({ fd, backlog: BACKLOG });
    await ready;
  }
}

/**
 * Removes a socket file left by an earlier run; false when something that is not a socket
 * is there (it is left alone).
 */
function removeStaleSocket(path: string): boolean {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return true; // nothing there
  }
  if (isSocket) unlinkSync(path);
  return isSocket;
}
