// proxsmtpd.conf syntax (spec §2): `Name: value` lines, names case-insensitive, split at
// the first colon, name and value trimmed, `#` lines and blank lines ignored, the last
// value wins. Every problem is reported as `FILE:LINE: ...`; all of them, not just the first.
//
// The file is bytes, not text: proxsmtpd never decoded it, and a value such as Header,
// FilterReject or FilterCommand reached its destination byte for byte, in UTF-8, Latin-1 or
// anything else. So the file is read as latin1 (one char per byte, nothing lost) and each
// option says whether its value stays bytes or is decoded as UTF-8 (OptionRow.bytes).

import { isUtf8 } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { formatAddress, type ListenAddress, type OutAddress } from './addresses.js';
import { ConfigError, ValueError } from './errors.js';
import { accountingProblems, type LogType } from '../accounting/logtype.js';
import { notLmdb } from '../lmdb-file.js';
import { OPTION_KEYS, SCHEMA, type Config, type OptionKey, type OptionRow } from './schema.js';

const BY_NAME = new Map<string, OptionKey>(
  OPTION_KEYS.flatMap((k) => {
    const r = SCHEMA[k] as OptionRow<unknown>;
    return [r.name, ...(r.aliases ?? [])].map((n): [string, OptionKey] => [n.toLowerCase(), k]);
  }),
);

/** Options of routed mode only: set without RouteType, they are a mistake worth saying. */
const ROUTED_ONLY: readonly OptionKey[] = ['routeDatabase', 'routeDefault', 'allowRelayFrom', 'sendRelayTo', 'banner', 'routeRetry'];

function defaults(): Record<OptionKey, unknown> {
  const out = {} as Record<OptionKey, unknown>;
  for (const key of OPTION_KEYS) {
    const r = SCHEMA[key] as OptionRow<unknown>;
    out[key] = r.defaultText === '' ? undefined : r.parse(r.defaultText);
  }
  return out;
}

/** The file's bytes as a string, one char per byte (see the top of this file). */
export const asBytes = (buf: Buffer): string => buf.toString('latin1');

/**
 * Bytes (latin1) as text, for a message: what is not UTF-8 shows as U+FFFD, and a control
 * character as '?', so that a garbled file cannot write escape sequences to a terminal.
 */
const shown = (bytes: string): string => Buffer.from(bytes, 'latin1').toString('utf8').replace(/[\x00-\x1f\x7f]/g, '?');

/**
 * White space as C's isspace() sees it in the C locale, which proxsmtpd trimmed: not the
 * latin1 chars String.trim() also removes (0xA0 is a byte of many UTF-8 characters).
 */
const trimStart = (t: string): string => t.replace(/^[ \t\n\v\f\r]+/, '');
const trim = (t: string): string => trimStart(t).replace(/[ \t\n\v\f\r]+$/, '');

/** A UTF-8 byte order mark, as latin1: an editor's, not part of the first line. */
const BOM = '\xef\xbb\xbf';

/**
 * Parses configuration bytes, given as latin1 (asBytes: one char per byte); `file` only
 * names it in messages. ASCII text is the same either way.
 */
