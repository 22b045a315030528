// Starts the real smtpsiftd as a child process with a config of the test's own, on a port
// the system chooses, and stops it by its PID.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SMTPSIFTD = fileURLToPath(new URL('../../src/cli/smtpsiftd.js', import.meta.url));
export const SMTPSIFT = fileURLToPath(new URL('../../src/cli/smtpsift.js', import.meta.url));

export interface Daemon {
  readonly proc: ChildProcess;
  readonly port: number;
  /** With a unix socket Listen: its path (and `port` is 0). */
  readonly socketPath: string | undefined;
  /** A private directory for this daemon: its config, spool (TempDirectory) and anything else. */
  readonly dir: string;
  readonly spoolDir: string;
  /** Everything the daemon wrote to stderr so far. */
  log(): string;
  /** Waits until the log matches. */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
  /** SIGTERM (or another signal), then waits for the exit; resolves the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** The config file written for this daemon. */
  readonly configFile: string;
  /** Resolves with the exit code once the process has exited (stop() also removes `dir`). */
  readonly exited: Promise<number | null>;
}

export interface StartOptions {
  /** How the config file is named on the command line; default `['-f', file]`. */
  fileArgs?: (file: string) => string[];
  /**
   * Rewrites the whole command line (`[node, smtpsiftd, ...args]`) before it is spawned,
   * e.g. to run the daemon inside a private mount namespace. The spawned process must
   * end up being the daemon itself (use `exec`), so that its PID is the daemon's.
   */
  wrap?: (argv: string[]) => string[];
  /** Config text appended verbatim after the generated lines. */
  extraConfig?: string;
}

/** Makes a private temp directory, removed by the returned function. */
export function tempDir(prefix = 'smtpsift-test-'): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * `options` are config lines (`{ OutAddress: '127.0.0.1:2525' }`); Listen and TempDirectory
 * default to 127.0.0.1:0 and the daemon's private directory.
 */
export async function startDaemon(
  options: Record<string, string>,
  args: string[] = ['-d', '4'],
  start: StartOptions = {},
): Promise<Daemon> {
  const { dir } = tempDir();
  const spoolDir = join(dir, 'spool');
  rmSync(spoolDir, { recursive: true, force: true });
  const { mkdirSync } = await import('node:fs');
  mkdirSync(spoolDir);
  const conf = { Listen: '127.0.0.1:0', TempDirectory: spoolDir, ...options };
  const file = join(dir, 'smtpsiftd.conf');
  writeFileSync(file, Object.entries(conf).map(([k, v]) => `${k}: ${v}\n`).join('') + (start.extraConfig ?? ''));
  const argv = [process.execPath, SMTPSIFTD, ...args, ...(start.fileArgs ?? ((f: string) => ['-f', f]))(file)];
  const [cmd = process.execPath, ...cmdArgs] = start.wrap?.(argv) ?? argv;
  const proc = spawn(cmd, cmdArgs, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const waiters = new Set<() => void>();
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
    for (const w of waiters) w();
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const waitForLog = (re: RegExp, timeoutMs = 5000): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const m = re.exec(stderr);
        if (m) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve(m[0]);
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`log never matched ${re}; log so far:\n${stderr}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  const listening = await Promise.race([
    // `ip:port` for TCP, the socket's path for a unix socket Listen.
    waitForLog(/listening on [^\s;]+;/),
    exited.then((code) => {
      throw new Error(`smtpsiftd exited with ${code}:\n${stderr}`);
    }),
  ]).catch((e: unknown) => {
    // A daemon that never listened leaves nothing behind: no process, no directory.
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw e;
  });
  const port = Number(/:(\d+);$/.exec(listening)?.[1] ?? 0);
  const socketPath = /^listening on (\/[^\s;]*);$/.exec(listening)?.[1];
  return {
    proc,
    port,
    socketPath,
    dir,
    spoolDir,
    configFile: file,
    exited,
    log: () => stderr,
    waitForLog,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const code = await exited;
      rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}
