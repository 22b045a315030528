// AllowRelayFrom: the clients that may send to any domain (through SendRelayTo). Moxy's
// IPv4 patterns with `*` per octet (`192.168.*.*`), single addresses, and CIDR blocks
// (IPv4 and IPv6, checked with node:net BlockList; an IPv4-mapped client address is
// matched as IPv4). `*` alone allows everyone, which makes an open relay: only ever
// explicit, and `smtpsift check` warns about it.

import { BlockList, isIP } from 'node:net';
import { ValueError } from '../config/errors.js';
import { plainIp } from '../net/address.js';

export interface RelayAcl {
  /** `AllowRelayFrom: *`. */
  readonly everyone: boolean;
  readonly text: string;
  allows(ip: string | undefined): boolean;
}

export function parseRelayAcl(text: string): RelayAcl {
  const items = text.split(',').map((s) => s.trim());
  if (text.trim() === '' || items.some((s) => s === '')) throw new ValueError(`'${text}' is not a list of addresses`);
  const blocks = new BlockList();
  const patterns: (number | '*')[][] = [];
  let everyone = false;
  for (const item of items) {
    if (item === '*') {
      everyone = true;
      continue;
    }
    const slash = item.indexOf('/');
    if (slash >= 0) {
      const addr = item.slice(0, slash);
      const bits = item.slice(slash + 1);
      const family = isIP(addr);
      const max = family === 6 ? 128 : 32;
      if (family === 0 || !/^\d{1,3}$/.test(bits) || Number(bits) > max) {
        throw new ValueError(`'${item}' is not a CIDR block; use e.g. 10.0.0.0/8 or 2001:db8::/32`);
      }
      blocks.addSubnet(addr, Number(bits), family === 6 ? 'ipv6' : 'ipv4');
      continue;
    }
    const family = isIP(item);
    if (family !== 0) {
      blocks.addAddress(item, family === 6 ? 'ipv6' : 'ipv4');
      continue;
    }
    const octets = item.split('.');
    if (octets.length !== 4 || !octets.every((o) => o === '*' || (/^\d{1,3}$/.test(o) && Number(o) <= 255))) {
      throw new ValueError(`'${item}' is not an address; use an IP address, a pattern like 192.168.*.*, a CIDR block or *`);
    }
    patterns.push(octets.map((o) => (o === '*' ? '*' : Number(o))));
  }
  return {
    everyone,
    text,
    allows(ip) {
      if (everyone) return true;
      const a = plainIp(ip);
      if (a === undefined) return false; // a unix socket client has no address to allow
      const family = isIP(a);
      if (family === 0) return false;
      if (blocks.check(a, family === 6 ? 'ipv6' : 'ipv4')) return true;
      if (family !== 4) return false;
      const parts = a.split('.').map(Number);
      return patterns.some((p) => p.every((o, i) => o === '*' || o === parts[i]));
    },
  };
}
