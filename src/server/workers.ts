// Workers: N (issue 7): N event loops serving one listening socket, in the one daemon
// process. The main thread binds (before the privilege drop), serves as worker 0 and
// starts N-1 worker threads (src/server/worker.ts) once the privileges are dropped, so they
// start with the main thread's credentials and capabilities. Each thread serves its own
// dup() of the listening socket; the kernel gives each new connection to whichever thread
// accepts first, so a busy loop takes fewer. MaxConnections and the connection ids are
// counted across threads in shared memory (src/server/slots.ts).
//
// Signals stay with the main thread, which passes them on: SIGTERM/SIGINT drain every
// thread within the same deadline, SIGHUP and SIGUSR1 reload and reopen in each. A worker
// thread that dies (an uncaught exception: a bug) is logged with its stack and stops the
// daemon: the other threads drain, and smtpsiftd exits with status 1, for the service
// manager to restart it. Restarting the thread alone would leave its filters and spool
// files behind, and hide a crash loop.

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Config } from '../config/schema.js';
import { Level, type Logger } from '../log/logger.js';
import { native } from '../native.js';

/** What a worker thread gets at start (workerData). */
export interface WorkerInit {
  /** 1 to N-1; the main thread is worker 0. */
  readonly index: number;
  /** The configuration text and file name: the thread parses the same Config from them. */
  readonly configText: string;
  readonly configFile: string;
  /** The -d level. */
  readonly level: number;
  /** Its own descriptor of the listening socket. */
  readonly fd: number;
  /** The shared MaxConnections count and connection ids (ConnectionSlots.buffer). */
  readonly slots: SharedArrayBuffer;
  /** The daemon's private spool directory, made by the main thread. */
  readonly spoolDir: string;
}

export type ToWorker = { readonly t: 'stop'; readonly deadlineMs: number } | { readonly t: 'reload' } | { readonly t: 'reopen' };
export type FromWorker = { readonly t: 'ready' } | { readonly t: 'log'; readonly level: Level; readonly text: string };

/** How many threads serve: `Workers: auto` (0) is one per CPU the process may use. */
export function workerCount(config: Config): number {
  return config.workers === 0 ? availableParallelism() : config.workers;
}

/** After the drain deadline, how long a thread may take to close its databases and end. */
const EXIT_GRACE_MS = 5000;

interface Thread {
  readonly index: number;
  readonly worker: Worker;
  /** Resolves when the thread has ended, whatever the reason. */
  readonly ended: Promise<void>;
  stopping: boolean;
}

export class WorkerPool {
  private constructor(
    private readonly threads: readonly Thread[],
    private readonly log: Logger,
  ) {}

  /**
   * Starts `count` worker threads on dups of `listenFd`; resolves when all of them serve.
   * A thread that fails to start (its route table, its log file) fails the start: the
   * others are ended and the error is thrown. `onCrash` is called once when a thread ends
   * without being asked to.
   */
  static async start(
    count: number,
    init: Omit<WorkerInit, 'index' | 'fd'>,
    listenFd: number,
    log: Logger,
    onCrash: () => void,
  ): Promise<WorkerPool> {
    let crashed = false;
    const crash = (): void => {
      if (crashed) return;
      crashed = true;
      onCrash();
    };
    const threads: Thread[] = [];
    const ready: Promise<void>[] = [];
    for (let index = 1; index <= count; index++) {
      const fd = native.dupFd(listenFd);
      const data: WorkerInit = { ...init, index, fd };
      const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: data });
      let started = false;
      let errored = false;
      const thread: Thread = {
        index,
        worker,
        stopping: false,
        ended: new Promise((resolve) => worker.once('exit', () => resolve())),
      };
      threads.push(thread);
      ready.push(
        new Promise<void>((resolve, reject) => {
          worker.on('message', (m: FromWorker) => {
            if (m.t === 'log') relay(log, m.level, m.text);
            else if (m.t === 'ready') {
              started = true;
              log.debug(`worker ${index} serving`);
              resolve();
            }
          });
          worker.on('error', (e) => {
            if (!started) {
              reject(new Error(`worker ${index}: ${e.message}`));
              return;
            }
            errored = true;
            log.error(`worker ${index} crashed: ${e.stack ?? e.message}`);
            log.error(`worker ${index}: its connections were cut; stopping the daemon`);
            // Also while draining: the exit status says so.
            crash();
          });
          worker.on('exit', (code) => {
            if (!started) {
              reject(new Error(`worker ${index} ended while starting (exit code ${code})`));
              return;
            }
            if (thread.stopping || errored) return;
            log.error(`worker ${index} ended unexpectedly (exit code ${code}); its connections were cut; stopping the daemon`);
            crash();
          });
        }),
      );
    }
    const pool = new WorkerPool(threads, log);
    const results = await Promise.allSettled(ready);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) {
      for (const t of threads) t.stopping = true;
      await Promise.all(threads.map((t) => t.worker.terminate()));
      throw failed.reason;
    }
    return pool;
  }

  get size(): number {
    return this.threads.length;
  }

  private post(message: ToWorker): void {
    for (const t of this.threads) t.worker.postMessage(message);
  }

  /** SIGHUP: each thread reopens its log file and reloads its route file. */
  reload(): void {
    this.post({ t: 'reload' });
  }

  /** SIGUSR1: each thread reopens its log file. */
  reopenLogs(): void {
    this.post({ t: 'reopen' });
  }

  /**
   * Each thread stops accepting, gives its idle sessions 421 and lets busy ones finish
   * within `deadlineMs`, as the main thread's listener does; resolves when all have ended.
   */
  async stop(deadlineMs: number): Promise<void> {
    for (const t of this.threads) t.stopping = true;
    this.post({ t: 'stop', deadlineMs });
    await Promise.all(
      this.threads.map(async (t) => {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), deadlineMs + EXIT_GRACE_MS)));
        const how = await Promise.race([t.ended.then(() => 'ended' as const), late]);
        clearTimeout(timer);
        if (how === 'late') {
          this.log.warn(`worker ${t.index} did not end after the drain deadline; ended it`);
          await t.worker.terminate();
        }
      }),
    );
  }
}

/** A worker thread's log line, through the main thread's logger (one stderr, one syslog socket). */
function relay(log: Logger, level: Level, text: string): void {
  if (level <= Level.Error) log.error(text);
  else if (level === Level.Warn) log.warn(text);
  else if (level === Level.Notice) log.notice(text);
  else if (level === Level.Info) log.info(text);
  else log.debug(text);
}
