// smtpsift logalyze (Moxy's moxylogalyze): totals of messages and bytes per sender, client
// IP or destination from log files written with a LogFormat. The parser is built from the
// format itself (src/accounting/format.ts), so any LogFormat with %msize can be read back.
// Streaming, line by line: memory grows with the number of distinct keys, never with the
// size of the log (issue 6, "Tools").
//
// What counts is what the counters count: delivered messages. With %status in the format,
// only `delivered` lines count unless --status names another status (or `all`); without it
// every line counts, as smtpsiftd writes lines of delivered messages only in such a format
// (src/accounting/accounting.ts record()).

import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { parseArgs } from 'node:util';
import { STATUSES, type MessageStatus } from '../accounting/event.js';
import { DEFAULT_LOG_FORMAT, FormatError, logLineParser, type LineParser, type Token } from '../accounting/format.js';
import { formatChart, formatJson, formatTable, report, type ReportRow } from '../accounting/report.js';
import { UsageError } from './stats.js';

const LIST_BY: Record<string, Token> = { from: 'sender', ip: 'shost', dest: 'dhost' };

/** LogFormat (or Moxy's log_format) from a config file, by a line scan until the schema row lands. */
export function logFormatFromConfig(file: string): string {
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const m = /^\s*(LogFormat|log_format)\s*[:=]?\s*(.*?)\s*$/i.exec(raw);
    if (m !== null) return (m[2] ?? '').replace(/^"(.*)"$/, '$1');
  }
  return DEFAULT_LOG_FORMAT;
}

function regex(text: string | undefined, what: string): RegExp | undefined {
  if (text === undefined) return undefined;
  try {
    return new RegExp(text);
  } catch (e) {
    throw new UsageError(`${what}: ${(e as Error).message}`);
  }
}

function input(file: string): Readable {
  const raw: Readable = file === '-' ? process.stdin : createReadStream(file);
  return file.endsWith('.gz') ? raw.pipe(createGunzip()) : raw;
}

export async function logalyze(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      listby: { type: 'string' },
      from: { type: 'string' },
      ip: { type: 'string' },
      dest: { type: 'string' },
      file: { type: 'string', short: 'f' },
      format: { type: 'string' },
      status: { type: 'string' },
      json: { type: 'boolean' },
      chart: { type: 'boolean' },
    },
  });
  let parser: LineParser;
  let key: Token;
  const filters: [Token, RegExp][] = [];
  let status: string | undefined;
  try {
    if (values.file !== undefined && values.format !== undefined) throw new UsageError('-f and --format exclude each other');
    if (positionals.length === 0) throw new UsageError('no log file given (use - for standard input)');
    const listBy = values.listby ?? 'dest';
    const k = LIST_BY[listBy];
    if (k === undefined) throw new UsageError(`--listby: '${listBy}' is not from, ip or dest`);
    key = k;
    const format = values.format ?? (values.file !== undefined ? logFormatFromConfig(values.file) : DEFAULT_LOG_FORMAT);
    try {
      parser = logLineParser(format);
    } catch (e) {
      if (e instanceof FormatError) throw new UsageError(`LogFormat: ${e.message}`);
      throw e;
    }
    const need = (t: Token, why: string): void => {
      if (!parser.tokens.has(t)) throw new UsageError(`${why} needs %${t} in the LogFormat`);
    };
    need('msize', 'logalyze');
    need(key, `--listby ${listBy}`);
    for (const [opt, t] of [['from', 'sender'], ['ip', 'shost'], ['dest', 'dhost']] as const) {
      const re = regex(values[opt], `--${opt}`);
      if (re !== undefined) {
        need(t, `--${opt}`);
        filters.push([t, re]);
      }
    }
    if (values.status !== undefined && values.status !== 'all') {
      if (!STATUSES.includes(values.status as MessageStatus)) throw new UsageError(`--status: '${values.status}' is not one of ${STATUSES.join(', ')} or all`);
      if (values.status !== 'delivered') need('status', `--status ${values.status}`);
    }
    // Lines to count: those of this status; undefined for every line.
    status = !parser.tokens.has('status') || values.status === 'all' ? undefined : (values.status ?? 'delivered');
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`smtpsift: ${e.message}\n`);
      return 2;
    }
    throw e;
  }

  const totals = new Map<string, { bytes: number; messages: number }>();
  let unparsed = 0;
  let failed = false;
  for (const file of positionals) {
    try {
      const lines = createInterface({ input: input(file), crlfDelay: Infinity });
      for await (const line of lines) {
        if (line === '') continue;
        const f = parser.parse(line);
        if (f === undefined) {
          unparsed++;
          continue;
        }
        if (status !== undefined && f.status !== status) continue;
        if (!filters.every(([t, re]) => re.test(f[t] ?? ''))) continue;
        const raw = f[key] ?? '';
        const k = key === 'sender' && raw === '' ? '<>' : raw;
        const t = totals.get(k) ?? { bytes: 0, messages: 0 };
        t.bytes += Number(f.msize ?? 0);
        t.messages += 1;
        totals.set(k, t);
      }
    } catch (e) {
      process.stderr.write(`smtpsift: ${file}: ${(e as Error).message}\n`);
      failed = true;
    }
  }
  if (unparsed > 0) process.stderr.write(`smtpsift: ${unparsed} line(s) did not match the LogFormat and were skipped\n`);
  const rows: ReportRow[] = [...totals].map(([k, t]) => ({ key: k, ...t }));
  const r = report(Object.keys(LIST_BY).find((n) => LIST_BY[n] === key) ?? 'dest', rows);
  process.stdout.write(values.json ? formatJson(r) : values.chart ? formatChart(r) : formatTable(r));
  return failed ? 1 : 0;
}
