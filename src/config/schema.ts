// The one table of configuration options. The parser, the defaults, `smtpsift check`
// and the OPTIONS section of man/smtpsiftd.conf.5 are all derived from it.
//
// Syntax and validation follow proxsmtpd.conf(5) 1.10 so that existing files load
// unchanged (spec: proxsmtpd-behavior.md §2). Where proxsmtpd's validation was
// wrong (MaxConnections: 1 is refused with a message that says it is allowed),
// we accept what its message promises.

import { parseListen, parseOutAddress, type ListenAddress, type OutAddress } from './addresses.js';
import { ValueError } from './errors.js';
import { parseRelayAcl, type RelayAcl } from '../routing/acl.js';
import { parseDestinationList, type DestinationList } from '../routing/destinations.js';
import { parseLogType, type LogType } from '../accounting/logtype.js';
import { DEFAULT_DATE_FORMAT, DEFAULT_LOG_FORMAT, validateDateFormat, validateLogFormat } from '../accounting/format.js';

export interface OptionRow<T> {
  /** Canonical spelling, as shown by `smtpsift check` and the man page. */
  readonly name: string;
  /** The value text of the default, as a user would write it ('' = unset). */
  readonly defaultText: string;
  /** Placeholder for the man page, e.g. `seconds`. */
  readonly arg: string;
  readonly doc: string;
  /** Other names accepted for the option (Moxy's), case-insensitive like the name. */
  readonly aliases?: readonly string[];
  /**
   * The value is bytes: given to parse as latin1 (one char per byte of the file) and
   * written out as latin1 by its sink (the message, a reply, /bin/sh), so that it arrives
   * byte for byte whatever the file's encoding, as with proxsmtpd. Without it the value is
   * text for Node (a path, a name, a format): decoded as UTF-8, and refused if it is not.
   */
  readonly bytes?: true;
  /** Options that are parsed but whose feature has not landed: a start-up error when set. */
  readonly notBuilt?: (value: T) => string | undefined;
  parse(text: string): T;
}

function row<T>(r: OptionRow<T>): OptionRow<T> {
  return r;
}

/** Node's timers take at most 2^31-1 ms; proxsmtpd set no upper bound at all. */
const MAX_SECONDS = 2147483;

function integer(min: number, max: number, what: string) {
  return (text: string): number => {
    if (!/^[+-]?\d+$/.test(text)) throw new ValueError(`'${text}' is not a whole number; ${what}`);
    const n = Number(text);
    if (n < min || n > max) throw new ValueError(`${n} is out of range; ${what}`);
    return n;
  };
}

const TRUE = new Set(['1', 'yes', 'true', 't', 'on']);
const FALSE = new Set(['0', 'no', 'false', 'f', 'off']);

function boolean(text: string): boolean {
  const t = text.toLowerCase();
  if (TRUE.has(t)) return true;
  if (FALSE.has(t)) return false;
  throw new ValueError(`'${text}' is not a boolean; use on/off, yes/no, true/false or 1/0`);
}

function nonEmpty(text: string): string {
  if (text === '') throw new ValueError('the value must not be empty');
  return text;
}

/** Where smtpsiftd and `smtpsift check` look without -f. */
/** Moxy quotes its format strings (`log_format "%date: ..."`): one pair of surrounding double quotes is not part of the value. */
function unquote(text: string): string {
  return text.length >= 2 && text.startsWith('"') && text.endsWith('"') ? text.slice(1, -1) : text;
}

export const DEFAULT_CONFIG = '/etc/smtpsiftd.conf';

export type FilterType = 'pipe' | 'file' | 'reject';
export type Transparent = 'off' | 'client' | 'full';
export type RouteType = 'nodb' | 'file' | 'lmdb';

