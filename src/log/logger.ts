// Logging: to stderr at `-d level`, or to syslog (facility mail) when detached.
// Levels follow proxsmtpd's -d: 0 errors, 1 warnings, 2 notices, 3 info (one line per
// message), 4 debug (the SMTP dialogue, never message bodies).

import { createRequire } from 'node:module';

export const enum Level {
  Error = 0,
  Warn = 1,
  Notice = 2,
  Info = 3,
  Debug = 4,
}

const SEVERITY = [3, 4, 5, 6, 7]; // syslog severities for our levels
const FACILITY_MAIL = 2;

export interface Sink {
  write(level: Level, text: string): void;
}

export class Logger {
  constructor(
    private readonly sink: Sink,
    readonly level: number,
    private readonly prefix = '',
  ) {}

  child(context: string): Logger {
    return new Logger(this.sink, this.level, `${this.prefix}${context}: `);
  }

  enabled(level: Level): boolean {
    return level <= this.level;
  }

  private log(level: Level, text: string): void {
    if (level <= this.level) this.sink.write(level, this.prefix + text);
  }

  error(text: string): void {
    this.log(Level.Error, text);
  }
  warn(text: string): void {
    this.log(Level.Warn, text);
  }
  notice(text: string): void {
    this.log(Level.Notice, text);
  }
  info(text: string): void {
    this.log(Level.Info, text);
  }
  debug(text: string): void {
    this.log(Level.Debug, text);
  }
}

export function stderrSink(ident: string): Sink {
  return { write: (_level, text) => process.stderr.write(`${ident}: ${text}\n`) };
}

interface UnixDgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, cb?: (err?: Error) => void): void;
  on(event: 'error', cb: (err: Error) => void): void;
  close(): void;
}

/**
 * RFC 3164 lines on a unix datagram socket (/dev/log). Node has no AF_UNIX datagrams of
 * its own, hence the small native unix-dgram module. A missing or restarting syslog
 * daemon loses lines but never stops the daemon.
 */
export function syslogSink(ident: string, path = '/dev/log'): Sink {
  const require = createRequire(import.meta.url);
  const { createSocket } = require('unix-dgram') as { createSocket(type: 'unix_dgram'): UnixDgramSocket };
  const socket = createSocket('unix_dgram');
  socket.on('error', () => undefined);
  return {
    write(level, text) {
      const [, month, day, , time] = new Date().toString().split(' '); // "Sun Nov 02 2026 01:02:03 GMT..."
      const stamp = `${month} ${(day ?? '').replace(/^0/, ' ')} ${time}`;
      const line = `<${FACILITY_MAIL * 8 + (SEVERITY[level] ?? 6)}>${stamp} ${ident}[${process.pid}]: ${text}`;
      const buf = Buffer.from(line, 'latin1');
      try {
        socket.send(buf, 0, buf.length, path, () => undefined);
      } catch {
        // A send on a closed or missing socket: the line is lost, the daemon goes on.
      }
    },
  };
}

/** Quotes an untrusted value for a log line: printable ASCII, at most 200 characters. */
export function q(value: string): string {
  const clean = value.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 200 ? `${clean.slice(0, 200)}...` : clean;
}

/** proxsmtpd's MAX_LOG_LINE: a dialogue line in the debug log shows this much of the line. */
const DIALOGUE_LINE = 79;

export type Direction = 'CLIENT <' | 'CLIENT >' | 'SERVER <' | 'SERVER >';

/**
 * `-d 4`'s dialogue, written as proxsmtpd writes it (spec §19), since operators grep for
 * these lines: `CLIENT <` what the client sent, `CLIENT >` what it was sent, `SERVER >`
 * what the upstream was sent and `SERVER <` what it answered. Every line on the wire is
 * one log line, each line of a multi-line reply too, cut at proxsmtpd's 79 characters
 * (its log_io_data); unlike proxsmtpd, control bytes are shown as `?` (log injection).
 */
export function dialogue(log: Logger, direction: Direction, wire: string): void {
  if (!log.enabled(Level.Debug)) return;
  for (const line of wire.split(/[\r\n]+/)) {
    if (line !== '') log.debug(`${direction} ${q(line.slice(0, DIALOGUE_LINE))}`);
  }
}
