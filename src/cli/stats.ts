// smtpsift stats: the counters database (src/accounting/counters.ts) as a table, JSON or a
// chart; --reset DOMAIN forgets a domain. Reads are lmdb read transactions, so it runs
// while daemons write (issue 6, "Tools").

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CounterReader, type CounterKind } from '../accounting/counters.js';
import { formatChart, formatJson, formatTable, report } from '../accounting/report.js';
import { DEFAULT_CONFIG } from '../config/schema.js';

export class UsageError extends Error {}

/**
 * The counters database named by a config file: `CounterDatabase: PATH`, or Moxy's
 * `logfile_name` when the log type is gdbmlog or sys_and_gdbmlog (Moxy kept its gdbm
 * counters there). A line scan, not the full loader, so that a Moxy file without the
 * daemon's other options (OutAddress, ...) still names its database.
 */
export function counterDatabaseFromConfig(file: string): string {
  const values = new Map<string, string>();
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const m = /^\s*([A-Za-z_]+)\s*[:=]?\s*(.*?)\s*$/.exec(raw);
    if (m === null || raw.trim().startsWith('#')) continue;
    values.set((m[1] ?? '').toLowerCase(), (m[2] ?? '').replace(/^"(.*)"$/, '$1'));
  }
  const db = values.get('counterdatabase');
  if (db !== undefined && db !== '') return db;
  const type = (values.get('logtype') ?? '').toLowerCase();
  const moxy = values.get('logfile_name');
  if (/gdbmlog|counters/.test(type) && moxy !== undefined && moxy !== '') return moxy;
  throw new UsageError(`${file}: no CounterDatabase configured`);
}

export function parseDay(text: string, what: string): string {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
  const d = m === null ? undefined : new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  if (d === undefined || d.toISOString().slice(0, 10) !== text) throw new UsageError(`${what}: '${text}' is not a date YYYY-MM-DD`);
  return text;
}

export async function stats(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      file: { type: 'string', short: 'f' },
      db: { type: 'string' },
      domain: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      by: { type: 'string' },
      json: { type: 'boolean' },
      chart: { type: 'boolean' },
      reset: { type: 'string' },
    },
  });
  try {
    if (values.file !== undefined && values.db !== undefined) throw new UsageError('-f and --db exclude each other');
    const by = (values.by ?? 'domain') as CounterKind;
    if (!['domain', 'dest', 'day'].includes(by)) throw new UsageError(`--by: '${values.by}' is not domain, dest or day`);
    const since = values.since === undefined ? undefined : parseDay(values.since, '--since');
    const until = values.until === undefined ? undefined : parseDay(values.until, '--until');
    const path = values.db ?? counterDatabaseFromConfig(values.file ?? DEFAULT_CONFIG);

    if (values.reset !== undefined) {
      const w = new CounterReader(path, false);
      try {
        const n = w.reset(values.reset);
        process.stdout.write(`reset ${values.reset.toLowerCase()}: ${n} counter(s) removed\n`);
      } finally {
        await w.close();
      }
      return 0;
    }
    let reader: CounterReader;
    try {
      reader = new CounterReader(path, true);
    } catch (e) {
      process.stderr.write(`smtpsift: cannot open the counters database ${path}: ${(e as Error).message}\n`);
      return 1;
    }
    try {
      const q = { by, domain: values.domain, since, until };
      // The total is each message once (per-day counters), not the sum of the domain rows.
      const r = report(by, reader.query(q), reader.total(q));
      process.stdout.write(values.json ? formatJson(r) : values.chart ? formatChart(r) : formatTable(r));
    } finally {
      await reader.close();
    }
    return 0;
  } catch (e) {
    if (e instanceof UsageError || (e instanceof Error && e.message.startsWith('--domain'))) {
      process.stderr.write(`smtpsift: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