export function parseConfig(text: string, file: string): Config {
  const values = defaults();
  const setAt = new Map<OptionKey, number>();
  /** Options given on some line, valid or not: a bad OutAddress is not also "missing". */
  const given = new Set<OptionKey>();
  const problems: string[] = [];
  const lines = (text.startsWith(BOM) ? text.slice(BOM.length) : text).split('\n');
  lines.forEach((raw, i) => {
    const lineNo = i + 1;
    const line = trimStart(raw.replace(/\r$/, ''));
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon < 0) {
      problems.push(`${file}:${lineNo}: invalid line '${shown(line)}': expected 'Name: value'`);
      return;
    }
    const name = trim(line.slice(0, colon));
    const bytes = trim(line.slice(colon + 1));
    const key = BY_NAME.get(name.toLowerCase());
    if (key === undefined) {
      problems.push(`${file}:${lineNo}: unknown option '${shown(name)}'; see smtpsiftd.conf(5) for the options`);
      return;
    }
    given.add(key);
    const r = SCHEMA[key] as OptionRow<unknown>;
    // A path or a name is opened or looked up through Node, which takes UTF-8: other bytes
    // would name a different file, so they are refused rather than changed.
    if (r.bytes !== true && !isUtf8(Buffer.from(bytes, 'latin1'))) {
      problems.push(`${file}:${lineNo}: ${r.name}: '${shown(bytes)}' is not valid UTF-8; only the values of Header, FilterCommand, FilterReject and Banner may be in another encoding`);
      return;
    }
    // C strings end at a NUL: the rest of the value would be dropped without a word.
    if (bytes.includes('\0')) {
      problems.push(`${file}:${lineNo}: ${r.name}: a NUL byte in the value`);
      return;
    }
    const value = r.bytes === true ? bytes : Buffer.from(bytes, 'latin1').toString('utf8');
    try {
      values[key] = r.parse(value);
      setAt.set(key, lineNo);
    } catch (e) {
      if (!(e instanceof ValueError)) throw e;
      problems.push(`${file}:${lineNo}: ${r.name}: ${e.message}`);
    }
  });
  for (const [key, lineNo] of setAt) {
    const r = SCHEMA[key] as OptionRow<unknown>;
    const why = r.notBuilt?.(values[key]);
    if (why !== undefined) problems.push(`${file}:${lineNo}: ${r.name}: ${why}`);
  }
  // Reported with the other problems, so that one run shows everything to fix. A
  // transparent proxy takes each connection's original destination instead.
  const transparent = values.transparentProxy !== 'off';
  const routed = values.routeType !== undefined || given.has('routeType');
  const at = (key: OptionKey): string => {
    const line = setAt.get(key);
    return `${file}${line === undefined ? '' : `:${line}`}: ${SCHEMA[key].name}`;
  };
  if (routed) {
    // Routed mode picks the upstream per recipient (issue 5): a fixed or transparent one too
    // would leave it ambiguous which wins, so the combination is refused, not guessed.
    if (given.has('outAddress')) problems.push(`${at('outAddress')}: cannot be combined with RouteType (routed mode chooses the upstream per recipient domain)`);
    if (transparent) problems.push(`${at('transparentProxy')}: cannot be combined with RouteType`);
    const type = values.routeType;
    if ((type === 'file' || type === 'lmdb') && !given.has('routeDatabase')) {
      problems.push(`${at('routeType')}: ${type} needs 'RouteDatabase: path' (the route table)`);
    }
    if (type === 'nodb' && !given.has('routeDefault')) problems.push(`${at('routeType')}: nodb needs 'RouteDefault: host:port[,host:port...]'`);
    if (type !== 'nodb' && given.has('allowRelayFrom') && !given.has('sendRelayTo')) {
      problems.push(`${at('allowRelayFrom')}: needs 'SendRelayTo: host:port[,...]', where relayed mail goes`);
    }
  } else {
    for (const key of ROUTED_ONLY) if (given.has(key)) problems.push(`${at(key)}: only used in routed mode; set RouteType too`);
  }
  if (values.outAddress === undefined && !given.has('outAddress') && !transparent && !routed) {
    problems.push(`${file}: no OutAddress specified; set 'OutAddress: host:port' to the upstream SMTP server`);
  }
  const listen = values.listen as ListenAddress | undefined;
  if (transparent && listen?.kind === 'unix') {
    const line = setAt.get('transparentProxy');
    problems.push(`${file}${line === undefined ? '' : `:${line}`}: TransparentProxy: needs a TCP Listen address, not a unix socket`);
  }
  // Accounting (issue 6): the files a LogType needs, at the LogType line.
  if (values.logType !== undefined) {
    for (const p of accountingProblems({
      logType: values.logType as LogType,
      logFile: values.logFile as string | undefined,
      counterDatabase: values.counterDatabase as string | undefined,
    })) {
      problems.push(`${at('logType')}: ${p.replace(/^LogType /, '')}`);
    }
    // The counters database, if any (see accountingProblems): lmdb must never map a file
    // that is not one.
    const logType = values.logType as LogType;
    const key = values.counterDatabase !== undefined ? 'counterDatabase' : logType.startsWith('filelog') ? undefined : 'logFile';
    const db = key === undefined ? undefined : (values[key] as string | undefined);
    const why = logType.endsWith('counters') && db !== undefined ? notLmdb(db) : undefined;
    if (key !== undefined && why !== undefined) problems.push(`${at(key)}: ${db}: ${why}`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const config = Object.freeze({ ...values, file, lines: setAt }) as Config;
  SOURCES.set(config, text);
  return config;
}

/** The bytes (latin1) each Config was parsed from (worker processes parse them again). */
const SOURCES = new WeakMap<Config, string>();

/** The configuration bytes (latin1) `config` was parsed from, for parseConfig in a worker process. */
export function configSource(config: Config): string | undefined {
  return SOURCES.get(config);
}

export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = asBytes(readFileSync(file));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (e as Error).message;
    throw new ConfigError([`${file}: cannot read the configuration file: ${why}`]);
  }
  return parseConfig(text, file);
}

function show(value: unknown): string {
  if (value === undefined) return '';
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  if (typeof value === 'object' && value !== null && 'hosts' in value && 'key' in value) return String(value.key);
  if (typeof value === 'object' && value !== null && 'allows' in value && 'text' in value) return String(value.text);
  if (typeof value === 'object' && value !== null && 'kind' in value) {
    return formatAddress(value as ListenAddress | OutAddress);
  }
  return String(value);
}

/**
 * The effective configuration in the file's own syntax, every option listed; an option
 * that is unset is a comment, so the output is itself a valid configuration. The options
 * of routed mode are listed only in routed mode (RouteType set): elsewhere they would be
 * an error, and the output must load again. Bytes, not text: a byte-valued option (Header,
 * ...) is written as the file had it, whatever its encoding; the rest is UTF-8.
 */
export function formatConfig(config: Config): Buffer {
  const line = (key: OptionKey): Buffer => {
    const r = SCHEMA[key] as OptionRow<unknown>;
    if (config[key] === undefined) return Buffer.from(`#${r.name}:\n`);
    const value = key === 'workers' && config.workers === 0 ? 'auto' : show(config[key]);
    return Buffer.concat([Buffer.from(`${r.name}: `), Buffer.from(value, r.bytes === true ? 'latin1' : 'utf8'), Buffer.from('\n')]);
  };
  const routed = config.routeType !== undefined;
  const keys = OPTION_KEYS.filter((k) => routed || (k !== 'routeType' && !ROUTED_ONLY.includes(k)));
  return Buffer.concat(keys.map(line));
}
