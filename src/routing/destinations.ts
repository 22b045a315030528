// Destination lists (Moxy's `host:port,host:port`): the hosts a domain's mail may go to,
// tried in order. A host that fails is marked dead for RouteRetry seconds (Haraka's
// host_pool idea), unless every host of the list is dead: then all are tried again, in order.

import { isIP } from 'node:net';
import { ValueError } from '../config/errors.js';
import { parseOutAddress } from '../config/addresses.js';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface DestinationList {
  readonly hosts: readonly HostPort[];
  /** The canonical text, `host:port,...`: two lists are the same route when it is equal. */
  readonly key: string;
}

export function formatHost(h: HostPort): string {
  return isIP(h.host) === 6 ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`;
}

/** `host[:port][,host[:port]...]`, port 25 by default; `[v6]:port` for IPv6. */
export function parseDestinationList(text: string): DestinationList {
  const parts = text.split(',').map((p) => p.trim());
  if (text.trim() === '' || parts.some((p) => p === '')) {
    throw new ValueError(`'${text}' is not a destination list; use host:port[,host:port...]`);
  }
  const hosts = parts.map((p): HostPort => {
    let a;
    try {
      a = parseOutAddress(p);
    } catch {
      throw new ValueError(`'${p}' is not a destination; use host:port, ip:port or [ipv6]:port`);
    }
    if (a.kind !== 'tcp') throw new ValueError(`'${p}' is not a destination; use host:port, ip:port or [ipv6]:port`);
    return { host: a.host, port: a.port };
  });
  return { hosts, key: hosts.map(formatHost).join(',') };
}

/** Dead marks, shared by every session of the daemon. `now` is injectable for tests. */
export class HostPool {
  private readonly deadUntil = new Map<string, number>();

  constructor(
    private readonly retryMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  markDead(h: HostPort): void {
    this.deadUntil.set(formatHost(h), this.now() + this.retryMs);
  }

  markAlive(h: HostPort): void {
    this.deadUntil.delete(formatHost(h));
  }

  isDead(h: HostPort): boolean {
    const until = this.deadUntil.get(formatHost(h));
    if (until === undefined) return false;
    if (until > this.now()) return true;
    this.deadUntil.delete(formatHost(h));
    return false;
  }

  /** The hosts to try, in order: the live ones, or all of them when every one is dead. */
  order(list: DestinationList): readonly HostPort[] {
    const live = list.hosts.filter((h) => !this.isDead(h));
    return live.length > 0 ? live : list.hosts;
  }
}
