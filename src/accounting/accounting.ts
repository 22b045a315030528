// Accounting as the daemon sees it: one record(event) per message, fanned out to the sinks
// LogType names (issue 6, "Configuration"): the file log, syslog (facility mail, on
// SyslogSocket) and the counters database. Built once at start-up from plain options, so
// the config rows (LogType, LogFile, CounterDatabase, SyslogSocket, LogFormat,
// LogDateFormat) map onto it one to one.

import { CounterWriter } from './counters.js';
import { accountingProblems, type LogType } from './logtype.js';
export { parseLogType } from './logtype.js';
export { accountingProblems, type LogType };
import type { MessageEvent } from './event.js';
import { FileLog } from './filelog.js';
import { compileLogFormat, DEFAULT_DATE_FORMAT, DEFAULT_LOG_FORMAT, parseLogFormat, type Renderer } from './format.js';
import { createRequire } from 'node:module';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';

interface UnixDgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, cb?: (err?: Error) => void): void;
  on(event: 'error', cb: (err: Error) => void): void;
  close(): void;
}

/**
 * Accounting lines to syslog: facility mail, severity info, RFC 3164, on a unix datagram
 * socket, as src/log/logger.ts's syslogSink, which has no close() (a daemon exits with it
 * open; Accounting.close() must not keep the event loop alive). A missing or restarting
 * syslog daemon loses lines, never mail.
 */
class SyslogLines {
  private readonly socket: UnixDgramSocket;
  constructor(
    private readonly ident: string,
    private readonly path: string,
  ) {
    const { createSocket } = createRequire(import.meta.url)('unix-dgram') as { createSocket(type: 'unix_dgram'): UnixDgramSocket };
    this.socket = createSocket('unix_dgram');
    this.socket.on('error', () => undefined);
  }
  write(text: string): void {
    const [, month, day, , time] = new Date().toString().split(' ');
    const line = `<${2 * 8 + 6}>${month} ${(day ?? '').replace(/^0/, ' ')} ${time} ${this.ident}[${process.pid}]: ${text}`;
    const buf = Buffer.from(line, 'utf8');
    try {
      this.socket.send(buf, 0, buf.length, this.path, () => undefined);
    } catch {
      // The line is lost; the daemon goes on.
    }
  }
  close(): void {
    this.socket.close();
  }
}

export interface AccountingOptions {
  readonly logType: LogType;
  readonly logFile?: string;
  readonly counterDatabase?: string;
  readonly syslogSocket?: string;
  readonly logFormat?: string;
  readonly logDateFormat?: string;
  /** The syslog ident (default smtpsiftd). */
  readonly ident?: string;
  /** Problems while running (full disk, failed commit): the daemon's logger. */
  readonly onError?: (message: string) => void;
}

export class Accounting {
  private readonly render: Renderer;
  /** Whether the LogFormat has %status, so that a line can say its message was not delivered. */
  private readonly linesSayStatus: boolean;
  private readonly file: FileLog | undefined;
  private readonly syslog: SyslogLines | undefined;
  private readonly counters: CounterWriter | undefined;

  /** Throws FormatError for a bad LogFormat or LogDateFormat (a start-up error, exit 2). */
  constructor(o: AccountingOptions) {
    const problems = accountingProblems(o);
    if (problems.length > 0) throw new Error(problems.join('; '));
    const format = o.logFormat ?? DEFAULT_LOG_FORMAT;
    this.render = compileLogFormat(format, o.logDateFormat ?? DEFAULT_DATE_FORMAT);
    this.linesSayStatus = parseLogFormat(format).some((p) => 'token' in p && p.token === 'status');
    const onError = o.onError ?? (() => undefined);
    if ((o.logType === 'filelog' || o.logType === 'filelog+counters') && o.logFile) this.file = new FileLog(o.logFile, { onError });
    if (o.logType === 'syslog' || o.logType === 'syslog+counters') this.syslog = new SyslogLines(o.ident ?? 'smtpsiftd', o.syslogSocket ?? '/dev/log');
    if (o.logType.endsWith('counters')) {
      const path = o.counterDatabase ?? o.logFile;
      if (path) this.counters = new CounterWriter(path, { onError });
    }
  }

  /**
   * One event per message; never throws, never waits. A line is written for every message
   * when the LogFormat has %status, and for delivered messages only when it has not: such a
   * line (Moxy's default format is one) reads as traffic, and logalyze, as operators billing
   * from it, would count a rejected or temp-failed message as delivered.
   */
  record(event: MessageEvent): void {
    const lined = this.linesSayStatus || event.status === 'delivered';
    if (lined && (this.file !== undefined || this.syslog !== undefined)) {
      const line = this.render(event);
      this.file?.write(line);
      this.syslog?.write(line);
    }
    this.counters?.record(event);
  }

  /** SIGHUP / SIGUSR1 (logrotate). */
  reopen(): void {
    this.file?.reopen();
  }

  /** Shutdown: the file log written out, the counters committed. */
  async close(): Promise<void> {
    await this.file?.close();
    await this.counters?.close();
    this.syslog?.close();
  }
}

/** The accounting a configuration asks for; undefined with LogType nolog. */
export function accountingFor(config: Config, log: Logger): Accounting | undefined {
  if (config.logType === 'nolog') return undefined;
  return new Accounting({
    logType: config.logType,
    logFile: config.logFile,
    counterDatabase: config.counterDatabase,
    syslogSocket: config.syslogSocket,
    logFormat: config.logFormat,
    logDateFormat: config.logDateFormat,
    onError: (m) => log.error(m),
  });
}
