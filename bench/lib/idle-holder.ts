// The idle-connections probe (issue 7), run as a process of its own (`node idle-holder.js
// OPTIONS-JSON`, with an IPC channel): it opens up to `count` connections, each taken
// through the greeting and EHLO and then left idle, and holds them until told to close
// (then it destroys them all).
// A process of its own so that 10,000 sockets neither share the benchmark's descriptor
// table nor its event loop, which times the '.'->250 probe meanwhile.
//
// Bounded: at most `window` handshakes at a time (a burst of 10,000 SYNs would only
// measure the listen queue), each within `handshakeMs`; no new connection after
// `deadlineMs` or after 100 failures in a row (a daemon that died refuses them all);
// the process exits by itself after `lifetimeMs` or when the benchmark goes away.

import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface HolderOptions {
  readonly port: number;
  readonly count: number;
  readonly window: number;
  readonly handshakeMs: number;
  readonly deadlineMs: number;
  readonly lifetimeMs: number;
}

/** `give-up`: the daemon died; handshakes in flight will not finish, stop waiting for them. */
export type ToHolder = { readonly cmd: 'status' } | { readonly cmd: 'close' } | { readonly cmd: 'give-up' };

export type FromHolder =
  | {
      readonly event: 'opened';
      /** Connections past their EHLO and still open. */
      readonly held: number;
      /** The most held at any moment (a daemon that crashes drops them all). */
      readonly mostHeld: number;
      /** Handshakes that failed, by reason: a reply code ("421"), an errno, "closed", "timeout". */
      readonly failures: Readonly<Record<string, number>>;
      /** Why opening stopped before `count` connections were tried, if it did. */
      readonly stoppedEarly: string | undefined;
      /** From the first connect() to the last handshake's end. */
      readonly ms: number;
    }
  | { readonly event: 'status'; readonly held: number; readonly dropped: number }
  | { readonly event: 'closed'; readonly ms: number };

/** The reply lines in `buf`: [code, final?][]; what is left of an incomplete line stays. */
function takeReplies(buf: string): { codes: Array<{ code: string; last: boolean }>; rest: string } {
  const codes: Array<{ code: string; last: boolean }> = [];
  let nl: number;
  while ((nl = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    codes.push({ code: line.slice(0, 3), last: line[3] !== '-' });
  }
  return { codes, rest: buf };
}

function parseOptions(text: string | undefined): HolderOptions {
  const o = JSON.parse(text ?? '') as Record<string, unknown>;
  const num = (k: keyof HolderOptions): number => {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new Error(`idle-holder: bad ${k}: ${String(v)}`);
    return v;
  };
  return { port: num('port'), count: num('count'), window: num('window'), handshakeMs: num('handshakeMs'), deadlineMs: num('deadlineMs'), lifetimeMs: num('lifetimeMs') };
}

function hold(o: HolderOptions): void {
  const send = (m: FromHolder, then: () => void = () => undefined): void => void process.send?.(m, then);
  const held = new Set<Socket>();
  const all = new Set<Socket>();
  const failures: Record<string, number> = {};
  let next = 0;
  let inFlight = 0;
  let failedInARow = 0;
  let dropped = 0;
  let mostHeld = 0;
  let stoppedEarly: string | undefined;
  let openedSent = false;
  const t0 = performance.now();

  const pump = (): void => {
    while (stoppedEarly === undefined && inFlight < o.window && next < o.count) {
      next++;
      open();
    }
    if (!openedSent && inFlight === 0 && (next >= o.count || stoppedEarly !== undefined)) {
      openedSent = true;
      send({ event: 'opened', held: held.size, mostHeld, failures, stoppedEarly, ms: performance.now() - t0 });
    }
  };

  /** How to fail each handshake in flight (for give-up). */
  const pending = new Map<Socket, (reason: string) => void>();

  const open = (): void => {
    inFlight++;
    const s = connect({ port: o.port, host: '127.0.0.1' });
    all.add(s);
    let state: 'greeting' | 'ehlo' | 'held' | 'failed' = 'greeting';
    let buf = '';
    const fail = (reason: string): void => {
      if (state === 'held' || state === 'failed') return;
      state = 'failed';
      pending.delete(s);
      clearTimeout(timer);
      s.destroy();
      inFlight--;
      failures[reason] = (failures[reason] ?? 0) + 1;
      if (++failedInARow >= 100) stoppedEarly ??= `100 failed handshakes in a row (the last: ${reason})`;
      pump();
    };
    const timer = setTimeout(() => fail('handshake timeout'), o.handshakeMs);
    pending.set(s, fail);
    s.on('data', (d: Buffer) => {
      if (state === 'held' || state === 'failed') return; // idle: a 421 at a timeout shows as a close
      const r = takeReplies(buf + d.toString('latin1'));
      buf = r.rest;
      for (const { code, last } of r.codes) {
        if (!last) continue;
        if (state === 'greeting') {
          if (code !== '220') return fail(code);
          state = 'ehlo';
          s.write('EHLO bench.invalid\r\n');
        } else if (state === 'ehlo') {
          if (code !== '250') return fail(code);
          state = 'held';
          pending.delete(s);
          clearTimeout(timer);
          inFlight--;
          held.add(s);
          mostHeld = Math.max(mostHeld, held.size);
          failedInARow = 0;
          pump();
          return;
        }
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => fail(e.code ?? e.message));
    s.on('close', () => {
      all.delete(s);
      if (state === 'held') {
        held.delete(s);
        dropped++;
      } else fail('closed');
    });
  };

  /**
   * Destroys every socket: with thousands held, saying QUIT on each and waiting for the
   * replies costs the run seconds and measures nothing (the daemon is stopped next).
   */
  const closeAll = (): void => {
    const c0 = performance.now();
    for (const s of all) s.destroy();
    send({ event: 'closed', ms: performance.now() - c0 }, () => process.exit(0));
  };

  process.on('message', (m: ToHolder) => {
    if (m.cmd === 'status') send({ event: 'status', held: held.size, dropped });
    else if (m.cmd === 'close') closeAll();
    else if (m.cmd === 'give-up') {
      stoppedEarly ??= 'the daemon exited';
      for (const fail of [...pending.values()]) fail('the daemon exited');
      pump();
    }
  });
  // The benchmark went away: nobody will ever say close.
  process.on('disconnect', () => process.exit(0));
  setTimeout(() => {
    if (next < o.count) stoppedEarly ??= `deadline: no new connection after ${o.deadlineMs} ms`;
    pump();
  }, o.deadlineMs).unref();
  setTimeout(() => {
    process.stderr.write(`idle-holder: lifetime of ${o.lifetimeMs} ms over, exiting\n`);
    process.exit(3);
  }, o.lifetimeMs).unref();
  pump();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) hold(parseOptions(process.argv[2]));
