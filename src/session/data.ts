// DATA: receive the message into the spool (354 is ours), then hand it to the upstream
// and give the client the upstream's final reply. The client's data is always read to its
// CRLF.CRLF, whatever fails meanwhile, so no body line is ever taken for a command.

import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { SiftError } from '../errors.js';
import { DotDecoder, DotEncoder } from '../smtp/dot.js';
import { reply, summary, type Reply } from '../smtp/reply.js';
import type { SpoolFile } from '../spool/spool.js';
import { q } from '../log/logger.js';
import { ClientGone, type Outcome, type Session } from './session.js';

const READ_CHUNK = 256 * 1024;

/** How the message ended, for the log line. */
function status(r: Reply): string {
  return r.code < 300 ? 'DELIVERED' : r.code < 500 ? 'TEMPFAIL' : 'REJECTED';
}

export async function receiveMessage(s: Session): Promise<Outcome> {
  if (s.txn.recipients.length === 0) {
    s.send(reply(554, '5.5.1 No valid recipients'));
    return 'continue';
  }
  let file: SpoolFile | undefined;
  let size = 0;
  let final: Reply;
  let outcome: Outcome = 'continue';
  try {
    try {
      file = s.services.spool.open();
    } catch (e) {
      // Refused before 354: the client has sent no data yet.
      if (!(e instanceof SiftError)) throw e;
      s.log.error(e.message);
      s.send(e.reply);
      await s.forward('RSET\r\n');
      s.txn.reset();
      return 'continue';
    }
    s.send(reply(354, 'Start mail input; end with <CRLF>.<CRLF>'));
    const received = await receive(s, file);
    size = received.size;
    if (received.error) throw received.error;
    await file.finish();
    [final, outcome] = await deliver(s, file);
  } catch (e) {
    if (!(e instanceof SiftError) || e.closes) throw e;
    // Our own failure with the data fully read: a 4xx, and the upstream forgets the envelope.
    s.log.error(e.message);
    final = e.reply;
    if (!s.upstream.isClosed) await s.forward('RSET\r\n');
  } finally {
    file?.remove();
  }
  s.send(final);
  logMessage(s, size, final);
  s.txn.reset();
  return outcome;
}

/**
 * Reads the client's data up to CRLF.CRLF into the spool file, with backpressure. A write
 * error does not stop the reading: the rest is discarded and the error reported at the end.
 */
async function receive(s: Session, file: SpoolFile): Promise<{ size: number; error?: SiftError }> {
  const decoder = new DotDecoder();
  let size = 0;
  let error: SiftError | undefined;
  const failed = (err: Error): void => {
    error ??= new SiftError('SPOOL_FAILED', `writing ${file.path}: ${err.message}`);
  };
  file.stream.on('error', failed);
  for (;;) {
    const chunk = await s.reader.chunk(s.timeoutMs);
    if (chunk === 'eof') throw new ClientGone('client closed the connection during DATA');
    if (chunk === 'timeout') throw new SiftError('CLIENT_TIMEOUT', `client silent for ${s.config.timeOut} s during DATA`);
    const d = decoder.feed(chunk);
    for (const part of d.parts) {
      size += part.length;
      if (error === undefined && !file.stream.write(part)) {
        await Promise.race([once(file.stream, 'drain'), once(file.stream, 'close')]);
      }
    }
    if (d.done) {
      s.reader.unshift(chunk.subarray(d.used));
      return { size, error };
    }
  }
}

/** DATA upstream, the spooled message dot-stuffed with CRLF endings, and the final reply. */
async function deliver(s: Session, file: SpoolFile): Promise<[Reply, Outcome]> {
  const dataReply = await s.forward('DATA\r\n');
  if (dataReply.code !== 354) return [dataReply, 'continue'];
  const encoder = new DotEncoder();
  let held: Buffer[] = [];
  try {
    for await (const chunk of createReadStream(file.path, { highWaterMark: READ_CHUNK })) {
      if (held.length > 0) await s.upstream.write(Buffer.concat(held));
      held = encoder.encode(chunk as Buffer);
    }
    if (s.socket.destroyed) {
      // Nobody would hear the reply and the client will send again: do not deliver.
      throw new ClientGone('client closed the connection before the message was delivered');
    }
    // The last piece and the end of data in one write (design invariant 7).
    held.push(encoder.end());
    await s.upstream.write(Buffer.concat(held));
  } catch (e) {
    // The upstream has part of the message: only dropping the connection guarantees that
    // nothing half-sent is ever delivered.
    s.upstream.abort();
    if (e instanceof SiftError || e instanceof ClientGone) throw e;
    s.log.error(`reading ${file.path}: ${(e as Error).message}`);
    return [new SiftError('SPOOL_FAILED', '').reply, 'close'];
  }
  const final = await s.upstream.reply();
  s.log.debug(`SERVER > ${q(summary(final))}`);
  return [final, 'continue'];
}

function logMessage(s: Session, size: number, final: Reply): void {
  const t = s.txn;
  s.log.info(
    `client=${s.clientIp ?? 'unix'} from=<${q(t.sender === '<>' ? '' : (t.sender ?? ''))}> ` +
      `rcpts=${t.recipients.length} size=${size} status=${status(final)} reply="${q(summary(final))}"`,
  );
}
