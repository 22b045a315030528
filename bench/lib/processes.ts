// Child processes and ports for the benchmark. Every process we start is recorded by pid
// and stopped by that pid at the end (never by name), whatever way the run ends.

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';

const started = new Set<ChildProcess>();

export interface Started {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly name: string;
}

/** Starts a long-running process, its stderr (and stdout unless `logStdout` is false) going to `logPath`. */
export function start(name: string, cmd: string, args: readonly string[], logPath: string, logStdout = true): Started {
  const log = createWriteStream(logPath);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  if (logStdout) child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  child.on('error', (e) => log.write(`spawn error: ${e.message}\n`));
  if (child.pid === undefined) throw new Error(`cannot start ${cmd}`);
  started.add(child);
  child.on('exit', () => started.delete(child));
  return { child, pid: child.pid, name };
}

/**
 * Starts a Node script of ours with an IPC channel (for probes that must live in a process
 * of their own, e.g. one holding 10,000 sockets), its output going to `logPath`.
 */
export function startNode(name: string, script: string, args: readonly string[], logPath: string): Started {
  const log = createWriteStream(logPath);
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  child.on('error', (e) => log.write(`spawn error: ${e.message}\n`));
  if (child.pid === undefined) throw new Error(`cannot start ${script}`);
  started.add(child);
  child.on('exit', () => started.delete(child));
  return { child, pid: child.pid, name };
}

export function isRunning(p: Started): boolean {
  return p.child.exitCode === null && p.child.signalCode === null;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export async function stop(p: Started, graceMs = 3000): Promise<void> {
  if (!isRunning(p)) return;
  const gone = once(p.child, 'exit');
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...started].map((child) => stop({ child, pid: child.pid ?? 0, name: '' })));
}

/** Last resort on an abrupt exit: SIGKILL whatever we started, by pid. */
export function killAllNow(): void {
  for (const child of started) child.kill('SIGKILL');
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago. proxsmtpd cannot listen on port 0,
 * so ports are chosen here and passed to every program alike.
 */
export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  srv.close();
  await once(srv, 'close');
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return addr.port;
}

/** Resolves once a server on the port sends a 220 greeting; rejects after `timeoutMs`. */
export async function waitForGreeting(port: number, p: Started | undefined, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (p !== undefined && !isRunning(p)) throw new Error(`${p.name} exited (status ${p.child.exitCode}) before it listened`);
    if (await greets(port)) return;
    if (Date.now() > deadline) throw new Error(`nothing greets on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function greets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    let got = '';
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 2000);
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\n')) {
        clearTimeout(timer);
        // Say goodbye properly, so the servers do not log a lost connection.
        s.end('QUIT\r\n');
        resolve(got.startsWith('220'));
      }
    });
    s.on('error', () => {
      clearTimeout(timer);
      done(false);
    });
  });
}

/** Runs a command to its end; resolves with status, output and wall time in ms. */
export function run(
  cmd: string,
  args: readonly string[],
  timeoutMs: number,
): Promise<{ status: number | null; signal: string | null; stdout: string; stderr: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    started.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${timeoutMs} ms)`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      started.delete(child);
      reject(e);
    });
    child.on('exit', (status, signal) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      started.delete(child);
      // 'exit' may come before the pipes are drained.
      setImmediate(() => resolve({ status, signal, stdout, stderr, ms }));
    });
  });
}
