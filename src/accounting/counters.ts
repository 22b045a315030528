// The counters store (issue 6, "Semantics"; Moxy's gdbmlog made exact): delivered bytes and
// messages per recipient domain, per destination, per UTC day, and per domain and per
// destination per day, in one lmdb database (spec/node-ecosystem.md §10).
//
// Exactness with several daemons on one database: every update is a read-modify-write
// inside one lmdb write transaction (transactionSync). lmdb serialises write transactions
// across processes with its lock file, so no increment is lost; the spec measured lost
// updates without the transaction. A batch is one transaction, so readers (stats) see all
// of a batch or none of it.
//
// Durability: events are batched in memory and committed at most one second after the first
// one of the batch, and at close(). lmdb-js's default overlappingSync flushes each commit to
// disk right after it, outside the write lock (its README, "overlappingSync"). So:
//   - a clean shutdown (close()) loses nothing;
//   - kill -9 or a crash of the daemon loses the events of its uncommitted batch (at most
//     about one second of delivered mail); committed batches are in the page cache and stay;
//   - a power cut or kernel crash can also lose the last commit or two not yet flushed;
//   - never part of a batch, never a count twice, never a corrupt database. The mail itself
//     was delivered; only its accounting is missing. The file log (if configured) still has
//     those messages, for a recount with `smtpsift logalyze`.
//
// Keys (lmdb orders them, so each kind is a range; values are "bytes messages" text, so
// mdb_dump shows them):
//   d:DOMAIN            per recipient domain
//   h:HOST:PORT         per destination
//   t:YYYY-MM-DD        per UTC day
//   dd:DOMAIN\tDAY      per domain per day
//   hd:HOST:PORT\tDAY   per destination per day

import { createRequire } from 'node:module';
import type { MessageEvent } from './event.js';
import { assertLmdb } from '../lmdb-file.js';

interface LmdbRange {
  key: string;
  value: string;
}

/** The part of lmdb 3.5.6 used here (its `export =` typings do not load under nodenext ESM). */
interface LmdbStore {
  get(key: string): string | undefined;
  putSync(key: string, value: string): boolean;
  removeSync(key: string): boolean;
  transactionSync<T>(fn: () => T): T;
  getRange(options: { start?: string; end?: string }): Iterable<LmdbRange>;
  close(): Promise<void>;
}

interface LmdbModule {
  open(options: { path: string; encoding: 'string'; readOnly?: boolean }): LmdbStore;
}

const lmdb = createRequire(import.meta.url)('lmdb') as LmdbModule;

export type CounterKind = 'domain' | 'dest' | 'day';

export interface Count {
  bytes: number;
  messages: number;
}

export interface CounterRow extends Count {
  readonly key: string;
}

const PREFIX = { domain: 'd:', dest: 'h:', day: 't:' } as const;
const DAILY = { domain: 'dd:', dest: 'hd:' } as const;

/** The UTC day of a date, YYYY-MM-DD. */
export function utcDay(date: Date): string {
  return date.toISOString().slice(0, 10);
}

function decode(value: string | undefined): Count {
  if (value === undefined) return { bytes: 0, messages: 0 };
  const [b, m] = value.split(' ');
  return { bytes: Number(b) || 0, messages: Number(m) || 0 };
}

function encode(c: Count): string {
  return `${c.bytes} ${c.messages}`;
}

/** Every key a delivered message adds to: once per distinct domain, destination and day. */
export function counterKeys(event: MessageEvent): string[] {
  const day = utcDay(event.date);
  const keys = new Set<string>([PREFIX.day + day]);
  for (const d of event.domains) {
    keys.add(PREFIX.domain + d);
    keys.add(`${DAILY.domain}${d}\t${day}`);
  }
  if (event.destination !== '') {
    keys.add(PREFIX.dest + event.destination);
    keys.add(`${DAILY.dest}${event.destination}\t${day}`);
  }
  return [...keys];
}

/** The end of a prefix range: the prefix with its last character incremented. */
function rangeEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

export interface CounterWriterOptions {
  /** How long a batch may wait before its commit, ms (default 1000: "durable within one second"). */
  readonly commitMs?: number;
  /** Where a failed commit is reported (the daemon's logger); the batch is kept and retried. */
  readonly onError?: (message: string) => void;
}

/** The daemon's side: record() is cheap and never throws; commits happen in the background. */
export class CounterWriter {
  private readonly db: LmdbStore;
  private pending = new Map<string, Count>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private failing = false;
  private readonly commitMs: number;
  private readonly onError: (message: string) => void;

  constructor(
    readonly path: string,
    options: CounterWriterOptions = {},
  ) {
    assertLmdb(path);
    this.db = lmdb.open({ path, encoding: 'string' });
    this.commitMs = options.commitMs ?? 1000;
    this.onError = options.onError ?? (() => undefined);
  }

