// A scripted SMTP client on a raw socket: send bytes, read whole replies.

import { connect, type Socket } from 'node:net';
import { once } from 'node:events';

export class RawClient {
  private buf = '';
  private closed = false;
  private waiter: (() => void) | undefined;

  private constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  /** `halfOpen`: the client's side stays open after the server's FIN (a client that never hangs up). */
  static async connect(port: number, host = '127.0.0.1', halfOpen = false): Promise<RawClient> {
    const socket = connect({ port, host, allowHalfOpen: halfOpen });
    await once(socket, 'connect');
    return new RawClient(socket);
  }

  /** Connects to a unix socket. */
  static async connectPath(path: string): Promise<RawClient> {
    const socket = connect({ path });
    await once(socket, 'connect');
    return new RawClient(socket);
  }

  send(data: string | Buffer): void {
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Resolves when `pred` finds something in the buffer, or rejects on timeout or close. */
  private async until<T>(pred: () => T | undefined, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = pred();
      if (v !== undefined) return v;
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.buf)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout; unread: ${JSON.stringify(this.buf)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** One whole reply (all its lines, CRLFs included). */
  reply(timeoutMs = 5000): Promise<string> {
    return this.until(() => {
      // A last line may be a bare code (`250\r\n`), or have a TAB after its code (`250\tok`).
      const m = /^(?:\d{3}-[^\n]*\n)*\d{3}(?:[ \t\r][^\n]*)?\n/.exec(this.buf);
      if (!m) return undefined;
      this.buf = this.buf.slice(m[0].length);
      return m[0];
    }, timeoutMs);
  }

  /** Reads the 220 greeting and, unless `helo` is null, says HELO/EHLO; throws if refused. */
  async greet(helo: string | null = 'EHLO client.test'): Promise<this> {
    const greeting = await this.reply();
    if (!greeting.startsWith('220')) throw new Error(`greeting: ${JSON.stringify(greeting)}`);
    if (helo !== null) {
      const r = await this.command(helo);
      if (!r.startsWith('250')) throw new Error(`${helo}: ${JSON.stringify(r)}`);
    }
    return this;
  }

  /** Sends a command and returns its reply. */
  async command(line: string, timeoutMs = 5000): Promise<string> {
    this.send(`${line}\r\n`);
    return this.reply(timeoutMs);
  }

  /** Waits for the server to close the connection; returns what was left unread. */
  async waitClosed(timeoutMs = 5000): Promise<string> {
    await this.until(() => (this.closed ? true : undefined), timeoutMs).catch((e: Error) => {
      if (!this.closed) throw e;
    });
    return this.buf;
  }

  close(): void {
    this.socket.destroy();
  }
}
