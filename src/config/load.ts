// proxsmtpd.conf syntax (spec §2): `Name: value` lines, names case-insensitive, split at
// the first colon, name and value trimmed, `#` lines and blank lines ignored, the last
// value wins. Every problem is reported as `FILE:LINE: ...`; all of them, not just the first.

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

/** Parses configuration text; `file` only names it in messages. */
export function parseConfig(text: string, file: string): Config {
  const values = defaults();
  const setAt = new Map<OptionKey, number>();
  /** Options given on some line, valid or not: a bad OutAddress is not also "missing". */
  const given = new Set<OptionKey>();
  const problems: string[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const lineNo = i + 1;
    const line = raw.replace(/\r$/, '').trimStart();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon < 0) {
      problems.push(`${file}:${lineNo}: invalid line '${line}': expected 'Name: value'`);
      return;
    }
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    const key = BY_NAME.get(name.toLowerCase());
    if (key === undefined) {
      problems.push(`${file}:${lineNo}: unknown option '${name}'; see smtpsiftd.conf(5) for the options`);
      return;
    }
    given.add(key);
    const r = SCHEMA[key] as OptionRow<unknown>;
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

/** The text each Config was parsed from (worker processes parse it again). */
const SOURCES = new WeakMap<Config, string>();

/** The configuration text `config` was parsed from, for parseConfig in a worker process. */
export function configSource(config: Config): string | undefined {
  return SOURCES.get(config);
}

export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String(e);
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
 * an error, and the output must load again.
 */
export function formatConfig(config: Config): string {
  const line = (key: OptionKey): string =>
    config[key] === undefined
      ? `#${SCHEMA[key].name}:`
      : `${SCHEMA[key].name}: ${key === 'workers' && config.workers === 0 ? 'auto' : show(config[key])}`;
  const routed = config.routeType !== undefined;
  const keys = OPTION_KEYS.filter((k) => routed || (k !== 'routeType' && !ROUTED_ONLY.includes(k)));
  return keys.map(line).join('\n') + '\n';
}
