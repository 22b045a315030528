// Running one filter: `/bin/sh -c FilterCommand` in a process group of its own, the message
// wired to it by the kernel (no byte crosses JavaScript), stderr read for the verdict line.
// A filter never outlives its time (design invariant 5): at the deadline the whole group,
// grandchildren included, is killed and the answer comes at once; when the shell ends
// first, whatever it left running in the group is killed with it.

import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { Socket } from 'node:net';
import { constants } from 'node:os';
import { native } from '../native.js';
import type { FilterEnv } from './env.js';
import { LastLine } from './last-line.js';
import type { FilterEnd } from './verdict.js';
import { received } from '../net/garbage.js';

/** Between SIGTERM to the group and SIGKILL: a filter may clean up, briefly. */
const KILL_GRACE_MS = 300;
/** After the shell exits, how long a grandchild holding stderr open may delay the verdict. */
const STDERR_LINGER_MS = 200;

export interface FilterJob {
  /** FilterCommand as read from the configuration: latin1, one char per byte of the file. */
  readonly command: string;
  /** pipe: the file on stdin; file: nothing on stdin (the message is named by $EMAIL). */
  readonly stdin: string | undefined;
  /** pipe: a new private file that gets stdout (the filtered message). */
  readonly stdout: string | undefined;
  readonly env: FilterEnv;
  readonly timeoutMs: number;
}

export interface FilterRun {
  readonly pid: number | undefined;
  readonly ended: Promise<FilterEnd>;
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is gone already
  }
}

export function runFilter(job: FilterJob): FilterRun {
  let stdinFd: number | undefined;
  let stdoutFd: number | undefined;
  try {
    if (job.stdin !== undefined) stdinFd = openSync(job.stdin, fsConstants.O_RDONLY);
    if (job.stdout !== undefined) {
      const flags = fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY | fsConstants.O_NOFOLLOW;
      stdoutFd = openSync(job.stdout, flags, 0o600);
    }
  } catch (e) {
    if (stdinFd !== undefined) closeSync(stdinFd);
    return { pid: undefined, ended: Promise.resolve({ kind: 'crash', why: `cannot open the filter's files: ${(e as Error).message}` }) };
  }
  // Descriptors the daemon inherited or that native code opened without close-on-exec
  // would reach the filter: mark them all, every time, since it is one system call. The
  // filter gets 0, 1 and 2 and nothing else, as with proxsmtpd.
  native.cloexecFrom(3);
  let exited: ((code: number | null, signal: number | null) => void) | undefined;
  let child: { readonly pid: number; readonly stderr: number };
  try {
    // posix_spawn, not child_process.spawn: that one forks the whole daemon (native/spawn.c).
    // The command goes as the file's own bytes, as proxsmtpd passed it to /bin/sh.
    const command = Buffer.from(job.command, 'latin1');
    child = native.spawnFilter(command, job.env, stdinFd ?? -1, stdoutFd ?? -1, (code, signal) => exited?.(code, signal));
  } catch (e) {
    return { pid: undefined, ended: Promise.resolve({ kind: 'crash', why: `cannot run /bin/sh: ${(e as Error).message}` }) };
  } finally {
    if (stdinFd !== undefined) closeSync(stdinFd);
    if (stdoutFd !== undefined) closeSync(stdoutFd);
  }
  const { pid } = child;
  const stderr = new Socket({ fd: child.stderr, readable: true, writable: false });

  const ended = new Promise<FilterEnd>((resolve) => {
    const lastLine = new LastLine();
    let settled = false;
    let linger: NodeJS.Timeout | undefined;
    let stderrClosed = false;
    let status: FilterEnd | undefined;
    const finish = (end: FilterEnd, keepStderr = false): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      clearTimeout(linger);
      if (!keepStderr) stderr.destroy();
      resolve(end);
    };
    /** SIGTERM to the whole group, SIGKILL after a grace in which traps may clean up; once. */
    let stopping = false;
    const stopGroup = (): void => {
      if (stopping) return;
      stopping = true;
      killGroup(pid, 'SIGTERM');
      // stderr stays open through the grace: a filter that cleans up on SIGTERM (or whose
      // shell reports "Terminated") must not die of SIGPIPE before its trap has run.
      setTimeout(() => {
        killGroup(pid, 'SIGKILL');
        stderr.destroy();
      }, KILL_GRACE_MS).unref();
    };
    const deadline = setTimeout(() => {
      stopGroup();
      finish({ kind: 'crash', why: `timeout: no verdict after ${job.timeoutMs / 1000} s; killed` }, true);
    }, job.timeoutMs);
    stderr.on('data', (chunk: Buffer) => {
      received(chunk.length);
      lastLine.write(chunk);
    });
    stderr.on('error', () => undefined); // its end is all that matters
    stderr.on('close', () => {
      stderrClosed = true;
      if (status) finish(withLine(status, lastLine));
    });
    exited = (code, signal) => {
      // The verdict is the shell's: what it left running in its group (`prog &`) is
      // stopped now, so that nothing writes to the message for long once it is being sent,
      // and no filter outlives its run (design invariant 5). A program meant to stay must
      // leave the group. After a timeout, the stop under way goes on (its grace included).
      stopGroup();
      status =
        code !== null
          ? { kind: 'exit', code, lastLine: undefined }
          : { kind: 'crash', why: `filter killed by ${signalName(signal)}` };
      // stderr may still hold the last line; wait for its end, but not for grandchildren.
      if (stderrClosed) finish(withLine(status, lastLine));
      else linger = setTimeout(() => finish(withLine(status, lastLine)), STDERR_LINGER_MS);
    };
  });
  return { pid, ended };
}

/** SIGKILL for 9, as Node names signals. */
function signalName(signal: number | null): string {
  const entry = Object.entries(constants.signals).find(([, n]) => n === signal);
  return entry?.[0] ?? 'a signal';
}

function withLine(status: FilterEnd | undefined, lastLine: LastLine): FilterEnd {
  if (status === undefined) return { kind: 'crash', why: 'filter ended without a status' };
  return status.kind === 'exit' ? { ...status, lastLine: lastLine.value } : status;
}
