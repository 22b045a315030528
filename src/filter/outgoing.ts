// The message as it goes upstream, before dot-stuffing: the file to send, read in large
// chunks (or a small message already in memory), with the Header option put in as it
// streams past. The daemon's DATA and `smtpsift try` both read the message this way.

import { closeSync, openSync, readSync } from 'node:fs';
import { HeaderInserter } from './header.js';

const READ_CHUNK = 256 * 1024;

/**
 * The file in READ_CHUNK pieces, read synchronously like the spool is written (a read from
 * the page cache costs less than the thread pool's hand-off). Each piece is a new buffer:
 * the caller may still hold the previous one.
 */
function* pieces(path: string): Generator<Buffer> {
  const fd = openSync(path, 'r');
  try {
    for (;;) {
      const buf = Buffer.allocUnsafe(READ_CHUNK);
      const n = readSync(fd, buf, 0, READ_CHUNK, null);
      if (n === 0) return;
      yield buf.subarray(0, n);
    }
  } finally {
    closeSync(fd);
  }
}

export async function* outgoing(source: string | Buffer, header: string | undefined): AsyncGenerator<Buffer> {
  const inserter = header === undefined ? undefined : new HeaderInserter(header);
  const chunks = typeof source === 'string' ? pieces(source) : [source];
  for (const chunk of chunks) {
    if (inserter === undefined) yield chunk;
    else yield* inserter.push(chunk);
  }
  if (inserter) yield* inserter.end();
}
