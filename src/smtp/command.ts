// Reading what a client's command line says, where the relay needs to know it.

/**
 * A control character other than TAB (NUL, VT, FF, a bare CR...) is in no SMTP command.
 * Upstreams split words at some of them (Postfix at VT and FF), so a line with one would
 * mean one command to them and another, or none, to the relay: `XCLIENT<VT>ADDR=...`
 * passed through as an unknown verb. Such lines are refused, never relayed.
 */
export function hasControl(line: string): boolean {
  return /[\x00-\x08\x0a-\x1f\x7f]/.test(line);
}

/** The verb: the first word, upper-cased. */
export function verbOf(line: string): string {
  const m = /^[ \t]*([^ \t]*)/.exec(line);
  return (m?.[1] ?? '').toUpperCase();
}

/**
 * The address of `MAIL FROM:` / `RCPT TO:` as the filter sees it (SENDER, RECIPIENTS):
 * `<>` stays `<>`, `<a@b> PARAMS` gives `a@b`, a bare `a@b PARAMS` gives `a@b`
 * (proxsmtpd kept the parameters there, spec §9; they are not part of the address).
 */
export function pathOf(line: string): string | undefined {
  const m = /^[ \t]*(?:MAIL[ \t]*FROM|RCPT[ \t]*TO)[ \t]*:[ \t]*(.*)$/i.exec(line);
  if (!m) return undefined;
  const rest = m[1] ?? '';
  if (rest.startsWith('<>')) return '<>';
  if (rest.startsWith('<')) {
    const close = rest.indexOf('>');
    return close < 0 ? rest.slice(1).trimEnd() : rest.slice(1, close);
  }
  return rest.split(/[ \t]/)[0] || undefined;
}

/** A client address as XCLIENT and XFORWARD write it: `IPV6:` before an IPv6 one. */
export function xclientAddr(ip: string): string {
  return ip.includes(':') ? `IPV6:${ip}` : ip;
}

/** xtext (RFC 3461 §4): `+XX` is the byte XX in hex. */
function xtextDecode(value: string): string {
  return value.replace(/\+([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

/**
 * The attributes of an XFORWARD command (Postfix XFORWARD_README): `NAME=value` pairs in any
 * order, values xtext-encoded, `[UNAVAILABLE]` and `[TEMPUNAVAIL]` meaning unknown.
 * Names are upper-cased. (proxsmtpd's substring search lost HELO after ADDR: bug B3/B4.)
 */
export function xforwardAttributes(line: string): Map<string, string> {
  const attrs = new Map<string, string>();
  for (const word of line.trim().split(/[ \t]+/).slice(1)) {
    const eq = word.indexOf('=');
    if (eq <= 0) continue;
    const value = word.slice(eq + 1);
    if (value === '[UNAVAILABLE]' || value === '[TEMPUNAVAIL]') continue;
    attrs.set(word.slice(0, eq).toUpperCase(), xtextDecode(value));
  }
  return attrs;
}

/** `AUTH PLAIN <base64>` carries a password on the command line itself (RFC 4954 §4). */
export function hideInitialResponse(text: string): string {
  return text.replace(/^([ \t]*AUTH[ \t]+\S+[ \t]+)\S.*$/i, '$1(authentication data)');
}