export const SCHEMA = {
  listen: row<ListenAddress>({
    name: 'Listen',
    defaultText: '0.0.0.0:10025',
    arg: 'address',
    doc:
      'Where to accept SMTP connections: a port alone (all IPv4 addresses), an IP address ' +
      '(port 10025), ip:port, [ipv6]:port, host:port or host (port 10025), or the absolute ' +
      'path of a unix socket (a stale socket file there is removed first). A host name is ' +
      'resolved once, at start-up, with getaddrinfo(3): the daemon listens on the first ' +
      'address it returns, IPv4 or IPv6, as proxsmtpd did, and on none of the others. A name ' +
      'that does not resolve is a configuration error.',
    parse: parseListen,
  }),
  outAddress: row<OutAddress | undefined>({
    name: 'OutAddress',
    defaultText: '',
    arg: 'address',
    doc:
      'The upstream SMTP server: ip:port, ip (port 25), [ipv6]:port, host[:port] (the name is ' +
      'resolved again for every connection), or the absolute path of a unix socket. A port ' +
      'alone selects loopback mode: each connection is relayed back to the IP address it came ' +
      'from, at that port. Required, unless TransparentProxy is on: then it is not used, and ' +
      'a value set is ignored with a warning at start-up.',
    parse: parseOutAddress,
  }),
  maxConnections: row<number>({
    name: 'MaxConnections',
    defaultText: '64',
    arg: 'number',
    doc:
      'The most client connections served at once. A client beyond that gets ' +
      '"421 Server busy, too many connections" and no upstream connection is made. Each ' +
      'connection takes two open files (the client\'s and the upstream\'s): at start-up the ' +
      'daemon raises its open files limit to 2 * MaxConnections + 256 where it may, and says ' +
      'so in the log; where it may not, it serves as many as the limit has room for and warns. With Workers, the limit is for ' +
      'all workers together. 1 to 100000.',
    parse: integer(1, 100000, 'must be between 1 and 100000'),
  }),
  workers: row<number>({
    name: 'Workers',
    defaultText: '1',
    arg: 'number|auto',
    doc:
      'How many processes accept and serve connections, each with its own event loop. 1: the ' +
      'daemon process alone. auto (or 0): one per CPU the daemon may use. More than one helps ' +
      'when one process is busy all the time (many messages at once), or when the open files ' +
      'limit of one process cannot hold MaxConnections (each process has its own). ' +
      'MaxConnections counts the connections of all of them together. See WORKERS in ' +
      'smtpsiftd(8). 1 to 256, or auto.',
    parse(text) {
      if (text.toLowerCase() === 'auto') return 0;
      return integer(0, 256, "must be 'auto' or a number from 0 (auto) to 256")(text);
    },
  }),
  timeOut: row<number>({
    name: 'TimeOut',
    defaultText: '180',
    arg: 'seconds',
    doc:
      'How long to wait for the client or the upstream at any step, connecting to the ' +
      'upstream included. A command line or a reply line must be whole within it, however ' +
      'its bytes trickle in; inside DATA it is the longest silence. An idle client gets ' +
      '"421 4.4.2" and is disconnected; an upstream that does not answer in time ends the ' +
      'session with a 421. At least 1.',
    parse: integer(1, MAX_SECONDS, `must be a number of seconds from 1 to ${MAX_SECONDS}`),
  }),
  keepAlives: row<number>({
    name: 'KeepAlives',
    defaultText: '0',
    arg: 'seconds',
    doc:
      'Send NOOP to the upstream every so many seconds while a message is received and ' +
      'filtered, so that the upstream does not time out. 0 disables them.',
    parse: integer(0, MAX_SECONDS, `must be a number of seconds from 0 to ${MAX_SECONDS}`),
  }),
  xClient: row<boolean>({
    name: 'XClient',
    defaultText: 'off',
    arg: 'on|off',
    doc:
      'Send "XCLIENT ADDR=<client ip>" to the upstream once per connection, after an EHLO ' +
      'whose reply offers XCLIENT or after any HELO, so that the upstream (e.g. Postfix with ' +
      'smtpd_authorized_xclient_hosts) sees the real client.',
    parse: boolean,
  }),
  transparentProxy: row<Transparent>({
    name: 'TransparentProxy',
    defaultText: 'off',
    arg: 'off|client|full',
    doc:
      'Relay each connection to its original destination, as redirected by the firewall; ' +
      'OutAddress is then not needed. client: netfilter REDIRECT rules send the connections ' +
      'to Listen, the original destination is read from conntrack (SO_ORIGINAL_DST, IPv4 and ' +
      'IPv6) and the upstream sees the proxy\'s address. full: TPROXY rules deliver the ' +
      'connections to Listen unchanged (the listening socket gets IP_TRANSPARENT), and the ' +
      'upstream connection is made from the client\'s own address, so the upstream sees the ' +
      'client; this needs CAP_NET_ADMIN, kept across the switch to User. A connection whose ' +
      'original destination is the client itself or this proxy\'s listener is refused with ' +
      'a 421. A boolean true means client. See TRANSPARENT PROXY in smtpsiftd(8).',
    parse(text) {
      const t = text.toLowerCase();
      if (t === 'client' || t === 'full') return t;
      try {
        return boolean(text) ? 'client' : 'off';
      } catch {
        throw new ValueError(`'${text}' is not allowed; use off, client or full`);
      }
    },
  }),
  tempDirectory: row<string>({
    name: 'TempDirectory',
    defaultText: '/tmp/',
    arg: 'directory',
    doc:
      'Where messages are spooled. smtpsiftd makes a private directory (mode 0700) inside it ' +
      'at start-up and spools each message there in a file of mode 0600, removed when the ' +
      'message is done. The directory must exist.',
    parse: nonEmpty,
  }),
  user: row<string | undefined>({
    name: 'User',
    defaultText: '',
    arg: 'user',
    doc:
      'After binding the listening socket, switch to this user (a name or a numeric uid), ' +
      'with its primary group and supplementary groups. Only effective when started as root.',
    parse: nonEmpty,
  }),
  pidFile: row<string | undefined>({
    name: 'PidFile',
    defaultText: '',
    arg: 'file',
    doc:
      'Write the daemon\'s process id to this file once it listens; removed at exit. ' +
      'Overrides -p. Empty means no pid file.',
    parse: (t) => (t === '' ? undefined : t),
  }),
  skip: row<'authenticated' | undefined>({
    name: 'Skip',
    defaultText: '',
    arg: 'authenticated',
    doc:
      'authenticated: the mail of a client that has authenticated (a 235 reply to AUTH) ' +
      'passes without the filter and without the Header; FilterType reject does not apply to it.',
    parse(text) {
      if (text.toLowerCase() === 'authenticated') return 'authenticated';
      throw new ValueError(`'${text}' is not allowed; the only value is 'authenticated'`);
    },
  }),
  filterCommand: row<string | undefined>({
    name: 'FilterCommand',
    defaultText: '',
    bytes: true,
    arg: 'command',
    doc:
      'The filter, run as /bin/sh -c command for every message, with the daemon\'s ' +
      'credentials and environment plus SENDER, RECIPIENTS, CLIENT, SERVER, REMOTE, ' +
      'REMOTE_HELO, TMPDIR and (file mode) EMAIL. Its exit status and last line on standard ' +
      'error decide the reply: see FILTER SCRIPTS in smtpsiftd(8). Unset: messages pass unchanged.',
    parse: (t) => t,
  }),
  filterType: row<FilterType>({
    name: 'FilterType',
    defaultText: 'pipe',
    arg: 'pipe|file|reject',
    doc:
      'pipe: the message on the filter\'s standard input, the new message on its standard ' +
      'output. file: the message in a file named by $EMAIL. reject: refuse all mail with ' +
      'FilterReject.',
    parse(text) {
      const t = text.toLowerCase();
      if (t === 'pipe' || t === 'file' || t === 'reject') return t;
      throw new ValueError(`'${text}' is not allowed; use pipe, file or reject`);
    },
  }),
  filterReject: row<string>({
    name: 'FilterReject',
    defaultText: '530 Email Rejected',
    bytes: true,
    arg: 'reply',
    doc:
      'The reply to MAIL, RCPT and DATA with FilterType reject. Text without a three-digit ' +
      'code gets "550 Content Rejected; " in front.',
    parse: nonEmpty,
  }),
  filterTimeout: row<number>({
    name: 'FilterTimeout',
    defaultText: '30',
    arg: 'seconds',
    doc:
      'How long a filter may run in all. At the deadline its whole process group is killed ' +
      'and the client gets "451 Local Error" at once.',
    parse: integer(1, MAX_SECONDS, `must be a number of seconds from 1 to ${MAX_SECONDS}`),
  }),
  header: row<string | undefined>({
    name: 'Header',
    defaultText: '',
    bytes: true,
    arg: 'header',
    doc:
      'A header added to every message, with %i (client IP), %l (local IP), %d (date) and ' +
      '\\r \\n \\t escapes. A Received: header goes first, any other at the end of the header.',
    parse: (t) => (t === '' ? undefined : t),
  }),
  serverName: row<string>({
    name: 'ServerName',
    defaultText: 'smtp.passthru',
    arg: 'host',
    doc:
      'The host name shown in place of the upstream\'s in the greeting and the first line of ' +
      'the EHLO/HELO reply, so that MTAs on both sides do not see a mail loop.',
    parse(text) {
      if (!/^[\x21-\x7e]+$/.test(text)) throw new ValueError(`'${text}' must be one word of printable characters`);
      return text;
    },
  }),
  pipelining: row<boolean>({
    name: 'Pipelining',
    defaultText: 'on',
    arg: 'on|off',
    doc:
      'Advertise PIPELINING when the upstream does. off hides it, as proxsmtpd did. Pipelined ' +
      'commands are handled correctly either way.',
    parse: boolean,
  }),
  cutThrough: row<boolean>({
    name: 'CutThrough',
    defaultText: 'off',
    arg: 'on|off',
    doc:
      'on: mail that no filter reads (no FilterCommand, or a client let through by Skip) is ' +
      'relayed as it arrives: DATA goes upstream at once, the client gets the upstream\'s own ' +
      '354, and nothing is written to TempDirectory. A message the client or the upstream ' +
      'leaves unfinished is never ended upstream. off: the whole message is received first, as ' +
      'proxsmtpd does. See DATA in smtpsiftd(8).',
    parse: boolean,
  }),
  routeType: row<RouteType | undefined>({
    name: 'RouteType',
    aliases: ['dbtype'],
    defaultText: '',
    arg: 'nodb|file|lmdb',
    doc:
      'Selects routed (Moxy) mode: the upstream is chosen per recipient domain, dialled at the ' +
      'first RCPT. nodb: every recipient goes to RouteDefault. file: the flat file RouteDatabase, ' +
      'read into memory, reloaded on SIGHUP and when it changes. lmdb (alias dbm): the database ' +
      'RouteDatabase written by "smtpsift makedb", read on every lookup. Cannot be combined with ' +
      'OutAddress or TransparentProxy. Alias: dbtype. See ROUTING in smtpsiftd(8).',
    parse(text) {
      const t = text.toLowerCase();
      if (t === 'nodb' || t === 'file' || t === 'lmdb') return t;
      if (t === 'dbm') return 'lmdb';
      throw new ValueError(`'${text}' is not allowed; use nodb, file or lmdb`);
    },
  }),
  routeDatabase: row<string | undefined>({
    name: 'RouteDatabase',
    aliases: ['dbname'],
    defaultText: '',
    arg: 'path',
    doc:
      'The route table of RouteType file (a flat file: "domain host:port[,host:port...]" per ' +
      'line) or lmdb (a database made from such a file by "smtpsift makedb"). Required with ' +
      'those types. Alias: dbname.',
    parse: nonEmpty,
  }),
  routeDefault: row<DestinationList | undefined>({
    name: 'RouteDefault',
    aliases: ['nodb_dest'],
    defaultText: '',
    arg: 'destinations',
    doc:
      'The destination list of RouteType nodb, where every recipient goes (AllowRelayFrom does ' +
      'not apply: the upstream decides what it accepts). A destination list is comma-separated ' +
      'host:port ([ipv6]:port; port 25 by default), tried in order. Alias: nodb_dest.',
    parse: parseDestinationList,
  }),
  allowRelayFrom: row<RelayAcl | undefined>({
    name: 'AllowRelayFrom',
    defaultText: '',
    arg: 'addresses',
    doc:
      'Comma-separated clients that may send to domains not in the route table (through ' +
      'SendRelayTo): IPv4 addresses with * for any octet (192.168.*.*), IP addresses, and ' +
      'CIDR blocks (10.0.0.0/8, 2001:db8::/32). Unset: no one; such recipients get "550 5.7.1 ' +
      'Relaying denied". * alone allows everyone, an open relay: smtpsift check warns about it.',
    parse: parseRelayAcl,
  }),
  sendRelayTo: row<DestinationList | undefined>({
    name: 'SendRelayTo',
    defaultText: '',
    arg: 'destinations',
    doc:
      'The destination list for mail from AllowRelayFrom clients to domains not in the route ' +
      'table (a smarthost MTA). Required when AllowRelayFrom is set.',
    parse: parseDestinationList,
  }),
  banner: row<string | undefined>({
    name: 'Banner',
    defaultText: '',
    bytes: true,
    arg: 'text',
    doc:
      'The text of the greeting in routed mode, after "220 ". Default: ServerName followed by ' +
      '"ESMTP". Routed mode only.',
    parse: nonEmpty,
  }),
  routeRetry: row<number>({
    name: 'RouteRetry',
    defaultText: '60',
    arg: 'seconds',
    doc:
      'In routed mode, how long a destination host that refused the connection, timed out or ' +
      'greeted with 4xx/5xx is skipped before it is tried again (unless every host of its list ' +
      'is skipped: then all are tried, in order). 1 or more.',
    parse: integer(1, MAX_SECONDS, `must be a number of seconds from 1 to ${MAX_SECONDS}`),
  }),
  logType: row<LogType>({
    name: 'LogType',
    aliases: ['logtype'],
    defaultText: 'nolog',
    arg: 'type',
    doc:
      'Accounting: one event per message when its fate is known (delivered, rejected, dropped, ' +
      'tempfail, aborted). nolog: none. filelog: a line in LogFile. syslog: a line to syslog ' +
      '(facility mail, severity info) on SyslogSocket. counters: delivered bytes and messages ' +
      'per recipient domain, destination and day in CounterDatabase, read with "smtpsift stats". ' +
      'syslog+counters and filelog+counters: both. Moxy\'s gdbmlog means counters and ' +
      'sys_and_gdbmlog syslog+counters. See ACCOUNTING in smtpsiftd(8).',
    parse(text) {
      try {
        return parseLogType(text);
      } catch (e) {
        throw new ValueError((e as Error).message);
      }
    },
  }),
  logFile: row<string | undefined>({
    name: 'LogFile',
    aliases: ['logfile_name'],
    defaultText: '',
    arg: 'path',
    doc:
      'The log file of LogType filelog and filelog+counters, one LogFormat line per message, ' +
      'opened for appending (created with mode 0640) and reopened on SIGHUP and SIGUSR1. ' +
      'With a counters LogType and no CounterDatabase, it names the counters database, as ' +
      'Moxy\'s gdbmlog did. Alias: logfile_name.',
    parse: nonEmpty,
  }),
  counterDatabase: row<string | undefined>({
    name: 'CounterDatabase',
    defaultText: '',
    arg: 'path',
    doc:
      'The lmdb database of the counters LogTypes. Several daemons may share one; updates are ' +
      'transactional and committed within one second and at shutdown.',
    parse: nonEmpty,
  }),
  syslogSocket: row<string>({
    name: 'SyslogSocket',
    defaultText: '/dev/log',
    arg: 'path',
    doc:
      'The unix datagram socket where syslog lines go: the accounting lines of LogType syslog, ' +
      'and the daemon\'s own log when it runs detached (without -d).',
    parse: nonEmpty,
  }),
  logFormat: row<string>({
    name: 'LogFormat',
    aliases: ['log_format'],
    defaultText: DEFAULT_LOG_FORMAT,
    arg: 'format',
    doc:
      'The accounting line, with the tokens %date %msize %sender %shost %dhost %rcpts %status ' +
      '%reply %id %helo %nrcpts %duration and %% (see ACCOUNTING in smtpsiftd(8)). Surrounding ' +
      'double quotes are removed. An unknown token is an error. Alias: log_format.',
    parse(text) {
      const format = unquote(text);
      const problem = validateLogFormat(format);
      if (problem !== undefined) throw new ValueError(problem);
      return format;
    },
  }),
  logDateFormat: row<string>({
    name: 'LogDateFormat',
    aliases: ['log_dateformat'],
    defaultText: DEFAULT_DATE_FORMAT,
    arg: 'format',
    doc:
      'The strftime(3) format of %date, in the daemon\'s local time. Surrounding double quotes ' +
      'are removed. Alias: log_dateformat.',
    parse(text) {
      const format = unquote(text);
      const problem = validateDateFormat(format);
      if (problem !== undefined) throw new ValueError(problem);
      return format;
    },
  }),
} as const;

export type OptionKey = keyof typeof SCHEMA;
type ValueOf<R> = R extends OptionRow<infer T> ? T : never;
export type Config = { readonly [K in OptionKey]: ValueOf<(typeof SCHEMA)[K]> } & {
  /** The file the configuration was read from. */
  readonly file: string;
  /** The line each option was set on, for messages about it. */
  readonly lines: ReadonlyMap<OptionKey, number>;
};

/** `FILE:LINE: Option: what is wrong`, for problems found after parsing. */
export function problemAt(config: Config, key: OptionKey, what: string): string {
  const line = config.lines.get(key);
  return `${config.file}${line === undefined ? '' : `:${line}`}: ${SCHEMA[key].name}: ${what}`;
}

export const OPTION_KEYS = Object.keys(SCHEMA) as OptionKey[];
