// The open files limit (RLIMIT_NOFILE) at start-up: every connection takes two
// descriptors (the client's and the upstream's), so MaxConnections needs about twice as
// many as it says, plus room for the listener, the logs, the spool and the filters. The
// limit is per process: with Workers: N, each worker process has its own, so N processes
// hold N times what one can where the limit cannot be raised.

import { readFileSync } from 'node:fs';
import type { Logger } from '../log/logger.js';
import { native, type FileLimit, type NativeError } from '../native.js';

/** Descriptors kept aside from the connections: listener, logs, databases, messages in flight, filters. */
export const FD_RESERVE = 256;

/** The limit MaxConnections needs. */
export function fdsNeeded(maxConnections: number): number {
  return 2 * maxConnections + FD_RESERVE;
}

/** How many connections a soft limit has room for (at least one). */
export function connectionsFor(soft: number): number {
  return Math.max(1, Math.floor((soft - FD_RESERVE) / 2));
}

export interface LimitCalls {
  getNofile(): FileLimit;
  setNofile(soft: number, hard: number): void;
  /** /proc/sys/fs/nr_open: the most a hard limit may be raised to. */
  nrOpen(): number;
}

export interface FdLimitResult {
  readonly before: FileLimit;
  readonly after: FileLimit;
  /** The connections served at once: MaxConnections, or fewer when the limit could not be raised enough. */
  readonly maxConnections: number;
  /** The connections one process has descriptors for (MaxConnections when the limit suffices). */
  readonly perProcess: number;
}

function readNrOpen(): number {
  try {
    const n = Number(readFileSync('/proc/sys/fs/nr_open', 'utf8').trim());
    return Number.isSafeInteger(n) && n > 0 ? n : 1024 * 1024;
  } catch {
    return 1024 * 1024; // the kernel's default
  }
}

/**
 * Raises the soft limit to what `maxConnections` needs, within the hard limit; a hard limit
 * too low is raised too where allowed (root with CAP_SYS_RESOURCE), up to nr_open. Never
 * lowers a limit. Logs what it did, or warns how many connections the limit then allows.
 * (Node itself has already raised the soft limit to the hard one by the time we run.)
 */
export function raiseFdLimit(maxConnections: number, log: Logger, calls: LimitCalls = defaultCalls(), processes = 1): FdLimitResult {
  const needed = fdsNeeded(maxConnections);
  let before: FileLimit;
  try {
    before = calls.getNofile();
  } catch (e) {
    log.warn(`cannot read the open files limit: ${(e as Error).message}`);
    return { before: { soft: Infinity, hard: Infinity }, after: { soft: Infinity, hard: Infinity }, maxConnections, perProcess: maxConnections };
  }
  if (before.soft >= needed) {
    log.info(`open files limit ${before.soft} (MaxConnections ${maxConnections} needs ${needed})`);
    return { before, after: before, maxConnections, perProcess: maxConnections };
  }
  let after = before;
  let refused: string | undefined;
  if (before.hard < needed) {
    const hard = Math.min(needed, calls.nrOpen());
    if (hard > before.hard) {
      try {
        calls.setNofile(hard, hard);
        after = { soft: hard, hard };
      } catch (e) {
        refused = (e as NativeError).code === 'EPERM' ? 'not permitted' : (e as Error).message;
      }
    }
  }
  if (after.soft < needed && after.soft < after.hard) {
    const soft = Math.min(needed, after.hard);
    try {
      calls.setNofile(soft, after.hard);
      after = { soft, hard: after.hard };
    } catch (e) {
      refused ??= (e as Error).message;
    }
  }
  const hardText = after.hard !== before.hard ? ` (hard limit raised from ${before.hard} to ${after.hard})` : '';
  if (after.soft > before.soft) {
    log.notice(`open files limit raised from ${before.soft} to ${after.soft}${hardText} (MaxConnections ${maxConnections})`);
  }
  if (after.soft >= needed) return { before, after, maxConnections, perProcess: maxConnections };
  const perProcess = Math.min(maxConnections, connectionsFor(after.soft));
  const allowed = Math.min(maxConnections, processes * perProcess);
  const why = refused === 'not permitted' ? 'not permitted without CAP_SYS_RESOURCE' : refused;
  const below =
    `open files limit ${after.soft} is below the ${needed} that MaxConnections ${maxConnections} needs${processes > 1 ? ' in one process' : ''} ` +
    `(hard limit ${after.hard}${why !== undefined ? `; raising it: ${why}` : ''})`;
  if (processes === 1) log.warn(`${below}: at most ${allowed} connections will be served at once`);
  else if (allowed < maxConnections) {
    log.warn(`${below}: at most ${perProcess} connections per process, ${allowed} at once with Workers: ${processes}`);
  } else log.notice(`${below}: each of the ${processes} worker processes holds at most ${perProcess} connections`);
  return { before, after, maxConnections: allowed, perProcess };
}

function defaultCalls(): LimitCalls {
  return { getNofile: () => native.getNofile(), setNofile: (soft, hard) => native.setNofile(soft, hard), nrOpen: readNrOpen };
}
