// The message as it goes upstream, before dot-stuffing: the file to send, read in pieces
// (or a small message already in memory), with the Header option put in as it streams
// past. The daemon's DATA and `smtpsift try` both read the message this way.

import { closeSync, openSync, readSync } from 'node:fs';
import { HeaderInserter } from './header.js';

/**
 * The size of a piece read from the file. Under glibc's mmap threshold (128 KiB, fixed at
 * the addon's load for the RSS bar: native/smtpsift.c), so that a piece that is not
 * reused comes from the heap: each buffer at or over it was an mmap, page faults and an
 * munmap whose TLB shootdown interrupts the other CPU (issue 7: READ_CHUNK 256 -> 64 KiB
 * alone took the daemon's CPU for 1 MB messages from 175 to 149 cs per 200 MB).
 */
export const READ_CHUNK = 64 * 1024;

/**
 * The file in READ_CHUNK pieces, read synchronously like the spool is written (a read from
 * the page cache costs less than the thread pool's hand-off). Into `reuse` when given, so
 * that each piece is valid only until the next one is asked for; else each piece is a new
 * buffer, for a caller that may still hold the previous one.
 */
function* pieces(path: string, reuse: Buffer | undefined): Generator<Buffer> {
  const fd = openSync(path, 'r');
  try {
    for (;;) {
      const buf = reuse ?? Buffer.allocUnsafe(READ_CHUNK);
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) return;
      yield buf.subarray(0, n);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * The message's pieces. With `reuse` (a buffer of its caller's), a piece read from the file
 * is valid only until the next one is asked for: the caller must be done with it by then.
 */
export function* outgoing(source: string | Buffer, header: string | undefined, reuse?: Buffer): Generator<Buffer> {
  const inserter = header === undefined ? undefined : new HeaderInserter(header);
  const chunks = typeof source === 'string' ? pieces(source, reuse) : [source];
  for (const chunk of chunks) {
    if (inserter === undefined) yield chunk;
    else yield* inserter.push(chunk);
  }
  if (inserter) yield* inserter.end();
}
