// The targets smtp-source is pointed at, all in front of the same smtp-sink: smtpsiftd,
// the Debian proxsmtpd (same configuration syntax), the sink itself ("direct", the physical
// limit of this machine), and a bare TCP relay in Node (lib/relay.ts: the floor of a Node
// proxy here). A target may carry extra configuration lines (e.g. a FilterCommand for
// issue 7), so one kind can appear as several targets.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, isRunning, start, stop, waitForGreeting, type Started } from './processes.js';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const SMTPSIFTD = join(REPO, 'dist/src/cli/smtpsiftd.js');
export const PROXSMTPD = '/usr/sbin/proxsmtpd';
const RELAY = join(REPO, 'dist/bench/lib/relay.js');

export type Kind = 'smtpsiftd' | 'proxsmtpd' | 'direct' | 'relay';

export interface TargetSpec {
  /** Column name in the report, unique. */
  readonly label: string;
  readonly kind: Kind;
  /** Configuration lines beyond the common ones (ignored for direct). */
  readonly config?: Readonly<Record<string, string>>;
}

export interface RunningTarget {
  readonly spec: TargetSpec;
  readonly port: number;
  /** The daemon process; undefined for direct. */
  readonly daemon: Started | undefined;
  readonly logPath: string | undefined;
}

export interface TargetOptions {
  /** Directory for configs, logs and TempDirectory. */
  readonly dir: string;
  /** Extra node flags for smtpsiftd, e.g. --cpu-prof. */
  readonly nodeFlags: readonly string[];
}

let serial = 0;

/** The configuration every daemon gets (the brief's), in proxsmtpd.conf syntax. */
function configText(listenPort: number, sinkPort: number, tempDir: string, extra: Readonly<Record<string, string>>): string {
  const lines: Record<string, string> = {
    Listen: `127.0.0.1:${listenPort}`,
    OutAddress: `127.0.0.1:${sinkPort}`,
    TempDirectory: tempDir,
    MaxConnections: '512',
    ...extra,
  };
  return Object.entries(lines)
    .map(([k, v]) => `${k}: ${v}\n`)
    .join('');
}

/**
 * Starts a target in front of `sink`. `extra`: configuration lines of the scenario, over the
 * target's own (e.g. a MaxConnections above 500 for the burst and idle scenarios).
 */
export async function startTarget(spec: TargetSpec, sink: { readonly port: number }, opts: TargetOptions, extra: Readonly<Record<string, string>> = {}): Promise<RunningTarget> {
  if (spec.kind === 'direct') return { spec, port: sink.port, daemon: undefined, logPath: undefined };
  const n = ++serial;
  const dir = join(opts.dir, `${spec.label}-${n}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const port = await freePort();
  const logPath = join(dir, 'daemon.log');
  /** The daemons' configuration file and TempDirectory (the relay has neither). */
  const conf = (): string => {
    const tmp = join(dir, 'tmp');
    mkdirSync(tmp, { mode: 0o700 });
    const path = join(dir, `${spec.kind}.conf`);
    writeFileSync(path, configText(port, sink.port, tmp, { ...spec.config, ...extra }));
    return path;
  };
  const daemon =
    spec.kind === 'relay'
      ? start(spec.label, process.execPath, [RELAY, String(port), String(sink.port)], logPath)
      : spec.kind === 'smtpsiftd'
        ? start(spec.label, process.execPath, [...opts.nodeFlags, SMTPSIFTD, '-d', '0', '-f', conf()], logPath)
        : start(spec.label, PROXSMTPD, ['-d', '0', '-f', conf()], logPath);
  await waitForGreeting(port, daemon);
  return { spec, port, daemon, logPath };
}

export async function stopTarget(t: RunningTarget): Promise<void> {
  if (t.daemon !== undefined) await stop(t.daemon);
}

/** How a daemon ended, for the report: "status 1" or "signal SIGSEGV". */
export function howEnded(t: RunningTarget): string {
  const c = t.daemon?.child;
  if (c === undefined) return 'not a daemon';
  return c.signalCode !== null ? `signal ${c.signalCode}` : `status ${c.exitCode}`;
}

/** Whether the daemon is still up (a crash under load is a finding, not a bench error). */
export function alive(t: RunningTarget): boolean {
  return t.daemon === undefined || isRunning(t.daemon);
}

/** The daemon's log lines (at -d 0: errors only), for the report. */
export function logLines(t: RunningTarget): string[] {
  if (t.logPath === undefined) return [];
  try {
    return readFileSync(t.logPath, 'utf8').split('\n').filter((l) => l.trim() !== '');
  } catch {
    return [];
  }
}
