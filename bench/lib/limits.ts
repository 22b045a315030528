// File descriptor limits and use of a process, from /proc: the idle-connections scenario
// needs two descriptors per proxied connection (client and upstream side), so the report
// says what limit each daemon really ran with rather than what we asked for.

import { readdirSync, readFileSync } from 'node:fs';

export interface FdLimit {
  readonly soft: number;
  readonly hard: number;
}

/** RLIMIT_NOFILE of a process ("unlimited" reads as Infinity); undefined if it is gone. */
export function fdLimit(pid: number | 'self'): FdLimit | undefined {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'latin1'));
    if (m?.[1] === undefined || m[2] === undefined) return undefined;
    const n = (v: string): number => (v === 'unlimited' ? Infinity : Number(v));
    return { soft: n(m[1]), hard: n(m[2]) };
  } catch {
    return undefined;
  }
}

/** Descriptors a process has open now; undefined if it is gone. */
export function openFds(pid: number): number | undefined {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return undefined;
  }
}

export const fmtLimit = (l: FdLimit | undefined): string => (l === undefined ? '?' : `${l.soft} soft / ${l.hard} hard`);
