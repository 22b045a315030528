// The routed (Moxy) destination strategy: which destination list a recipient's domain
// names, whether this client may relay, and dialling a list with failover.
//
// Sources: nodb (every recipient to RouteDefault), file (the flat file in memory, replaced
// whole on SIGHUP or when it changes; a reload with errors keeps the old table), lmdb (read
// on every lookup, so `smtpsift makedb` updates apply at once; LMDB's MVCC means a lookup
// sees either the old table or the new one, never a half-written one).

import { stat, statSync, type Stats } from 'node:fs';
import { openLmdb, type LmdbDatabase } from './lmdb.js';
import { problemAt, type Config, type RouteType } from '../config/schema.js';
import { ConfigError } from '../config/errors.js';
import { SiftError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { isSuccess, summary, type Reply } from '../smtp/reply.js';
import { Upstream } from '../upstream/upstream.js';
import { formatHost, HostPool, parseDestinationList, type DestinationList, type HostPort } from './destinations.js';
import { lookupDomain, MapSource, readRouteFile, type RouteSource } from './table.js';


/** Why a recipient has no destination. */
export type Routing =
  | { readonly kind: 'route'; readonly list: DestinationList; readonly via: 'table' | 'default' | 'relay' }
  | { readonly kind: 'denied' };

export interface Dialled {
  readonly upstream: Upstream;
  readonly host: HostPort;
  readonly greeting: Reply;
}

/** lmdb values are the destination list text (encoding 'string', readable with mdb_dump). */
class LmdbSource implements RouteSource {
  private readonly parsed = new Map<string, DestinationList>();
  constructor(
    private readonly db: LmdbDatabase,
    private readonly log: Logger | undefined,
  ) {}
  get(key: string): DestinationList | undefined {
    const text = this.db.get(key);
    if (text === undefined) return undefined;
    let list = this.parsed.get(text);
    if (list === undefined) {
      try {
        list = parseDestinationList(text);
      } catch (e) {
        this.log?.error(`route database: entry '${key}': ${(e as Error).message}`);
        return undefined;
      }
      if (this.parsed.size > 10000) this.parsed.clear(); // a cache, bounded
      this.parsed.set(text, list);
    }
    return list;
  }
  close(): Promise<void> {
    return this.db.close();
  }
}

export function openRouteDatabase(path: string, readOnly: boolean): LmdbDatabase {
  try {
    return openLmdb(path, readOnly);
  } catch (e) {
    throw new ConfigError([`${path}: cannot open the route database: ${(e as Error).message}`]);
  }
}

export class Router {
  readonly pool: HostPool;
  private source: RouteSource | undefined;
  private readonly defaultList: DestinationList | undefined;
  private watcher: NodeJS.Timeout | undefined;
  /** The route file as it was when last read: a watch compares against this. */
  private loaded: Stats | undefined;
  private closed = false;

  /** Throws ConfigError (`FILE:LINE: ...`) when the table cannot be loaded. */
  constructor(
    readonly config: Config,
    private log: Logger | undefined,
  ) {
    const type = config.routeType;
    if (type === undefined) throw new Error('Router without RouteType');
    this.pool = new HostPool(config.routeRetry * 1000);
    this.defaultList = config.routeDefault;
    const db = config.routeDatabase;
    if (type === 'file' && db !== undefined) {
      this.loaded = statOrUndefined(db);
      this.source = new MapSource(readRouteFile(db));
    }
    if (type === 'lmdb' && db !== undefined) this.source = new LmdbSource(openRouteDatabase(db, true), log);
  }

  get type(): RouteType {
    return this.config.routeType ?? 'nodb';
  }

  /** The logger, once the daemon has one (the table is loaded before, for exit status 2). */
  setLogger(log: Logger): void {
    this.log = log;
  }

  /** Where a recipient at `domain` goes, for a client at `clientIp`. */
  route(domain: string, clientIp: string | undefined): Routing {
    if (this.type === 'nodb') {
      // Moxy's nodb: everything to one place; the upstream decides what it accepts.
      return this.defaultList ? { kind: 'route', list: this.defaultList, via: 'default' } : { kind: 'denied' };
    }
    const list = this.source ? lookupDomain(this.source, domain) : undefined;
    if (list !== undefined) return { kind: 'route', list, via: 'table' };
    const relay = this.config.sendRelayTo;
    if (relay !== undefined && this.config.allowRelayFrom?.allows(clientIp) === true) return { kind: 'route', list: relay, via: 'relay' };
    return { kind: 'denied' };
  }

  /**
   * Dials the list's hosts in order until one greets with 2xx. A host that refuses the
   * connection, does not answer within TimeOut, or greets with 4xx/5xx is marked dead for
   * RouteRetry seconds and the next one is tried. None left: a SiftError ROUTE_UNAVAILABLE
   * (451 4.4.1 for this recipient; the session goes on).
   */
  async dial(list: DestinationList, timeoutMs: number, log: Logger): Promise<Dialled> {
    const why: string[] = [];
    for (const host of this.pool.order(list)) {
      let up: Upstream | undefined;
      try {
        up = await Upstream.connect(host, timeoutMs);
        const greeting = await up.reply();
        if (isSuccess(greeting)) {
          this.pool.markAlive(host);
          return { upstream: up, host, greeting };
        }
        why.push(`${formatHost(host)}: greeted with ${summary(greeting)}`);
        await up.quit();
      } catch (e) {
        if (!(e instanceof SiftError)) throw e;
        up?.abort();
        why.push(`${formatHost(host)}: ${e.message}`);
      }
      this.pool.markDead(host);
      log.warn(`destination ${formatHost(host)} failed (${why.at(-1) ?? ''}); marked dead for ${this.config.routeRetry} s`);
    }
    throw new SiftError('ROUTE_UNAVAILABLE', `no host of ${list.key} is available: ${why.join('; ')}`);
  }

  /**
   * Re-reads the flat file (SIGHUP, or the file changed). On any error the old table stays
   * whole and every problem is logged as `FILE:LINE: why`.
   */
  reload(reason: string): void {
    const file = this.config.routeDatabase;
    if (this.type !== 'file' || file === undefined || this.closed) {
      if (this.type === 'lmdb') this.log?.notice(`${reason}: the lmdb route database is read live; nothing to reload`);
      return;
    }
    try {
      // Stat before reading: a change during the read is then seen again by the watch.
      this.loaded = statOrUndefined(file);
      const next = new MapSource(readRouteFile(file));
      this.source = next;
      this.log?.notice(`${reason}: reloaded ${file} (${next.size} entries)`);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      for (const p of e.problems) this.log?.error(p);
      this.log?.error(`${reason}: ${file} has errors; keeping the previous route table`);
    }
  }

  /**
   * Reloads the flat file when its modification time, size or inode differ from the file
   * last read. Polled (not inotify), so editors that replace the file by a rename are seen;
   * compared with the loaded file rather than the previous poll, so a change made just
   * before the first poll is not missed.
   */
  watch(intervalMs = 500): void {
    const file = this.config.routeDatabase;
    if (this.type !== 'file' || file === undefined || this.watcher !== undefined) return;
    let busy = false;
    this.watcher = setInterval(() => {
      if (busy) return;
      busy = true;
      stat(file, (err, cur) => {
        busy = false;
        if (err !== null || this.closed) return;
        const was = this.loaded;
        if (was === undefined || cur.mtimeMs !== was.mtimeMs || cur.size !== was.size || cur.ino !== was.ino) this.reload(`${file} changed`);
      });
    }, intervalMs);
    this.watcher.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.watcher !== undefined) clearInterval(this.watcher);
    if (this.source instanceof LmdbSource) await this.source.close();
  }
}

function statOrUndefined(file: string): Stats | undefined {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}

/**
 * What `smtpsift check` warns about in the relay settings, as `FILE:LINE: Option: why`:
 * each AllowRelayFrom entry that alone matches a whole address family (an open relay for
 * those clients: `*`, `*.*.*.*`, `0.0.0.0/0`, `::/0`), and AllowRelayFrom or SendRelayTo
 * with RouteType nodb, where they do nothing (every recipient goes to RouteDefault).
 */
export function relayWarnings(config: Config): string[] {
  if (config.routeType === 'nodb') {
    return (['allowRelayFrom', 'sendRelayTo'] as const)
      .filter((key) => config[key] !== undefined)
      .map((key) => problemAt(config, key, 'has no effect with RouteType nodb: every recipient goes to RouteDefault, and its upstream decides what it accepts'));
  }
  return (config.allowRelayFrom?.open ?? []).map(({ item, matches }) =>
    problemAt(
      config,
      'allowRelayFrom',
      item === '*' ? '* lets every client relay to any domain: an open relay' : `'${item}' matches ${matches}: each such client may relay to any domain, an open relay`,
    ),
  );
}
