// The daemon's life, in order: listen, pid file, worker processes (Workers), drop privileges, spool, serve, drain.

import { chownSync, closeSync, constants, fchmodSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { formatAddress } from '../config/addresses.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { Spool } from '../spool/spool.js';
import { CAP_NET_ADMIN } from '../native.js';
import { destinationFor } from '../upstream/destination.js';
import { relayWarnings, type Router } from '../routing/router.js';
import { Listener } from './listener.js';
import { raiseFdLimit } from './fdlimit.js';
import { accountingFor, type Accounting } from '../accounting/accounting.js';
import { dropTo, type Account } from './privileges.js';
import { connectionSlots, sharedConnectionSlots } from './slots.js';
import { WorkerPool, workerCount } from './workers.js';
import { configSource } from '../config/load.js';
import { ConfigError } from '../config/errors.js';

/** How long sessions may take to finish their message after SIGTERM (documented in smtpsiftd(8)). */
export const DRAIN_SECONDS = 30;

export interface DaemonOptions {
  readonly log: Logger;
  readonly pidFile: string | undefined;
  /** The account to drop to, already looked up; undefined when not root or no User. */
  readonly account: Account | undefined;
  /** Routed mode (RouteType): the route table, loaded before (its errors exit with status 2). */
  readonly router?: Router | undefined;
  /** Called once when a worker process dies (Workers > 1): the caller stops the daemon. */
  readonly onFatal?: () => void;
}

export interface Daemon {
  readonly listener: Listener;
  /**
   * Resolves when the daemon has drained and cleaned up after a stop(), with the exit
   * status: 0, or 1 when a worker process died.
   */
  stop(): Promise<number>;
  /** SIGHUP: re-reads what can be re-read (the route file), reopens the log file; sessions carry on. */
  reload(): void;
  /** SIGUSR1 (logrotate): reopens the accounting log file. */
  reopenLogs(): void;
}

export async function startDaemon(config: Config, opts: DaemonOptions): Promise<Daemon> {
  const { log } = opts;
  const spoolRef: { spool?: Spool; accounting?: Accounting } = {};
  const transparent = config.transparentProxy;
  const router = opts.router;
  router?.setLogger(log);
  const processes = workerCount(config);
  const shared = processes > 1 ? sharedConnectionSlots(config.maxConnections) : undefined;
  const slots = shared?.slots ?? connectionSlots(config.maxConnections);
  // Before listening, and before the privilege drop (raising the hard limit needs root).
  const fds = raiseFdLimit(config.maxConnections, log, undefined, processes);
  slots.setLimit(fds.maxConnections);
  const listener: Listener = new Listener(
    {
      config,
      log,
      get spool(): Spool {
        if (spoolRef.spool === undefined) throw new Error('spool not ready');
        return spoolRef.spool;
      },
      router,
      get accounting(): Accounting | undefined {
        return spoolRef.accounting;
      },
      destination: destinationFor(config, router !== undefined, () => listener.tcpAddress()),
    },
    log,
    slots,
    fds.perProcess,
  );
  // proxsmtpd.conf(5): OutAddress "will be ignored when TransparentProxy is enabled".
  if (transparent !== 'off' && config.outAddress !== undefined) {
    log.warn('the OutAddress option will be ignored when TransparentProxy is enabled');
  }
  await listener.listen(config.listen, transparent === 'full');
  // proxsmtpd bound after its switch to User, so its socket was User's: clients running as
  // that user (Postfix as postfix, say) could connect. The same here, though bound as root.
  if (config.listen.kind === 'unix' && opts.account !== undefined) chownSync(config.listen.path, opts.account.uid, opts.account.gid);
  // As proxsmtpd: a pid file that cannot be written is a warning, not a reason to stay down.
  let pidFile = opts.pidFile;
  if (pidFile !== undefined) {
    try {
      writePidFile(pidFile);
    } catch (e) {
      log.warn(`cannot write the pid file ${pidFile}: ${errnoText(e)}; going on without one`);
      pidFile = undefined;
    }
  }
  const removePidFile = (): void => {
    if (pidFile === undefined) return;
    try {
      unlinkSync(pidFile);
    } catch (e) {
      log.warn(`cannot remove the pid file ${pidFile}: ${(e as Error).message}`);
    }
  };
  // Workers: the processes start before the drop and drop to the same account themselves.
  const configText = configSource(config);
  if (shared !== undefined && configText === undefined) throw new Error('Workers: the configuration text is not known');
  let crashed = false;
  const pool =
    shared !== undefined
      ? new WorkerPool(processes - 1, listener.listeningFd(), shared.fd, log, () => {
          crashed = true;
          opts.onFatal?.();
        })
      : undefined;
  if (shared !== undefined) closeSync(shared.fd);
  // Full mode binds every upstream socket to the client's address with IP_TRANSPARENT.
  const keepCaps = transparent === 'full' ? [CAP_NET_ADMIN] : [];
  let spool: Spool;
  try {
    if (opts.account) {
      dropTo(opts.account, keepCaps);
      log.debug(
        `switched to user ${opts.account.name} (uid ${opts.account.uid}, gid ${opts.account.gid})` +
          (keepCaps.length > 0 ? '; kept CAP_NET_ADMIN for IP_TRANSPARENT' : ''),
      );
    }
    // After the drop, so the spool belongs to the user the filters run as.
    try {
      spool = spoolRef.spool = Spool.create(config.tempDirectory, log);
    } catch (e) {
      const line = config.lines.get('tempDirectory');
      const as = opts.account === undefined ? '' : ` as ${opts.account.name}`;
      throw new ConfigError([`${config.file}${line === undefined ? '' : `:${line}`}: TempDirectory: ${config.tempDirectory}: cannot make the private spool directory${as}: ${errnoText(e)}`]);
    }
    // Likewise the log file and the counters database (issue 6).
    spoolRef.accounting = accountingFor(config, log);
  } catch (e) {
    await pool?.kill();
    removePidFile();
    throw e;
  }
  // The same warnings as smtpsift check: an open relay, options without effect.
  if (router !== undefined) for (const w of relayWarnings(config)) log.warn(w);
  if (pool !== undefined) {
    try {
      await pool.init({
        configText: configText ?? '',
        configFile: config.file,
        level: log.level,
        spoolDir: spool.dir,
        account: opts.account,
        keepCaps,
        perProcess: fds.perProcess,
      });
    } catch (e) {
      // Nothing left behind by a start that failed here: the spool, the pid file.
      await listener.close(0);
      spool.close();
      await spoolRef.accounting?.close();
      removePidFile();
      throw e;
    }
    log.notice(`Workers: ${processes} (the main process and ${processes - 1} worker process${processes > 2 ? 'es' : ''})`);
  }
  router?.watch();
  const upstream =
    router !== undefined
      ? `per recipient domain (RouteType ${router.type}${config.routeDatabase !== undefined ? ` ${config.routeDatabase}` : ''})`
      : transparent !== 'off' ? `the original destination (TransparentProxy ${transparent})` : config.outAddress ? formatAddress(config.outAddress) : '?';
  log.notice(`listening on ${boundAddress(listener, config)}; upstream ${upstream}`);

  let stopping: Promise<number> | undefined;
  return {
    listener,
    stop() {
      stopping ??= (async () => {
        log.notice('stopping: no new connections; letting sessions finish');
        await Promise.all([listener.close(DRAIN_SECONDS * 1000), pool?.stop(DRAIN_SECONDS * 1000)]);
        spoolRef.spool?.close();
        // The last lines written out and the counters committed.
        await spoolRef.accounting?.close();
        await router?.close();
        removePidFile();
        return crashed ? 1 : 0;
      })();
      return stopping;
    },
    reload() {
      pool?.reload();
      spoolRef.accounting?.reopen();
      if (router === undefined) log.notice(spoolRef.accounting !== undefined ? 'SIGHUP received; log file reopened' : 'SIGHUP received; nothing to reload');
      else router.reload('SIGHUP');
    },
    reopenLogs() {
      pool?.reopenLogs();
      spoolRef.accounting?.reopen();
      log.notice('SIGUSR1 received; log file reopened');
    },
  };
}

/** The address actually bound (the port is chosen by the system for `Listen: ...:0`). */
function boundAddress(listener: Listener, config: Config): string {
  const a = listener.tcpAddress();
  return formatAddress(a === undefined ? config.listen : { kind: 'tcp', host: a.address, port: a.port });
}

/** "permission denied", from Node's "EACCES: permission denied, open '/x'". */
function errnoText(e: unknown): string {
  const message = (e as Error).message;
  return /^E[A-Z0-9]+: ([^,]+)/.exec(message)?.[1] ?? message;
}

/**
 * Written as root, in a directory User may be able to write (its pid file's): so never
 * through a link planted there (the old file is removed, the new one made exclusively,
 * not following a symbolic link), and 0644 whatever the umask.
 */
function writePidFile(path: string): void {
  rmSync(path, { force: true });
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    fchmodSync(fd, 0o644);
    writeSync(fd, `${process.pid}\n`);
  } finally {
    closeSync(fd);
  }
}
