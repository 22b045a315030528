#!/usr/bin/env node
// smtpsiftd [-d level] [-f configfile] [-p pidfile] | smtpsiftd -v   (proxsmtpd's flags)

import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { resolve as absolute } from 'node:path';
import { ConfigError } from '../config/errors.js';
import { loadConfig } from '../config/load.js';
import { DEFAULT_CONFIG } from '../config/schema.js';
import { Logger, stderrSink, syslogSink, Level } from '../log/logger.js';
import { startDaemon, type Daemon } from '../server/daemon.js';
import { Router } from '../routing/router.js';
import { resolveSystem, StartupError } from '../server/system.js';
import { getopt, UsageError } from './getopt.js';
import { VERSION } from './version.js';

const IDENT = 'smtpsiftd';
/** Set in the detached child, whose fd 3 tells the parent how start-up went. */
const DETACHED_ENV = 'SMTPSIFTD_DETACHED';
const DETACHED = process.env[DETACHED_ENV] === '1';
// Not for the filters, which get the daemon's environment.
delete process.env[DETACHED_ENV];
const USAGE = `usage: ${IDENT} [-d debuglevel] [-f configfile] [-p pidfile]\n       ${IDENT} -v\n`;


function parseLevel(text: string): number {
  if (!/^-?\d+$/.test(text) || Number(text) > Level.Debug) {
    throw new StartupError(`invalid debug log level '${text}' (must be between 0 and 4)`, 2);
  }
  return Number(text);
}

/**
 * Without -d: start a detached copy of ourselves (new session, no terminal, cwd /) and
 * exit once it says it listens, with its error and status if it could not. The files
 * named by -f and -p are passed on as absolute paths, so that relative ones name what
 * they named here.
 */
function detach(file: string, pidFile: string | undefined): Promise<number> {
  const args = ['-f', absolute(file), ...(pidFile === undefined ? [] : ['-p', absolute(pidFile)])];
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1] ?? '', ...args], {
    detached: true,
    cwd: '/',
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: { ...process.env, [DETACHED_ENV]: '1' },
  });
  return new Promise((resolve) => {
    let said = '';
    const pipe = child.stdio[3];
    pipe?.on('data', (d: Buffer) => (said += d.toString()));
    pipe?.on('end', () => {
      if (said.startsWith('ready')) {
        child.unref();
        resolve(0);
      }
    });
    child.on('exit', (code) => {
      const [status, ...message] = said.trim().split('\n');
      for (const line of message) process.stderr.write(`${IDENT}: ${line}\n`);
      resolve(code ?? (Number(status) || 1));
    });
  });
}

async function main(args: string[]): Promise<number> {
  const { opts, rest } = getopt(args, 'd:f:p:v');
  if (rest.length > 0) throw new UsageError('unexpected arguments');
  const file = (opts.get('f') as string | undefined) ?? DEFAULT_CONFIG;
  if (opts.has('v')) {
    process.stdout.write(`${IDENT} (version ${VERSION})\n          (config: ${DEFAULT_CONFIG})\n`);
    return 0;
  }
  const debug = opts.get('d') as string | undefined;
  const level = debug === undefined ? Level.Info : parseLevel(debug);
  const config = loadConfig(file);
  const log = new Logger(debug === undefined ? syslogSink(IDENT, config.syslogSocket) : stderrSink(IDENT), level);
  const account = resolveSystem(config, (m) => log.warn(m));
  // The route table is read now, so a bad one is `FILE:LINE: ...` and exit status 2, like
  // the configuration; in the detached child too (reported through fd 3).
  const router = config.routeType !== undefined ? new Router(config, undefined) : undefined;
  const pidArg = opts.get('p') as string | undefined;
  let pidFile = pidArg;
  // A PidFile line overrides -p, an empty one too (no pid file), as with proxsmtpd.
  if (config.lines.has('pidFile')) {
    if (pidFile !== undefined) log.warn('ignoring pid file specified on the command line');
    pidFile = config.pidFile;
  }
  if (debug === undefined && !DETACHED) return detach(file, pidArg);

  const report = DETACHED ? createWriteStream('', { fd: 3 }) : undefined;
  // The handlers come before the pid file and the "listening" notice: a SIGTERM sent as
  // soon as either appears must still drain and clean up, not kill us by default action.
  let daemon: Daemon | undefined;
  let stopping = false;
  const stop = (): void => {
    stopping = true;
    void daemon?.stop().then((status) => process.exit(status));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Likewise SIGHUP (reload): its default action would kill a daemon that is just up.
  process.on('SIGHUP', () => daemon?.reload());
  // SIGUSR1: logrotate's reopen (issue 6); ignored before the daemon is up.
  process.on('SIGUSR1', () => daemon?.reopenLogs());
  try {
    daemon = await startDaemon(config, { log, pidFile, account, router, onFatal: stop });
  } catch (e) {
    if (e instanceof ConfigError) throw e; // FILE:LINE, exit 2
    throw new StartupError((e as Error).message, 1);
  }
  if (stopping) stop();
  report?.end('ready\n');
  return -1; // keep running
}

main(process.argv.slice(2)).then(
  (status) => {
    if (status >= 0) process.exit(status);
  },
  (e: unknown) => {
    if (e instanceof UsageError) {
      process.stderr.write(`${IDENT}: ${e.message}\n${USAGE}`);
      process.exit(2);
    }
    const problems = e instanceof ConfigError ? e.problems : [(e as Error).message];
    const status = e instanceof StartupError ? e.status : e instanceof ConfigError ? 2 : 1;
    const text = problems.map((p) => `${IDENT}: ${p}`).join('\n');
    if (DETACHED) {
      createWriteStream('', { fd: 3 }).end(`${status}\n${problems.join('\n')}\n`, () => process.exit(status));
    } else {
      process.stderr.write(`${text}\n`);
      process.exit(status);
    }
  },
);
