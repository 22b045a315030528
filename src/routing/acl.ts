// AllowRelayFrom: the clients that may send to any domain (through SendRelayTo). Moxy's
// IPv4 patterns with `*` per octet (`192.168.*.*`), single addresses, and CIDR blocks
// (IPv4 and IPv6, checked with node:net BlockList; an IPv4-mapped client address is
// matched as IPv4). `*` alone allows everyone, which makes an open relay: only ever
// explicit, and `smtpsift check` warns about it, as about every other entry that alone
// matches a whole address family (`*.*.*.*`, `0.0.0.0/0`, `::/0`, `::ffff:0:0/96`).

import { BlockList, isIP } from 'node:net';
import { ValueError } from '../config/errors.js';
import { plainIp } from '../net/address.js';

export interface RelayAcl {
  /** `AllowRelayFrom: *`. */
  readonly everyone: boolean;
  /** The entries that alone match every address of IPv4, of IPv6 or of both, with what they match. */
  readonly open: readonly { readonly item: string; readonly matches: string }[];
  readonly text: string;
  allows(ip: string | undefined): boolean;
}

/**
 * What a CIDR block matches when that is a whole address family. A block is contiguous,
 * so holding the lowest and the highest address of a family means holding all of it;
 * IPv4 clients are checked as IPv4, which IPv6 blocks such as ::/0 and ::ffff:0:0/96 match
 * through the mapped range (node:net BlockList).
 */
function wholeFamilies(blocks: BlockList): string | undefined {
  const v4 = blocks.check('0.0.0.0', 'ipv4') && blocks.check('255.255.255.255', 'ipv4');
  const v6 = blocks.check('::', 'ipv6') && blocks.check('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ipv6');
  return v4 && v6 ? 'every address' : v4 ? 'every IPv4 address' : v6 ? 'every IPv6 address' : undefined;
}

export function parseRelayAcl(text: string): RelayAcl {
  const items = text.split(',').map((s) => s.trim());
  if (text.trim() === '' || items.some((s) => s === '')) throw new ValueError(`'${text}' is not a list of addresses`);
  const blocks = new BlockList();
  const patterns: (number | '*')[][] = [];
  const open: { item: string; matches: string }[] = [];
  let everyone = false;
  for (const item of items) {
    if (item === '*') {
      everyone = true;
      open.push({ item, matches: 'every address' });
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
      const alone = new BlockList();
      alone.addSubnet(addr, Number(bits), family === 6 ? 'ipv6' : 'ipv4');
      const matches = wholeFamilies(alone);
      if (matches !== undefined) open.push({ item, matches });
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
    if (octets.every((o) => o === '*')) open.push({ item, matches: 'every IPv4 address' });
  }
  return {
    everyone,
    open,
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
