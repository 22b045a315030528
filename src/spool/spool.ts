// The private spool (design invariant 6): one directory of mode 0700 per daemon under
// TempDirectory, one file of mode 0600 per message, removed on every path.

import { closeSync, constants, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, unlinkSync, writevSync } from 'node:fs';
import { join } from 'node:path';
import { SiftError } from '../errors.js';
import type { Logger } from '../log/logger.js';

const PREFIX = 'smtpsiftd-';

/** Whether a process with this pid exists. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Pieces are gathered up to this many bytes and written in one writev. The writes are
 * synchronous, as nginx writes request bodies to its temporary files: a write to the page
 * cache costs less than a round trip through the thread pool (measured on this 2-core VM:
 * the hand-off alone was a fifth of the daemon's CPU for 1 MB messages), and a failure
 * (ENOSPC) is known at once. TempDirectory should therefore be a local file system.
 */
const FLUSH_AT = 256 * 1024;

export class SpoolFile {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private fd: number | undefined;
  private removed = false;

  constructor(
    readonly path: string,
    fd: number,
  ) {
    this.fd = fd;
  }

  /** Takes a piece; throws the SPOOL_FAILED error when writing fails. */
  write(part: Buffer): void {
    this.pending.push(part);
    this.pendingBytes += part.length;
    if (this.pendingBytes >= FLUSH_AT) this.flush();
  }

  /** Writes what is left and closes the file; throws the SPOOL_FAILED error on failure. */
  finish(): void {
    this.flush();
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) this.attempt(() => closeSync(fd));
  }

  remove(): void {
    if (this.removed) return;
    this.removed = true;
    this.pending = [];
    try {
      if (this.fd !== undefined) closeSync(this.fd);
    } catch {
      // nothing more can be done with it
    }
    this.fd = undefined;
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }

  private flush(): void {
    let left = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    const fd = this.fd;
    if (fd === undefined) return;
    while (left.length > 0) {
      // A short write (rare on a file; libuv also caps a writev at IOV_MAX pieces) leaves
      // the rest for the next writev; writing nothing at all is a failure, not a loop.
      let n = this.attempt(() => writevSync(fd, left));
      if (n === 0) throw new SiftError('SPOOL_FAILED', `writing ${this.path}: nothing was written`);
      let i = 0;
      while (i < left.length && n >= (left[i] as Buffer).length) n -= (left[i++] as Buffer).length;
      left = left.slice(i);
      if (n > 0) left[0] = (left[0] as Buffer).subarray(n);
    }
  }

  private attempt<T>(io: () => T): T {
    try {
      return io();
    } catch (e) {
      throw new SiftError('SPOOL_FAILED', `writing ${this.path}: ${(e as Error).message}`);
    }
  }
}

export class Spool {
  private counter = 0;
  /** Worker processes share the directory; each names its files with its own tag. */
  private tag = '';

  private constructor(
    readonly dir: string,
    private readonly log: Logger,
  ) {}

  /**
   * Makes the private directory, after sweeping those left by daemons that died (a kill -9
   * leaves its spool behind). Only directories owned by our own uid are touched.
   */
  static create(tempDirectory: string, log: Logger): Spool {
    const uid = process.getuid?.() ?? -1;
    for (const name of readdirSync(tempDirectory)) {
      const m = /^smtpsiftd-(\d+)-/.exec(name);
      if (!m || alive(Number(m[1]))) continue;
      const path = join(tempDirectory, name);
      try {
        const st = lstatSync(path);
        if (!st.isDirectory() || st.uid !== uid) continue;
        rmSync(path, { recursive: true, force: true });
        log.notice(`removed the spool of a daemon that is gone: ${path}`);
      } catch {
        // raced with another sweeper; nothing to do
      }
    }
    return new Spool(mkdtempSync(join(tempDirectory, `${PREFIX}${process.pid}-`)), log);
  }

  /** A new private file for one message. */
  open(): SpoolFile {
    const path = this.path();
    const flags = constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW;
    try {
      return new SpoolFile(path, openSync(path, flags, 0o600));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        // Our directory was removed under us (tmp cleaners do that): make it again, once.
        try {
          mkdirSync(this.dir, { mode: 0o700 });
          this.log.warn(`the spool directory ${this.dir} was removed; made it again`);
          return new SpoolFile(path, openSync(path, flags, 0o600));
        } catch (again) {
          e = again;
        }
      }
      throw new SiftError('SPOOL_FAILED', `cannot create ${path}: ${(e as Error).message}`);
    }
  }

  /** A fresh name in the private directory, for a file someone else creates (filter output). */
  path(): string {
    return join(this.dir, `msg-${this.tag}${++this.counter}`);
  }

  /**
   * A worker process's view of the daemon's directory (Workers): its files are named
   * `msg-w<n>-<counter>`, so that names stay unique across processes. The main process
   * removes the directory at exit; a worker never calls close().
   */
  static shared(dir: string, worker: number, log: Logger): Spool {
    const spool = new Spool(dir, log);
    spool.tag = `w${worker}-`;
    return spool;
  }

  /** Removes the directory and anything left in it (at exit). */
  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

