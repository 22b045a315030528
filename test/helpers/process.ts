// Running the real CLIs to completion, config files, the spool's contents and /proc: what
// the configuration, command-line and failure suites look at.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { SMTPSIFT, SMTPSIFTD, tempDir } from './daemon.js';
import { IN_MEMORY_MAX } from '../../src/spool/message.js';

export interface RunResult {
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its exit; kills it (by its PID) and rejects if it takes longer than `timeoutMs`. */
export function run(cmd: string, args: readonly string[], timeoutMs = 10_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not exit in ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    proc.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

/** `smtpsiftd ARGS`, run to its exit (for the flags and start-up errors). */
export function runDaemonCli(args: readonly string[], timeoutMs?: number): Promise<RunResult> {
  return run(process.execPath, [SMTPSIFTD, ...args], timeoutMs);
}

/** `smtpsift ARGS`. */
export function runSift(args: readonly string[], timeoutMs?: number): Promise<RunResult> {
  return run(process.execPath, [SMTPSIFT, ...args], timeoutMs);
}

/** A config file with this exact text in a private directory (which also holds a spool dir). */
export function configFile(text: string): { dir: string; file: string; spool: string; remove: () => void } {
  const t = tempDir('smtpsift-conf-');
  const spool = join(t.dir, 'spool');
  mkdirSync(spool);
  const file = join(t.dir, 'smtpsiftd.conf');
  writeFileSync(file, text);
  return { dir: t.dir, file, spool, remove: t.remove };
}

/** The daemon's private spool directories (`smtpsiftd-PID-*`) under a TempDirectory. */
export function privateSpoolDirs(tempDirectory: string): string[] {
  if (!existsSync(tempDirectory)) return [];
  return readdirSync(tempDirectory)
    .filter((n) => n.startsWith('smtpsiftd-'))
    .map((n) => join(tempDirectory, n));
}

/**
 * Message lines over the 64 KiB a message may hold in memory: a message with them is
 * moved to a spool file as it arrives (an unfiltered small one never touches the disk).
 */
export const SPILLED = `${'s'.repeat(998)}\r\n`.repeat(Math.ceil(IN_MEMORY_MAX / 1000) + 4);

/** Every file in the daemon's private spool directories: must be empty between messages. */
export function spoolFiles(tempDirectory: string): string[] {
  return privateSpoolDirs(tempDirectory).flatMap((d) => (existsSync(d) ? readdirSync(d).map((n) => join(d, n)) : []));
}

/** Polls `probe` every 10 ms until it returns something other than undefined/false. */
export async function waitFor<T>(probe: () => T | undefined | false, what: string, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Whether a process exists (and is not a zombie). */
/** The child processes of `pid` (a daemon's worker processes). */
export function childPids(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number);
}

export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

/** Fields of /proc/PID/status, e.g. `Uid` → `65534\t65534\t65534\t65534`. */
export function procStatus(pid: number, tid?: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(tid === undefined ? `/proc/${pid}/status` : `/proc/${pid}/task/${tid}/status`, 'utf8').split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) out.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return out;
}

/** From /proc/PID/stat: the session id and the controlling terminal (0 = none). */
export function procSession(pid: number): { sid: number; tty: number; ppid: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // pid (comm) state ppid pgrp session tty_nr ...; comm may hold spaces, so split after ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(fields[1]), sid: Number(fields[3]), tty: Number(fields[4]) };
}

/** A TCP port on 127.0.0.1 that was free a moment ago, in [from, to] if given. */
export async function freePort(from = 0, to = 0): Promise<number> {
  for (let p = from; p <= to; p++) {
    const server = createServer();
    server.listen(p, '127.0.0.1');
    try {
      await Promise.race([once(server, 'listening'), once(server, 'error').then(([e]) => Promise.reject(e as Error))]);
    } catch {
      continue;
    }
    const a = server.address();
    await new Promise<void>((r) => server.close(() => r()));
    if (typeof a === 'object' && a !== null) return a.port;
  }
  throw new Error(`no free port in ${from}-${to}`);
}

/** Mode bits and owner of a path. */
export function owner(path: string): { uid: number; mode: number } {
  const st = statSync(path);
  return { uid: st.uid, mode: st.mode & 0o7777 };
}
