// Workers: N (issue 7): N processes serving one listening socket. The main process binds,
// serves as worker 0 and starts N-1 worker processes (src/server/worker.ts): each a Node.js
// of its own, given the listening socket and the shared connection counters
// (src/server/slots.ts) as descriptors, and an IPC channel for its start-up data, the main
// process's word (stop, reload, reopen) and its log lines. The kernel gives each new
// connection to whichever process accepts first, so a busy one takes fewer. Processes, not
// threads: each has its own open files limit, so N of them hold N times the connections
// where the limit cannot be raised, and its own heap and garbage collector.
//
// They are started before the privilege drop and drop to the same account themselves,
// first thing: capabilities the daemon keeps (TransparentProxy full) do not survive an
// exec by a user other than root.
//
// Signals stay with the main process, which passes them on: SIGTERM/SIGINT drain every
// process within the same deadline, SIGHUP and SIGUSR1 reload and reopen in each. A worker
// process ignores those signals when they reach it directly (^C in a terminal signals the
// whole process group; a service manager may signal every process of the service), and a
// worker whose main process is gone drains and exits. A worker process that dies (an
// uncaught exception: a bug; or killed) is logged and stops the daemon: the others drain,
// and smtpsiftd exits with status 1, for the service manager to restart it. Restarting the
// worker alone would leave its filters and spool files behind, and hide a crash loop.

import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config/schema.js';
import { Level, type Logger } from '../log/logger.js';
import type { Account } from './privileges.js';

/** A worker process's descriptors: the listening socket and the shared counters. */
export const LISTEN_FD = 4;
export const SLOTS_FD = 5;

/** What a worker process gets once the main process has its spool (the `init` message). */
export interface WorkerInit {
  /** 1 to N-1; the main process is worker 0. */
  readonly index: number;
  /** The configuration text and file name: the worker parses the same Config from them. */
  readonly configText: string;
  readonly configFile: string;
  /** The -d level. */
  readonly level: number;
  /** The daemon's private spool directory, made by the main process. */
  readonly spoolDir: string;
  /** The account to drop to, and the capabilities to keep (as the main process did). */
  readonly account: Account | undefined;
  readonly keepCaps: readonly number[];
  /** The connections this process has descriptors for. */
  readonly perProcess: number;
}

export type ToWorker =
  | ({ readonly t: 'init' } & WorkerInit)
  | { readonly t: 'stop'; readonly deadlineMs: number }
  | { readonly t: 'reload' }
  | { readonly t: 'reopen' };
export type FromWorker =
  | { readonly t: 'ready' }
  | { readonly t: 'log'; readonly level: Level; readonly text: string }
  /** It could not start (its route file, its log file): the message says why. */
  | { readonly t: 'error'; readonly message: string }
  /** An uncaught exception, with its stack; the process exits next. */
  | { readonly t: 'crash'; readonly stack: string };

/** How many processes serve: `Workers: auto` (0) is one per CPU the daemon may use. */
export function workerCount(config: Config): number {
  return config.workers === 0 ? availableParallelism() : config.workers;
}

/** After the drain deadline, how long a worker may take to close its databases and end. */
const EXIT_GRACE_MS = 5000;

const WORKER_SCRIPT = fileURLToPath(new URL('./worker.js', import.meta.url));

interface Worker {
  readonly index: number;
  readonly child: ChildProcess;
  /** Resolves when the process has ended, whatever the reason. */
  readonly ended: Promise<void>;
  started: boolean;
  stopping: boolean;
  crashed: boolean;
  /** While starting: what to do with its first word. */
  starting?: { resolve(): void; reject(e: Error): void };
}

export class WorkerPool {
  private readonly workers: Worker[] = [];
  private failed = false;

