// Idle connections (issue 7): what holding many clients after their EHLO costs a daemon
// in resident memory, and whether it still serves new mail at its usual latency meanwhile.
// The connections live in a process of their own (idle-holder.ts); this side drives it,
// reads the daemon's RSS and descriptors from /proc, and runs the '.'->250 probe.

import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FromHolder, HolderOptions, ToHolder } from './idle-holder.js';
import { fdLimit, openFds, type FdLimit } from './limits.js';
import { processTree, treeRssKb } from './memory.js';
import { probeDotLatencies, probeDotLatency, type ProbeResult } from './probe.js';
import { isRunning, startNode, stop, type Started } from './processes.js';

const HOLDER = fileURLToPath(new URL('./idle-holder.js', import.meta.url));

type Event = FromHolder['event'];
type Of<E extends Event> = Extract<FromHolder, { event: E }>;

/** The parent's end of an idle-holder process: commands out, events in, each awaited with a timeout. */
class Holder {
  private readonly inbox: FromHolder[] = [];
  private wake: (() => void) | undefined;

  private constructor(readonly proc: Started) {
    proc.child.on('message', (m: FromHolder) => {
      this.inbox.push(m);
      this.wake?.();
    });
    proc.child.on('exit', () => this.wake?.());
  }

  static start(o: HolderOptions, logPath: string): Holder {
    return new Holder(startNode('idle-holder', HOLDER, [JSON.stringify(o)], logPath));
  }

  command(c: ToHolder): void {
    if (isRunning(this.proc) && this.proc.child.connected) this.proc.child.send(c);
  }

