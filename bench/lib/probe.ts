// Our own SMTP client on a raw socket (TCP_NODELAY), for what smtp-source cannot time:
// the delay from the final "." to the 250, per message, on one connection, and a whole
// one-message session from connect() to the final 250. This is where a proxy's own latency
// shows (proxsmtpd 1.10 stalls ~44 ms per message on Nagle's algorithm, twice per session).

import { connect, type Socket } from 'node:net';
import { once } from 'node:events';

class Replies {
  private buf = '';
  private lines: string[] = [];
  private waiter: (() => void) | undefined;
  private closed = false;

  constructor(socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      this.waiter?.();
    });
    const end = (): void => {
      this.closed = true;
      this.waiter?.();
    };
    socket.on('close', end);
    socket.on('error', end);
  }

  /** The next whole reply (multi-line too): "250-a CRLF 250 b CRLF"; also accepts a bare "250". */
  async next(timeoutMs: number): Promise<{ code: number; text: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl + 1);
        this.buf = this.buf.slice(nl + 1);
        this.lines.push(line);
        if (!/^\d{3}-/.test(line)) {
          const text = this.lines.join('');
          this.lines = [];
          return { code: Number(line.slice(0, 3)), text };
        }
      }
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.buf)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timeout waiting for a reply');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          this.waiter = undefined;
          resolve();
        };
      });
    }
  }
}

export interface ProbeResult {
  /** Milliseconds from writing "." to reading the whole final reply, per message. */
  readonly dotMs: number[];
  readonly failures: number;
  readonly problem: string | undefined;
}

/** A message body of about `size` bytes in 78-byte lines, CRLF endings, no leading dots. */
export function body(size: number): string {
  const line = 'X'.repeat(76) + '\r\n';
  return 'From: <sender@bench.invalid>\r\nTo: <rcpt@bench.invalid>\r\nSubject: bench\r\n\r\n' + line.repeat(Math.max(1, Math.ceil(size / line.length)));
}

type Expect = (code: number, what: string) => Promise<void>;