  /**
   * Starts `count` worker processes on the listening socket `listenFd` and the counters
   * `slotsFd`. They wait for init(). `onCrash` is called once when one of them ends
   * after it started serving, without being asked to.
   */
  constructor(count: number, listenFd: number, slotsFd: number, private readonly log: Logger, private readonly onCrash: () => void) {
    for (let index = 1; index <= count; index++) {
      const child = spawn(process.execPath, [...process.execArgv, WORKER_SCRIPT], {
        stdio: ['ignore', 'ignore', 'inherit', 'ipc', listenFd, slotsFd],
        serialization: 'json',
      });
      const ended = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      const w: Worker = { index, child, ended, started: false, stopping: false, crashed: false };
      child.on('message', (m: FromWorker) => this.heard(w, m));
      child.on('error', (e) => this.ended(w, `cannot run: ${e.message}`));
      child.on('exit', (code, signal) => this.ended(w, signal !== null ? `signal ${signal}` : `exit code ${code ?? '?'}`));
      this.workers.push(w);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  /**
   * Gives each worker its start-up data; resolves when all of them serve. A worker that
   * fails to start (its route table, its log file) fails the start: the others are
   * ended and its error is thrown.
   */
  async init(data: Omit<WorkerInit, 'index'>): Promise<void> {
    const ready = this.workers.map(
      (w) =>
        new Promise<void>((resolve, reject) => {
          w.starting = { resolve, reject };
          this.send(w, { t: 'init', ...data, index: w.index });
        }),
    );
    const results = await Promise.allSettled(ready);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed === undefined) return;
    this.failed = true;
    await this.kill();
    throw failed.reason;
  }

  /** Ends every worker now (a start that failed). */
  async kill(): Promise<void> {
    for (const w of this.workers) {
      w.stopping = true;
      w.child.kill('SIGKILL');
    }
    await Promise.all(this.workers.map((w) => w.ended));
  }

  private heard(w: Worker, m: FromWorker): void {
    if (m.t === 'log') relay(this.log, m.level, m.text);
    else if (m.t === 'ready') {
      w.started = true;
      this.log.debug(`worker ${w.index} serving`);
      w.starting?.resolve();
      w.starting = undefined;
    } else if (m.t === 'error') {
      w.starting?.reject(new Error(`worker ${w.index}: ${m.message}`));
      w.starting = undefined;
    } else if (m.t === 'crash') {
      w.crashed = true;
      this.log.error(`worker ${w.index} crashed: ${m.stack}`);
      this.log.error(`worker ${w.index}: its connections were cut; stopping the daemon`);
      // Also while draining: the exit status says so.
      this.onCrash();
    }
  }

  private ended(w: Worker, how: string): void {
    if (w.starting !== undefined) {
      w.starting.reject(new Error(`worker ${w.index} ended while starting (${how})`));
      w.starting = undefined;
      return;
    }
    if (!w.started || w.stopping || w.crashed || this.failed) return;
    w.crashed = true;
    this.log.error(`worker ${w.index} ended unexpectedly (${how}); its connections were cut; stopping the daemon`);
    this.onCrash();
  }

  private send(w: Worker, message: ToWorker): void {
    // A worker already gone has said so through its exit.
    if (w.child.connected) w.child.send(message, () => undefined);
  }

  /** SIGHUP: each worker reopens its log file and reloads its route file. */
  reload(): void {
    for (const w of this.workers) this.send(w, { t: 'reload' });
  }

  /** SIGUSR1: each worker reopens its log file. */
  reopenLogs(): void {
    for (const w of this.workers) this.send(w, { t: 'reopen' });
  }

  /**
   * Each worker stops accepting, gives its idle sessions 421 and lets busy ones finish
   * within `deadlineMs`, as the main process's listener does; resolves when all have ended.
   */
  async stop(deadlineMs: number): Promise<void> {
    for (const w of this.workers) {
      w.stopping = true;
      this.send(w, { t: 'stop', deadlineMs });
    }
    await Promise.all(
      this.workers.map(async (w) => {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), deadlineMs + EXIT_GRACE_MS)));
        const how = await Promise.race([w.ended.then(() => 'ended' as const), late]);
        clearTimeout(timer);
        if (how === 'late') {
          this.log.warn(`worker ${w.index} did not end after the drain deadline; killed it`);
          w.child.kill('SIGKILL');
          await w.ended;
        }
      }),
    );
  }
}

/** A worker's log line, through the main process's logger (one stderr, one syslog socket). */
function relay(log: Logger, level: Level, text: string): void {
  if (level <= Level.Error) log.error(text);
  else if (level === Level.Warn) log.warn(text);
  else if (level === Level.Notice) log.notice(text);
  else if (level === Level.Info) log.info(text);
  else log.debug(text);
}