  /** Adds a message event; only delivered messages count (rejected, dropped, tempfail, aborted never). */
  record(event: MessageEvent): void {
    if (event.status !== 'delivered' || this.closed) return;
    for (const key of counterKeys(event)) {
      const c = this.pending.get(key) ?? { bytes: 0, messages: 0 };
      c.bytes += event.size;
      c.messages += 1;
      this.pending.set(key, c);
    }
    // The timer is started by the first event of a batch, so no event waits more than commitMs.
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, this.commitMs);
  }

  /** Commits the batch now, in one write transaction. Returns whether it was committed. */
  flush(): boolean {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.size === 0) return true;
    const batch = this.pending;
    try {
      this.db.transactionSync(() => {
        for (const [key, add] of batch) {
          const c = decode(this.db.get(key));
          this.db.putSync(key, encode({ bytes: c.bytes + add.bytes, messages: c.messages + add.messages }));
        }
      });
      this.pending = new Map();
      if (this.failing) this.onError(`counters database ${this.path}: commits work again`);
      this.failing = false;
      return true;
    } catch (e) {
      // Kept for the next attempt (a full disk may clear); reported once per failing spell.
      if (!this.failing) this.onError(`counters database ${this.path}: commit failed, retrying: ${(e as Error).message}`);
      this.failing = true;
      if (!this.closed) this.timer = setTimeout(() => this.flush(), this.commitMs);
      return false;
    }
  }

  /** Commits what is pending and closes the database (shutdown). */
  async close(): Promise<void> {
    this.flush();
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.db.close();
  }
}

export interface Query {
  readonly by: CounterKind;
  /** Only this recipient domain (with by 'domain' or 'day'). */
  readonly domain?: string;
  /** YYYY-MM-DD, UTC, inclusive. */
  readonly since?: string;
  readonly until?: string;
}

/**
 * Read access for `smtpsift stats`, also while daemons write: lmdb readers see the last
 * committed state (MVCC) without locking writers out. `readOnly` opens the database without
 * write access (for stats); reset() needs it writable.
 */
export class CounterReader {
  private readonly db: LmdbStore;

  constructor(
    readonly path: string,
    readOnly = true,
  ) {
    assertLmdb(path);
    this.db = lmdb.open({ path, encoding: 'string', readOnly });
  }

  private range(prefix: string): Iterable<LmdbRange> {
    return this.db.getRange({ start: prefix, end: rangeEnd(prefix) });
  }

  /** Rows for a query, unsorted. A date range uses the per-day keys. */
  query(q: Query): CounterRow[] {
    const dated = q.since !== undefined || q.until !== undefined;
    const inRange = (day: string): boolean => (q.since === undefined || day >= q.since) && (q.until === undefined || day <= q.until);
    const domain = q.domain?.toLowerCase();
    const rows = new Map<string, Count>();
    const add = (key: string, c: Count): void => {
      const r = rows.get(key) ?? { bytes: 0, messages: 0 };
      r.bytes += c.bytes;
      r.messages += c.messages;
      rows.set(key, r);
    };
    if (q.by === 'day') {
      if (domain === undefined) {
        for (const { key, value } of this.range(PREFIX.day)) {
          const day = key.slice(PREFIX.day.length);
          if (inRange(day)) add(day, decode(value));
        }
      } else {
        for (const { key, value } of this.range(`${DAILY.domain}${domain}\t`)) {
          const day = key.slice(key.indexOf('\t') + 1);
          if (inRange(day)) add(day, decode(value));
        }
      }
    } else if (q.by === 'dest' && domain !== undefined) {
      throw new Error('--domain cannot be combined with --by dest: destinations are not counted per domain');
    } else if (!dated) {
      const prefix = PREFIX[q.by];
      if (domain !== undefined) {
        const v = this.db.get(prefix + domain);
        if (v !== undefined) add(domain, decode(v));
      } else {
        for (const { key, value } of this.range(prefix)) add(key.slice(prefix.length), decode(value));
      }
    } else {
      const prefix = domain !== undefined ? `${DAILY.domain}${domain}\t` : DAILY[q.by];
      for (const { key, value } of this.range(prefix)) {
        const tab = key.indexOf('\t');
        if (inRange(key.slice(tab + 1))) add(key.slice(key.indexOf(':') + 1, tab), decode(value));
      }
    }
    return [...rows].map(([key, c]) => ({ key, ...c }));
  }

  /**
   * The messages and bytes a query's rows are about, each message once: from the per-day
   * counters, which count a message once whatever its domains. The rows of --by domain
   * count a message to two domains in both, so they may add up to more than this.
   */
  total(q: Query): Count {
    const t = { bytes: 0, messages: 0 };
    for (const r of this.query({ by: 'day', domain: q.domain, since: q.since, until: q.until })) {
      t.bytes += r.bytes;
      t.messages += r.messages;
    }
    return t;
  }

  /** Forgets a domain: its total and its per-day counts (days and destinations keep theirs). */
  reset(domain: string): number {
    const d = domain.toLowerCase();
    return this.db.transactionSync(() => {
      let removed = 0;
      if (this.db.removeSync(PREFIX.domain + d)) removed++;
      for (const { key } of [...this.range(`${DAILY.domain}${d}\t`)]) if (this.db.removeSync(key)) removed++;
      return removed;
    });
  }

  close(): Promise<void> {
    return this.db.close();
  }
}
