// Destination strategies (design.md): where a session's upstream is. The fixed OutAddress,
// loopback, and the two transparent modes (issue 4); the routed mode adds its own.

import { networkInterfaces } from 'node:os';
import type { Socket } from 'node:net';
import type { OutAddress } from '../config/addresses.js';
import type { Config } from '../config/schema.js';
import { SiftError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { native, type NativeError } from '../native.js';
import { plainIp } from '../net/address.js';
import { describe, type Endpoint } from './upstream.js';

/** Picks the upstream of one client connection; a SiftError ends the session with its 421. */
export type Destination = (socket: Socket, clientIp: string | undefined, log: Logger) => Endpoint;

/**
 * The strategy a configuration asks for. `listening` gives the listener's own address, for
 * the transparent modes' loop guard; a router dials per recipient, so none is needed then.
 */
export function destinationFor(
  config: Config,
  routed: boolean,
  listening: ListeningAddress,
): Destination {
  if (routed) {
    return () => {
      throw new Error('routed mode dials per recipient');
    };
  }
  const transparent = config.transparentProxy;
  if (transparent === 'off') return fixedDestination(config.outAddress ?? { kind: 'loopback', port: 25 });
  return transparentDestination(transparent, listening);
}

export function fixedDestination(out: OutAddress): Destination {
  switch (out.kind) {
    case 'unix':
      return () => ({ path: out.path });
    case 'tcp':
      // A host name is resolved by the connect itself, for every connection (spec §2).
      return () => ({ host: out.host, port: out.port });
    case 'loopback':
      return (_socket, clientIp) => {
        if (clientIp === undefined) throw new SiftError('UPSTREAM_UNREACHABLE', 'loopback mode needs a TCP client');
        return { host: clientIp, port: out.port };
      };
  }
}

/** The proxy's own listening address, for the loop guard (undefined while not listening). */
export type ListeningAddress = () => { readonly address: string; readonly port: number } | undefined;

/**
 * TransparentProxy (proxsmtpd.conf(5); spec/netns-transparent.md §A, §B).
 * - client: netfilter REDIRECTed the connection to us; the conntrack entry's original
 *   destination (SO_ORIGINAL_DST) is the upstream, dialled from one of our own addresses.
 * - full: TPROXY delivered the connection unchanged to our IP_TRANSPARENT listener, so the
 *   accepted socket's local address is the original destination (no conntrack needed,
 *   unlike proxsmtpd); the upstream socket is bound to the client's own address.
 * OutAddress plays no part in either (proxsmtpd 1.10 used it in client mode, a bug).
 */
export function transparentDestination(mode: 'client' | 'full', listening: ListeningAddress): Destination {
  return (socket, clientIp, log) => {
    if (clientIp === undefined) throw new SiftError('UPSTREAM_UNREACHABLE', 'TransparentProxy needs a TCP client');
    const dst = mode === 'full' ? localDestination(socket) : originalDestination(socket);
    const loop = loopReason(dst, clientIp, listening());
    if (loop !== undefined) {
      throw new SiftError('UPSTREAM_UNREACHABLE', `refusing to relay to ${describe({ host: dst.address, port: dst.port })}: ${loop}`);
    }
    const endpoint = mode === 'full' ? { host: dst.address, port: dst.port, source: clientIp } : { host: dst.address, port: dst.port };
    log.info(`transparent (${mode}): original destination ${describe(endpoint)}`);
    return endpoint;
  };
}

interface Dst {
  readonly address: string;
  readonly port: number;
}

function originalDestination(socket: Socket): Dst {
  // `_handle.fd` is the accepted socket's descriptor on Unix (spec/node-ecosystem.md §8).
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) throw new SiftError('UPSTREAM_UNREACHABLE', 'cannot get the original destination: no socket descriptor');
  try {
    const d = native.originalDst(fd);
    return { address: plainIp(d.address) ?? d.address, port: d.port };
  } catch (e) {
    // ENOENT: no conntrack entry, i.e. not redirected by a NAT rule, or conntrack inactive.
    throw new SiftError('UPSTREAM_UNREACHABLE', `cannot get the original destination for transparent proxying: ${(e as NativeError).message}`);
  }
}

function localDestination(socket: Socket): Dst {
  const address = plainIp(socket.localAddress);
  const port = socket.localPort;
  if (address === undefined || port === undefined) throw new SiftError('UPSTREAM_UNREACHABLE', 'cannot get the original destination: socket has no local address');
  return { address, port };
}

/**
 * Why relaying to `dst` would loop back into us, or undefined. Dialling the client itself,
 * or our own listener (a connection that reached us without being redirected), would make
 * each connection open another one to us, without end.
 */
export function loopReason(
  dst: Dst,
  clientIp: string,
  listener: { readonly address: string; readonly port: number } | undefined,
  localAddresses: () => readonly string[] = ownAddresses,
): string | undefined {
  const host = plainIp(dst.address) ?? dst.address;
  if (host === (plainIp(clientIp) ?? clientIp)) return 'it is the client\'s own address (a mail loop)';
  if (listener === undefined || dst.port !== listener.port) return undefined;
  const own = plainIp(listener.address) ?? listener.address;
  const wildcard = own === '0.0.0.0' || own === '::';
  if (host === own || (wildcard && localAddresses().includes(host))) return 'it is this proxy\'s own listener (a mail loop)';
  return undefined;
}

function ownAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => plainIp(i.address) ?? i.address));
}
