// A burst of simultaneous connections (issue 7): every connect() is issued in the same tick,
// and each connection's time from its connect() call to its whole 220 greeting line is
// recorded. A listen backlog too small for the burst (proxsmtpd's is 5) shows here as
// SYN retransmits: 1 s, 3 s, 7 s after the first try.

import { connect, type Socket } from 'node:net';

export interface BurstResult {
  readonly attempted: number;
  /** Milliseconds from connect() to the 220 line, per greeted connection, in arrival order. */
  readonly greetedMs: number[];
  /** Connections without a 220 by the deadline, by reason ("timeout", "ECONNRESET", "421", ...). */
  readonly failures: ReadonlyMap<string, number>;
}

/**
 * Opens `n` connections at once to 127.0.0.1:`port` and waits for their greetings, at most
 * `deadlineMs` in all; then says QUIT on the greeted ones (so daemons do not log lost
 * clients) and destroys every socket within `closeMs`.
 */
export async function probeBurst(port: number, n: number, deadlineMs: number, closeMs = 2000): Promise<BurstResult> {
  const greetedMs: number[] = [];
  const failures = new Map<string, number>();
  const sockets: Socket[] = [];
  const greeted = new Set<Socket>();
  const settled = new Set<Socket>();
  let allDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (allDone = resolve));
  /** A connection's outcome, the first one only: its time to 220 in ms, or why not. */
  const settle = (s: Socket, outcome: number | string): void => {
    if (settled.has(s)) return;
    settled.add(s);
    if (typeof outcome === 'number') {
      greeted.add(s);
      greetedMs.push(outcome);
    } else failures.set(outcome, (failures.get(outcome) ?? 0) + 1);
    if (settled.size === n) allDone();
  };
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const s = connect({ port, host: '127.0.0.1', noDelay: true });
    sockets.push(s);
    let got = '';
    s.on('data', (d: Buffer) => {
      if (settled.has(s)) return;
      got += d.toString('latin1');
      if (!got.includes('\n')) return;
      // A multi-line greeting ("220-...") counts when its last line is in.
      if (/^\d{3}-/.test(got) && !/^\d{3} .*\n/m.test(got)) return;
      const code = got.slice(0, 3);
      settle(s, code === '220' ? performance.now() - t0 : code);
    });
    s.on('error', (e: NodeJS.ErrnoException) => settle(s, e.code ?? e.message));
    s.on('close', () => settle(s, 'closed before the greeting'));
  }
  const timer = setTimeout(() => {
    for (const s of sockets) settle(s, `no greeting within ${deadlineMs} ms`);
  }, deadlineMs);
  await done;
  clearTimeout(timer);
  // Goodbye: QUIT where greeted, then destroy whatever is still open after closeMs.
  const closed = Promise.all(sockets.map((s) => (s.closed ? Promise.resolve() : new Promise<void>((r) => s.once('close', () => r())))));
  for (const s of sockets) {
    if (greeted.has(s) && s.writable) s.end('QUIT\r\n');
    else s.destroy();
  }
  await Promise.race([closed, new Promise((r) => setTimeout(r, closeMs))]);
  for (const s of sockets) s.destroy();
  return { attempted: n, greetedMs, failures };
}