/** Connects (TCP_NODELAY) and reads replies; `expect` throws on any other code or a timeout. */
async function open(port: number, timeoutMs: number): Promise<{ socket: Socket; r: Replies; expect: Expect }> {
  const socket = connect({ port, host: '127.0.0.1', noDelay: true });
  socket.on('error', () => undefined);
  const r = new Replies(socket);
  const expect: Expect = async (code, what) => {
    const got = await r.next(timeoutMs);
    if (got.code !== code) throw new Error(`${what}: expected ${code}, got ${JSON.stringify(got.text.trim())}`);
  };
  try {
    // once() rejects on 'error' (a refused connection) and on the timeout.
    await once(socket, 'connect', { signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    socket.destroy();
    throw new Error(`connect: ${(e as Error).message}`);
  }
  return { socket, r, expect };
}

/** MAIL, RCPT, DATA and the body; resolves when "." is about to be written. */
async function transaction(socket: Socket, expect: Expect, data: Buffer): Promise<void> {
  socket.write('MAIL FROM:<sender@bench.invalid>\r\n');
  await expect(250, 'MAIL');
  socket.write('RCPT TO:<rcpt@bench.invalid>\r\n');
  await expect(250, 'RCPT');
  socket.write('DATA\r\n');
  await expect(354, 'DATA');
  socket.write(data);
}

/**
 * `messages` messages of `size` bytes on one connection, each as MAIL, RCPT, DATA, the
 * body, then "." in a write of its own, timed to the final reply.
 */
export async function probeDotLatency(port: number, messages: number, size: number, timeoutMs = 30_000): Promise<ProbeResult> {
  return (await probeDotLatencies([port], messages, size, timeoutMs))[0] as ProbeResult;
}

type Connection = Awaited<ReturnType<typeof open>>;

/** One probe connection of probeDotLatencies(). */
interface Probe {
  c: Connection | undefined;
  readonly dotMs: number[];
  failures: number;
  problem: string | undefined;
}

/**
 * The '.'->250 probe on one connection to each of `ports`, their messages taken in turn
 * (one to each port, in this order and then in the reverse one, so that none always goes
 * first), so that every port is timed in the same moments: this VM's latency drifts by
 * 2-3x within seconds. A connection that fails is left with its problem; the others go on.
 */
export async function probeDotLatencies(ports: readonly number[], messages: number, size: number, timeoutMs = 30_000): Promise<ProbeResult[]> {
  const probes: Probe[] = ports.map(() => ({ c: undefined, dotMs: [], failures: 0, problem: undefined }));
  const data = Buffer.from(body(size), 'latin1');
  /** One step on a probe's connection, unless it has failed already; a failure is its problem. */
  const attempt = async (p: Probe, step: (c: Connection) => Promise<void>): Promise<void> => {
    if (p.problem !== undefined || p.c === undefined) return;
    try {
      await step(p.c);
    } catch (e) {
      p.problem = (e as Error).message;
    }
  };
  try {
    await Promise.all(
      probes.map(async (p, k) => {
        try {
          p.c = await open(ports[k] as number, timeoutMs);
        } catch (e) {
          p.problem = (e as Error).message;
        }
        await attempt(p, async (c) => {
          await c.expect(220, 'greeting');
          c.socket.write('EHLO bench.invalid\r\n');
          await c.expect(250, 'EHLO');
        });
      }),
    );
    const reversed = [...probes].reverse();
    for (let i = 0; i < messages; i++) {
      for (const p of i % 2 === 0 ? probes : reversed) {
        await attempt(p, async (c) => {
          await transaction(c.socket, c.expect, data);
          const t0 = performance.now();
          c.socket.write('.\r\n');
          const fin = await c.r.next(timeoutMs);
          const ms = performance.now() - t0;
          if (fin.code === 250) p.dotMs.push(ms);
          else p.failures++;
        });
      }
    }
    for (const p of probes) {
      await attempt(p, async (c) => {
        c.socket.write('QUIT\r\n');
        await c.r.next(timeoutMs).catch(() => undefined);
      });
    }
  } finally {
    for (const p of probes) p.c?.socket.destroy();
  }
  return probes.map((p) => ({ dotMs: p.dotMs, failures: p.failures, problem: p.problem }));
}

export interface SessionProbeResult {
  /** Milliseconds from connect() to reading the whole final reply to ".", per session. */
  readonly sessionMs: number[];
  readonly failures: number;
  /** The first failure's reason, if any. */
  readonly problem: string | undefined;
}

/**
 * `sessions` sessions one after another, each a new connection carrying one message:
 * connect, greeting, EHLO, MAIL, RCPT, DATA, `size` bytes, "." and the final 250, timed
 * from the connect() call. QUIT and its reply follow, untimed, before the next session.
 */
export async function probeSessionLatency(port: number, sessions: number, size: number, timeoutMs = 30_000): Promise<SessionProbeResult> {
  return (await probeSessionLatencies([port], sessions, size, timeoutMs))[0] as SessionProbeResult;
}

/**
 * The connect->250 probe on each of `ports`, their sessions taken in turn as in
 * probeDotLatencies(), so that every port is timed in the same moments.
 */
export async function probeSessionLatencies(ports: readonly number[], sessions: number, size: number, timeoutMs = 30_000): Promise<SessionProbeResult[]> {
  const results = ports.map(() => ({ sessionMs: [] as number[], failures: 0, problem: undefined as string | undefined }));
  const data = Buffer.from(body(size), 'latin1');
  const order = ports.map((_, k) => k);
  const reversed = [...order].reverse();
  for (let i = 0; i < sessions; i++) {
    for (const k of i % 2 === 0 ? order : reversed) {
      const r = results[k] as (typeof results)[number];
      try {
        r.sessionMs.push(await oneSession(ports[k] as number, data, timeoutMs));
      } catch (e) {
        r.failures++;
        r.problem ??= (e as Error).message;
      }
    }
  }
  return results;
}

/** One timed one-message session (see probeSessionLatency): its milliseconds. */
async function oneSession(port: number, data: Buffer, timeoutMs: number): Promise<number> {
  let socket: Socket | undefined;
  try {
    const t0 = performance.now();
    const c = await open(port, timeoutMs);
    socket = c.socket;
    await c.expect(220, 'greeting');
    socket.write('EHLO bench.invalid\r\n');
    await c.expect(250, 'EHLO');
    await transaction(socket, c.expect, data);
    socket.write('.\r\n');
    await c.expect(250, "'.'");
    const ms = performance.now() - t0;
    socket.write('QUIT\r\n');
    await c.r.next(timeoutMs).catch(() => undefined);
    return ms;
  } finally {
    socket?.destroy();
  }
}