  /** The next event of that kind (earlier ones of other kinds are dropped). */
  async next<E extends Event>(event: E, timeoutMs: number): Promise<Of<E>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex((m) => m.event === event);
      if (i >= 0) return this.inbox.splice(0, i + 1)[i] as Of<E>;
      if (!isRunning(this.proc)) throw new Error(`idle-holder exited (${this.proc.child.exitCode ?? this.proc.child.signalCode}) before '${event}'`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`idle-holder: no '${event}' within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          this.wake = undefined;
          resolve();
        };
      });
    }
  }
}

export interface IdleOptions {
  /** Connections to open and hold. */
  readonly count: number;
  /** Messages of the '.'->250 probe, before opening and while holding. */
  readonly probeMessages: number;
  /** No new connection after this long (the whole opening phase). */
  readonly deadlineMs: number;
  /** Directory for the holder's log. */
  readonly dir: string;
  /**
   * The port of a twin: the same daemon with the same configuration and upstream, started
   * alongside, that holds nothing. The probe while holding alternates its messages between
   * the two, so the twin gives the usual latency in the very same moments.
   */
  readonly twinPort?: number | undefined;
}

export interface IdleFigures {
  /** The holder's report once opening ended. */
  readonly opened: Of<'opened'>;
  /** Still held after the probe ran (a daemon that dies or drops them shows here). */
  readonly heldAfter: number;
  /** Tree RSS of the daemon, kB, just before opening and while holding; undefined for direct. */
  readonly rssBeforeKb: number | undefined;
  readonly rssHeldKb: number | undefined;
  /** The descriptors of each of the daemon's processes while holding (Workers), and its RLIMIT_NOFILE after its start-up. */
  readonly daemonFds: readonly (number | undefined)[] | undefined;
  readonly daemonLimit: FdLimit | undefined;
  /**
   * The '.'->250 probe on the fresh daemon (its usual latency, after a warm-up), while
   * holding, and again once the connections are closed (undefined if that probe could not
   * run): the daemon's usual latency on both sides of the holding, as this VM's latency
   * drifts by 2-3x within seconds.
   */
  readonly before: ProbeResult;
  readonly during: ProbeResult;
  readonly after: ProbeResult | undefined;
  /** The twin's messages, taken in turn with `during`'s; undefined without a twin. */
  readonly twin: ProbeResult | undefined;
}

const MESSAGE = 4 * 1024;
/** Warm-up messages on each of 8 connections, a quarter of the probe's: 25 in a full run, enough for V8 to optimise the message path. */
const warmUp = (o: IdleOptions): number => Math.max(5, Math.ceil(o.probeMessages / 4));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Each handshake's time limit (greeting and EHLO). */
const HANDSHAKE_MS = 5000;

/** `count` connections opened, as the held ones are, on `port`; `log`: the holder's log. */
function hold(port: number, o: IdleOptions, log: string): Holder {
  return Holder.start({ port, count: o.count, window: 200, handshakeMs: HANDSHAKE_MS, deadlineMs: o.deadlineMs, lifetimeMs: o.deadlineMs + 120_000 }, join(o.dir, log));
}

/**
 * The twin's history: as many handshakes as the held daemon will serve, every connection
 * closed once all are open. Without them the held daemon came out faster than its twin
 * (0.56-0.97 of its median in 18 repetitions): a daemon that had served 5,000 handshakes
 * was 3-25% faster than one that had not, its code warmer, which could hide what holding costs.
 */
async function handshakes(port: number, o: IdleOptions): Promise<void> {
  const holder = hold(port, o, 'idle-twin-holder.log');
  try {
    await holder.next('opened', o.deadlineMs + HANDSHAKE_MS + 10_000);
    holder.command({ cmd: 'close' });
    await holder.next('closed', 10_000);
  } finally {
    await stop(holder.proc);
  }
}

/**
 * On `daemon` (undefined: direct, the sink itself) listening on `port`: the probe,
 * the RSS, `count` connections opened and held, the RSS again and the probe again, then
 * every connection closed. Throws only when the holder itself fails.
 */
export async function measureIdle(port: number, daemon: Started | undefined, o: IdleOptions): Promise<IdleFigures> {
  const pid = daemon?.pid;
  // Read after start-up: a daemon may raise its own limit then.
  const daemonLimit = pid === undefined ? undefined : fdLimit(pid);
  // A fresh daemon: a first probe warms it up (V8 compiles lazily), the second is its usual
  // latency. The warm-up on 8 connections at once, so that with Workers every process gets
  // some: the probes before and while holding may each be served by any of them. The twin
  // gets the same handshakes first, then the same warm-up and the same probe, in turn, so
  // that it is as warm.
  const warm = (p: number): Promise<unknown> => Promise.all(Array.from({ length: 8 }, () => probeDotLatency(p, warmUp(o), MESSAGE, 10_000)));
  const twinPort = o.twinPort;
  await Promise.all([warm(port), twinPort === undefined ? undefined : handshakes(twinPort, o).then(() => warm(twinPort))]);
  const ports = [port, ...(twinPort === undefined ? [] : [twinPort])];
  const [before] = await probeDotLatencies(ports, o.probeMessages, MESSAGE, 10_000);
  // Let the probe's session end on the daemon's side before the baseline.
  await sleep(300);
  const rssBeforeKb = pid === undefined ? undefined : treeRssKb(pid);
  const holder = hold(port, o, 'idle-holder.log');
  // A daemon that dies (proxsmtpd, past fd 1023) leaves handshakes that would only time out.
  const giveUp = (): void => holder.command({ cmd: 'give-up' });
  daemon?.child.once('exit', giveUp);
  let closed = false;
  try {
    const opened = await holder.next('opened', o.deadlineMs + HANDSHAKE_MS + 10_000);
    // The last handshakes' upstream replies are relayed by now; give the heap a moment
    // (not a dead daemon: nothing to measure there).
    if (pid === undefined || treeRssKb(pid) > 0) await sleep(1000);
    const rssHeldKb = pid === undefined ? undefined : treeRssKb(pid);
    const daemonFds = pid === undefined ? undefined : processTree(pid).map(openFds);
    const [during, twin] = await probeDotLatencies(ports, o.probeMessages, MESSAGE, 10_000);
    holder.command({ cmd: 'status' });
    const heldAfter = (await holder.next('status', 10_000)).held;
    holder.command({ cmd: 'close' });
    closed = true;
    await holder.next('closed', 10_000);
    // Let the daemon see them go.
    await sleep(500);
    const after = daemon === undefined || isRunning(daemon) ? await probeDotLatency(port, o.probeMessages, MESSAGE, 10_000) : undefined;
    return { opened, heldAfter, rssBeforeKb, rssHeldKb, daemonFds, daemonLimit, before: before as ProbeResult, during: during as ProbeResult, after, twin };
  } finally {
    daemon?.child.off('exit', giveUp);
    if (!closed) {
      holder.command({ cmd: 'close' });
      await holder.next('closed', 10_000).catch(() => undefined);
    }
    await stop(holder.proc);
  }
}
