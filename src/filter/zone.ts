// The local time zone's abbreviation, as C's strftime("%Z") gives it and proxsmtpd wrote it
// in Header's %d: `CET`, `CEST`, `IST`. Intl's short names are that only for a few zones
// (`GMT+1` for Berlin), so the names come from the tz database instead: the POSIX TZ
// string at the end of a TZif file (`CET-1CEST,M3.5.0,M10.5.0/3`), or TZ itself when it
// is one. Standard or daylight time is told by the date's UTC offset.

import { readFileSync } from 'node:fs';

interface Zone {
  readonly std: string;
  /** Minutes east of UTC in standard time. */
  readonly stdEast: number;
  readonly dst: string | undefined;
}

/** `CET-1CEST,...`, `IST-5:30`, `<-03>3`: the names and the standard offset. */
const POSIX = /^(<[^>]+>|[A-Za-z]{3,})([-+]?)(\d{1,2})(?::(\d{2}))?(?::\d{2})?(<[^>]+>|[A-Za-z]{3,})?/;

function parsePosixTz(text: string): Zone | undefined {
  const m = POSIX.exec(text);
  if (m === null) return undefined;
  const name = (s: string): string => s.replace(/^<(.*)>$/, '$1');
  // POSIX offsets are west of UTC: CET-1 is an hour east.
  const west = (Number(m[3]) * 60 + Number(m[4] ?? 0)) * (m[2] === '-' ? -1 : 1);
  return { std: name(m[1] ?? ''), stdEast: -west, dst: m[5] === undefined ? undefined : name(m[5]) };
}

/** The POSIX string of the zone TZ names (or of /etc/localtime), if it can be found. */
function localPosixTz(): string | undefined {
  const tz = process.env['TZ'];
  let file = '/etc/localtime';
  if (tz !== undefined && tz !== '') {
    const name = tz.startsWith(':') ? tz.slice(1) : tz;
    if (name.startsWith('/')) file = name;
    else if (/^[A-Za-z0-9_+-]+(?:\/[A-Za-z0-9_+-]+)*$/.test(name) && !POSIX.test(name)) file = `/usr/share/zoneinfo/${name}`;
    else return name; // TZ is a POSIX string itself
  }
  try {
    // TZif version 2 and later end with "\n<POSIX TZ string>\n".
    const tail = readFileSync(file).subarray(-128).toString('latin1');
    const m = /\n([^\n]*)\n$/.exec(tail);
    return m?.[1] === '' ? undefined : m?.[1];
  } catch {
    return undefined;
  }
}

let zone: Zone | null | undefined;

/** The abbreviation for `d` in the local zone, or undefined when the tz database has none. */
export function zoneAbbreviation(d: Date): string | undefined {
  if (zone === undefined) {
    const text = localPosixTz();
    zone = (text === undefined ? undefined : parsePosixTz(text)) ?? null;
  }
  if (zone === null) return undefined;
  return -d.getTimezoneOffset() === zone.stdEast || zone.dst === undefined ? zone.std : zone.dst;
}
