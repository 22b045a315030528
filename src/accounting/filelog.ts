// The file log sink (LogType filelog; Moxy's logfile_name): one line per message event.
//
// Writing never blocks a session (issue 6): write() only appends to an in-memory queue; one
// background loop writes the queue with async fs calls. The queue is bounded, so a log file
// that cannot keep up (or a full disk) costs lines, never memory or mail. Failures are
// reported once per failing spell, through onError (the daemon's logger: syslog or stderr),
// and again when writing works again, with the count of lines lost.
//
// reopen() is for logrotate: the lead wires SIGHUP and SIGUSR1 to it. The next write closes
// the old descriptor and opens the path again (created 0640 if missing), so lines written
// before the signal are in the rotated file and every line after it in the new one.

import { open, type FileHandle } from 'node:fs/promises';

export interface FileLogOptions {
  /** Where problems are reported (never thrown). */
  readonly onError?: (message: string) => void;
  /** Most bytes queued before new lines are dropped (default 4 MiB). */
  readonly maxQueuedBytes?: number;
}

export class FileLog {
  private queue: string[] = [];
  private queuedBytes = 0;
  private handle: FileHandle | undefined;
  private reopening = false;
  private running: Promise<void> | undefined;
  private failing = false;
  private lost = 0;
  private closed = false;
  private readonly onError: (message: string) => void;
  private readonly maxQueuedBytes: number;

  constructor(
    readonly path: string,
    options: FileLogOptions = {},
  ) {
    this.onError = options.onError ?? (() => undefined);
    this.maxQueuedBytes = options.maxQueuedBytes ?? 4 * 1024 * 1024;
  }

  /** Queues one line (a newline is added). Never throws, never waits. */
  write(line: string): void {
    if (this.closed) return;
    const text = `${line}\n`;
    if (this.queuedBytes + text.length > this.maxQueuedBytes) {
      this.lose(1, 'too many lines waiting to be written');
      return;
    }
    this.queue.push(text);
    this.queuedBytes += text.length;
    this.kick();
  }

  private kick(): void {
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
      // A line queued between the loop's last check and here.
      if (this.queue.length > 0) this.kick();
    });
  }

  /** logrotate: the next write goes to a freshly opened file at the path. */
  reopen(): void {
    this.reopening = true;
  }

  /** Resolves when everything queued so far has been written (or given up). */
  async flushed(): Promise<void> {
    while (this.running !== undefined) await this.running;
  }

  async close(): Promise<void> {
    await this.flushed();
    this.closed = true;
    await this.handle?.close().catch(() => undefined);
    this.handle = undefined;
  }

  private lose(n: number, why: string): void {
    this.lost += n;
    if (!this.failing) this.onError(`log file ${this.path}: ${why}; lines are dropped until it works again (mail is not affected)`);
    this.failing = true;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.join('');
      const count = this.queue.length;
      this.queue = [];
      this.queuedBytes = 0;
      try {
        if (this.reopening || this.handle === undefined) {
          this.reopening = false;
          const old = this.handle;
          this.handle = undefined;
          await old?.close().catch(() => undefined);
          this.handle = await open(this.path, 'a', 0o640);
        }
        const buf = Buffer.from(batch, 'utf8');
        let off = 0;
        while (off < buf.length) off += (await this.handle.write(buf, off)).bytesWritten;
        if (this.failing) {
          this.onError(`log file ${this.path}: writing works again; ${this.lost} line(s) were lost`);
          this.failing = false;
          this.lost = 0;
        }
      } catch (e) {
        // ENOSPC, EDQUOT, EIO, a removed directory...: the batch is dropped (a partial last
        // line may be left in the file); the next line tries again.
        const err = e as NodeJS.ErrnoException;
        this.lose(count, `cannot write: ${err.code ?? err.message}`);
        if (err.code !== 'ENOSPC' && err.code !== 'EDQUOT') this.reopening = true;
      }
    }
  }
}
