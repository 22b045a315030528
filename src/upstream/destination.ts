// Destination strategies (design.md): where a session's upstream is. This issue has the
// fixed OutAddress and loopback; transparent and routed modes add theirs.

import type { OutAddress } from '../config/addresses.js';
import { SiftError } from '../errors.js';
import type { Endpoint } from './upstream.js';

export function fixedDestination(out: OutAddress): (clientIp: string | undefined) => Endpoint {
  switch (out.kind) {
    case 'unix':
      return () => ({ path: out.path });
    case 'tcp':
      // A host name is resolved by the connect itself, for every connection (spec §2).
      return () => ({ host: out.host, port: out.port });
    case 'loopback':
      return (clientIp) => {
        if (clientIp === undefined) throw new SiftError('UPSTREAM_UNREACHABLE', 'loopback mode needs a TCP client');
        return { host: clientIp, port: out.port };
      };
  }
}
