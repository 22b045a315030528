// The message as it goes upstream, before dot-stuffing: the file to send, read in large
// chunks (or a small message already in memory), with the Header option put in as it
// streams past. The daemon's DATA and `smtpsift try` both read the message this way.

import { createReadStream } from 'node:fs';
import { HeaderInserter } from './header.js';

const READ_CHUNK = 256 * 1024;

export async function* outgoing(source: string | Buffer, header: string | undefined): AsyncGenerator<Buffer> {
  const inserter = header === undefined ? undefined : new HeaderInserter(header);
  const chunks = typeof source === 'string' ? createReadStream(source, { highWaterMark: READ_CHUNK }) : [source];
  for await (const chunk of chunks) {
    if (inserter === undefined) yield chunk as Buffer;
    else yield* inserter.push(chunk as Buffer);
  }
  if (inserter) yield* inserter.end();
}
