// The real proxsmtpd 1.10 (Debian package proxsmtp), for conversations that must be equal.
// Started in the foreground (`-d 4 -f conf`) on a free port; stopped by its PID. A missing
// binary is an error, never a skip: CI installs the package.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { tempDir } from './daemon.js';

export const PROXSMTPD = '/usr/sbin/proxsmtpd';

export interface Proxsmtpd {
  readonly port: number;
  log(): string;
  stop(): Promise<void>;
}

/** A port that was free a moment ago (proxsmtpd cannot report a port the system chose). */
async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const a = s.address();
  await new Promise<void>((resolve) => s.close(() => resolve()));
  if (typeof a !== 'object' || a === null) throw new Error('no port');
  return a.port;
}

export async function startProxsmtpd(options: Record<string, string>, timeoutMs = 5000): Promise<Proxsmtpd> {
  if (!existsSync(PROXSMTPD)) {
    throw new Error(`${PROXSMTPD} is missing: install the Debian package proxsmtp (apt-get install proxsmtp)`);
  }
  const { dir, remove } = tempDir('proxsmtpd-test-');
  const spool = join(dir, 'spool');
  mkdirSync(spool);
  const port = await freePort();
  const conf = join(dir, 'proxsmtpd.conf');
  const lines = { Listen: `127.0.0.1:${port}`, TempDirectory: spool, ...options };
  writeFileSync(conf, Object.entries(lines).map(([k, v]) => `${k}: ${v}\n`).join(''));
  const proc = spawn(PROXSMTPD, ['-d', '4', '-f', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => {
    proc.on('exit', () => resolve());
    proc.on('error', (e) => {
      stderr += `spawn failed: ${e.message}\n`;
      resolve();
    });
  });
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) process.kill(proc.pid, 'SIGTERM');
    const timer = setTimeout(() => {
      if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) process.kill(proc.pid, 'SIGKILL');
    }, 3000);
    await exited;
    clearTimeout(timer);
    remove();
  };
  const deadline = Date.now() + timeoutMs;
  while (!/accepting connections/.test(stderr)) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`proxsmtpd did not start:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { port, log: () => stderr, stop };
}
