// Address forms accepted by Listen and OutAddress (proxsmtpd.conf(5), extended with
// [ipv6]:port, bare IPv6 addresses and, for OutAddress, unix sockets). Both take host names.

import { isIP } from 'node:net';
import { ValueError } from './errors.js';
import { native } from '../native.js';

export type ListenAddress =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

export type OutAddress =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string }
  /** A port alone: relay each connection back to the client's own IP. */
  | { readonly kind: 'loopback'; readonly port: number };

const DEFAULT_LISTEN_PORT = 10025;
const SMTP_PORT = 25;

/** A TCP port; 0 only where `allowZero` (Listen: any free port, logged at start-up). */
function port(text: string, allowZero = false): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= 65535 && (n >= 1 || allowZero) ? n : undefined;
}

const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$/;

/** Splits `host`, `host:port`, `[v6]:port`, `[v6]` or a bare IPv6 address. */
function hostPort(text: string, defaultPort: number, allowZero = false): { host: string; port: number } | undefined {
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracket) {
    const host = bracket[1] ?? '';
    const p = bracket[2] === undefined ? defaultPort : port(bracket[2], allowZero);
    return isIP(host) === 6 && p !== undefined ? { host, port: p } : undefined;
  }
  if (isIP(text) === 6) return { host: text, port: defaultPort };
  const colon = text.lastIndexOf(':');
  const host = colon < 0 ? text : text.slice(0, colon);
  const p = colon < 0 ? defaultPort : port(text.slice(colon + 1), allowZero);
  return host !== '' && p !== undefined ? { host, port: p } : undefined;
}

/** A name to look up, not a mistyped IPv4 address (`1.2.3`, which getaddrinfo would take as 1.2.0.3). */
const isHostName = (host: string): boolean => HOST_NAME.test(host) && !/^[\d.]+$/.test(host);

/**
 * The address a host name in Listen stands for: resolved once, here, so that a name that
 * does not resolve is a configuration error (FILE:LINE, exit 2) and the daemon listens on
 * an IP like any other. proxsmtpd (sock_any_pton) called getaddrinfo and took the first
 * result; so do we, IPv4 or IPv6, and the other addresses of the name are not used.
 */
function resolveListenHost(name: string): string {
  let addresses: string[];
  try {
    addresses = native.resolveHost(name);
  } catch (e) {
    throw new ValueError(`cannot resolve the host name '${name}': ${(e as Error).message}`);
  }
  const first = addresses[0];
  if (first === undefined) throw new ValueError(`cannot resolve the host name '${name}': no address`);
  return first;
}

export function parseListen(text: string): ListenAddress {
  const bad = (): never => {
    throw new ValueError(
      `'${text}' is not a listen address; use port, ip, ip:port, [ipv6]:port, host:port or /path/to/socket`,
    );
  };
  if (text.startsWith('/')) return { kind: 'unix', path: text };
  const p = port(text, true);
  if (p !== undefined) return { kind: 'tcp', host: '0.0.0.0', port: p };
  const hp = hostPort(text, DEFAULT_LISTEN_PORT, true) ?? bad();
  if (isIP(hp.host) !== 0) return { kind: 'tcp', ...hp };
  if (!isHostName(hp.host)) bad();
  return { kind: 'tcp', host: resolveListenHost(hp.host), port: hp.port };
}

export function parseOutAddress(text: string): OutAddress {
  const bad = (): never => {
    throw new ValueError(
      `'${text}' is not an upstream address; use ip[:port], [ipv6]:port, host[:port], ` +
        'a port alone (loopback) or /path/to/socket',
    );
  };
  if (text.startsWith('/')) return { kind: 'unix', path: text };
  const p = port(text);
  if (p !== undefined) return { kind: 'loopback', port: p };
  const hp = hostPort(text, SMTP_PORT) ?? bad();
  if (isIP(hp.host) === 0 && !HOST_NAME.test(hp.host)) bad();
  return { kind: 'tcp', ...hp };
}

export function formatAddress(a: ListenAddress | OutAddress): string {
  switch (a.kind) {
    case 'unix':
      return a.path;
    case 'loopback':
      return String(a.port);
    case 'tcp':
      return isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
  }
}
