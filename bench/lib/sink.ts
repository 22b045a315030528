// Postfix's smtp-sink as the upstream of every target: it accepts everything and throws
// it away. With -c it prints running counters ("... mesg=N", separated by CR) to stdout,
// which we read to check that every message smtp-source was told about really arrived.

import { join } from 'node:path';
import { freePort, start, stop, waitForGreeting, type Started } from './processes.js';

export const SMTP_SINK = '/usr/sbin/smtp-sink';

export interface SinkOptions {
  /** Name for the log file and the report. */
  readonly name?: string;
  /** smtp-sink -m (default 4096). */
  readonly maxConnections?: number;
  /** listen(2) backlog (default 4096). */
  readonly backlog?: number;
  /** Further smtp-sink options. */
  readonly args?: readonly string[];
}

export class Sink {
  private messages = 0;

  private constructor(
    readonly port: number,
    readonly proc: Started,
    /** The command line, for the report. */
    readonly args: readonly string[],
  ) {
    let tail = '';
    proc.child.stdout?.on('data', (d: Buffer) => {
      tail = (tail + d.toString('latin1')).slice(-4096);
      const all = [...tail.matchAll(/mesg=(\d+)/g)];
      const last = all[all.length - 1];
      if (last?.[1] !== undefined) this.messages = Math.max(this.messages, Number(last[1]));
    });
  }

  /**
   * `-m`: smtp-sink's own connection limit (default 256); excess connections wait in the
   * listen queue, so it is raised above every target's MaxConnections. The backlog too.
   * `args`: more smtp-sink options, e.g. `-W .:1` for a slow upstream (see SinkOptions).
   */
  static async start(dir: string, o: SinkOptions = {}): Promise<Sink> {
    const port = await freePort();
    const name = o.name ?? 'smtp-sink';
    const max = o.maxConnections ?? 4096;
    // smtp-sink refuses to run as root without -u.
    const user = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
    const args = [...user, '-c', '-m', String(max), ...(o.args ?? []), `127.0.0.1:${port}`, String(o.backlog ?? 4096)];
    const proc = start(name, SMTP_SINK, args, join(dir, `${name}.log`), false);
    await waitForGreeting(port, proc);
    return new Sink(port, proc, args);
  }

  /** Messages completed ('.' answered) so far, by smtp-sink's own count. */
  get received(): number {
    return this.messages;
  }

  /** Waits until the counter reaches `n` (it is printed as it changes), up to `ms`. */
  async settle(n: number, ms = 1000): Promise<number> {
    const deadline = Date.now() + ms;
    while (this.messages < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return this.messages;
  }

  stop(): Promise<void> {
    return stop(this.proc);
  }
}
