// Protocol text is held as latin1 strings, one character per byte (src/net/reader.ts), so
// that the bytes a client sends are the bytes the upstream and the filter get. Where such
// text is read as text (a domain to look up, a log line for people), its bytes are decoded
// as UTF-8: RFC 6531 (SMTPUTF8) addresses and names are UTF-8, and ASCII is unchanged.

const strict = new TextDecoder('utf-8', { fatal: true });

function bytes(protocol: string): Buffer {
  return Buffer.from(protocol, 'latin1');
}

/** The text the bytes spell in UTF-8; undefined when they are not UTF-8. */
export function utf8Text(protocol: string): string | undefined {
  if (!/[^\x00-\x7f]/.test(protocol)) return protocol;
  try {
    return strict.decode(bytes(protocol));
  } catch {
    return undefined;
  }
}

/**
 * For a line people and tools read back: the text the bytes spell in UTF-8, so that written
 * as UTF-8 they are the client's own bytes again; bytes that are not UTF-8 become '?'
 * (one per maximal ill-formed sequence, the WHATWG decoder's U+FFFD), so the line stays
 * valid UTF-8.
 */
export function utf8Display(protocol: string): string {
  const text = utf8Text(protocol);
  if (text !== undefined) return text;
  return new TextDecoder('utf-8').decode(bytes(protocol)).replace(/\uFFFD/g, '?');
}
