// Running one filter: `/bin/sh -c FilterCommand` in a process group of its own, the message
// wired to it by the kernel (no byte crosses JavaScript), stderr read for the verdict line.
// A filter never outlives its time (design invariant 5): at the deadline the whole group,
// grandchildren included, is killed and the answer comes at once.

import { spawn } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { native } from '../native.js';
import { LastLine } from './last-line.js';
import type { FilterEnd } from './verdict.js';

/** Between SIGTERM to the group and SIGKILL: a filter may clean up, briefly. */
const KILL_GRACE_MS = 300;
/** After the shell exits, how long a grandchild holding stderr open may delay the verdict. */
const STDERR_LINGER_MS = 200;

export interface FilterJob {
  readonly command: string;
  /** pipe: the file on stdin; file: nothing on stdin (the message is named by $EMAIL). */
  readonly stdin: string | undefined;
  /** pipe: a new private file that gets stdout (the filtered message). */
  readonly stdout: string | undefined;
  readonly env: NodeJS.ProcessEnv;
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
    if (job.stdin !== undefined) stdinFd = openSync(job.stdin, constants.O_RDONLY);
    if (job.stdout !== undefined) {
      const flags = constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW;
      stdoutFd = openSync(job.stdout, flags, 0o600);
    }
  } catch (e) {
    if (stdinFd !== undefined) closeSync(stdinFd);
    return { pid: undefined, ended: Promise.resolve({ kind: 'crash', why: `cannot open the filter's files: ${(e as Error).message}` }) };
  }
  // Descriptors the daemon inherited or that native code opened without close-on-exec
  // would reach the filter (libuv only closes its own): mark them all, every time, since
  // it is one system call. The filter gets 0, 1 and 2 and nothing else, as with proxsmtpd.
  native.cloexecFrom(3);
  // detached: the filter leads a new process group, so one kill reaches all it started.
  // libuv resets signal dispositions to their defaults in the child.
  const child = spawn('/bin/sh', ['-c', job.command], {
    detached: true,
    stdio: [stdinFd ?? 'ignore', stdoutFd ?? 'ignore', 'pipe'],
    env: job.env,
  });
  if (stdinFd !== undefined) closeSync(stdinFd);
  if (stdoutFd !== undefined) closeSync(stdoutFd);

  const ended = new Promise<FilterEnd>((resolve) => {
    const lastLine = new LastLine();
    let settled = false;
    let linger: NodeJS.Timeout | undefined;
    const finish = (end: FilterEnd, keepStderr = false): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      clearTimeout(linger);
      if (!keepStderr) child.stderr?.destroy();
      resolve(end);
    };
    const deadline = setTimeout(() => {
      const pid = child.pid;
      if (pid === undefined) return finish({ kind: 'crash', why: 'timeout: the filter never started' });
      killGroup(pid, 'SIGTERM');
      // stderr stays open through the grace: a filter that cleans up on SIGTERM (or whose
      // shell reports "Terminated") must not die of SIGPIPE before its trap has run.
      setTimeout(() => {
        killGroup(pid, 'SIGKILL');
        child.stderr?.destroy();
      }, KILL_GRACE_MS).unref();
      finish({ kind: 'crash', why: `timeout: no verdict after ${job.timeoutMs / 1000} s; killed` }, true);
    }, job.timeoutMs);
    child.stderr?.on('data', (chunk: Buffer) => lastLine.write(chunk));
    child.on('error', (e) => finish({ kind: 'crash', why: `cannot run /bin/sh: ${e.message}` }));
    let status: FilterEnd | undefined;
    child.on('exit', (code, signal) => {
      status =
        code !== null
          ? { kind: 'exit', code, lastLine: undefined }
          : { kind: 'crash', why: `filter killed by ${signal ?? 'a signal'}` };
      // stderr may still hold the last line; wait for its end, but not for grandchildren.
      linger = setTimeout(() => finish(withLine(status, lastLine)), STDERR_LINGER_MS);
    });
    child.on('close', () => {
      if (status) finish(withLine(status, lastLine));
    });
  });
  return { pid: child.pid, ended };
}

function withLine(status: FilterEnd | undefined, lastLine: LastLine): FilterEnd {
  if (status === undefined) return { kind: 'crash', why: 'filter ended without a status' };
  return status.kind === 'exit' ? { ...status, lastLine: lastLine.value } : status;
}
