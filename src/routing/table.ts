// The route table: recipient domain -> destination list. Moxy's flat file syntax, one
// `domain  host:port[,host:port...]` per line, `#` comments. Domains are compared
// case-insensitively in their IDNA (A-label) form, so `Bücher.example` and
// `xn--bcher-kva.example` are one domain. `.example.com` matches every subdomain of
// example.com (not example.com itself), and an exact entry wins over any wildcard; the
// longest wildcard wins among wildcards. A line whose name is not a domain by RFC 5321's
// syntax (`*`, `*.example.com`, `a..example`, `-x-.example`) or that names a domain a
// second time is an error: such a line could never match, or silently lose to the other.

import { readFileSync } from 'node:fs';
import { domainToASCII } from 'node:url';
import { ConfigError, ValueError } from '../config/errors.js';
import { parseDestinationList, type DestinationList } from './destinations.js';

/** A domain in its canonical form (lower-case A-labels, no trailing dot); '' if not a domain. */
export function normalizeDomain(domain: string): string {
  const d = domain.trim().replace(/\.$/, '');
  if (d === '' || d.startsWith('.')) return '';
  return domainToASCII(d.toLowerCase());
}

/**
 * Whether a normalised name is a domain by RFC 5321 §4.1.2 (sub-domain = Let-dig
 * [Ldh-str]): labels of letters, digits and inner hyphens, 1 to 63 characters, 253 in
 * all. A route file line is checked with this; recipients are looked up as they come.
 */
export function isDomain(ascii: string): boolean {
  return ascii.length <= 253 && ascii.split('.').every((l) => /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/.test(l));
}

/** Why a route file name is not a domain, with the form that was probably meant. */
function notADomain(name: string): string {
  if (name === '*') return `'*' is not a domain; there is no catch-all route (AllowRelayFrom clients' mail for other domains goes to SendRelayTo)`;
  if (name.startsWith('*.')) return `'${name}' is not a domain; write '${name.slice(1)}' for its subdomains`;
  return `'${name}' is not a domain`;
}

/** Something that maps a key (`example.com` or `.example.com`) to its destination text or list. */
export interface RouteSource {
  get(key: string): DestinationList | undefined;
}

/** Exact entry first, then `.parent` wildcards from the nearest parent outwards. */
export function lookupDomain(source: RouteSource, domain: string): DestinationList | undefined {
  const d = normalizeDomain(domain);
  if (d === '') return undefined;
  const exact = source.get(d);
  if (exact !== undefined) return exact;
  const labels = d.split('.');
  for (let i = 1; i < labels.length; i++) {
    const w = source.get(`.${labels.slice(i).join('.')}`);
    if (w !== undefined) return w;
  }
  return undefined;
}

export interface RouteEntry {
  /** `example.com` or `.example.com`, normalised. */
  readonly key: string;
  readonly list: DestinationList;
  readonly text: string;
}

/** Parses a flat route file; throws ConfigError with every `FILE:LINE: why`. */
export function parseRouteText(text: string, file: string): RouteEntry[] {
  const entries = new Map<string, RouteEntry>();
  /** The line each key was first given on, to name it when the key comes again. */
  const lineOf = new Map<string, number>();
  const problems: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) return;
    const at = `${file}:${i + 1}`;
    const m = /^(\S+)(?:\s+(.*))?$/.exec(line);
    const name = m?.[1] ?? '';
    const dest = (m?.[2] ?? '').trim();
    if (dest === '') {
      problems.push(`${at}: '${name}' has no destination; use 'domain host:port[,host:port...]'`);
      return;
    }
    const wildcard = name.startsWith('.');
    const key = normalizeDomain(wildcard ? name.slice(1) : name);
    if (!isDomain(key)) {
      problems.push(`${at}: ${notADomain(name)}`);
      return;
    }
    const k = wildcard ? `.${key}` : key;
    const first = lineOf.get(k);
    if (first !== undefined) {
      // An error, not last-one-wins: which destination a domain has must be visible in the file.
      problems.push(`${at}: '${name}' is already routed at line ${first}${name.toLowerCase() === k ? '' : ` (as ${k})`}`);
      return;
    }
    lineOf.set(k, i + 1);
    try {
      const list = parseDestinationList(dest.replace(/\s*,\s*/g, ','));
      entries.set(k, { key: k, list, text: list.key });
    } catch (e) {
      if (!(e instanceof ValueError)) throw e;
      problems.push(`${at}: ${e.message}`);
    }
  });
  if (problems.length > 0) throw new ConfigError(problems);
  return [...entries.values()];
}

export function readRouteFile(file: string): RouteEntry[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    throw new ConfigError([`${file}: cannot read the route file: ${code === 'ENOENT' ? 'no such file' : String(e)}`]);
  }
  return parseRouteText(text, file);
}

/** An in-memory table, replaced whole on reload (never patched in place). */
export class MapSource implements RouteSource {
  private readonly map: ReadonlyMap<string, DestinationList>;
  constructor(entries: readonly RouteEntry[]) {
    this.map = new Map(entries.map((e) => [e.key, e.list]));
  }
  get size(): number {
    return this.map.size;
  }
  get(key: string): DestinationList | undefined {
    return this.map.get(key);
  }
}
