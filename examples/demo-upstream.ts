// The demo's upstream: an SMTP server (smtp-server) that accepts all mail and writes each
// message to DIR/<time>-<n>.eml, with the envelope in X-Demo-* headers on top.
//   node dist/examples/demo-upstream.js [port] [dir]

import { mkdirSync, createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { SMTPServer } from 'smtp-server';

const port = Number(process.argv[2] ?? 10026);
const dir = process.argv[3] ?? 'var/demo-mail';
mkdirSync(dir, { recursive: true });
let n = 0;

const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS'],
  disableReverseLookup: true,
  banner: 'demo capture upstream',
  useXForward: true,
  logger: false,
  onData(stream, session, callback) {
    const name = `${new Date().toISOString().replace(/[:.]/g, '-')}-${++n}.eml`;
    const envelope = Readable.from([
      `X-Demo-Mail-From: ${session.envelope.mailFrom ? session.envelope.mailFrom.address : ''}\r\n`,
      `X-Demo-Rcpt-To: ${session.envelope.rcptTo.map((r) => r.address).join(', ')}\r\n`,
    ]);
    const out = createWriteStream(join(dir, name));
    pipeline(Readable.from((async function* () { yield* envelope; yield* stream; })()), out).then(
      () => {
        process.stdout.write(`demo-upstream: wrote ${join(dir, name)}\n`);
        callback(null, `2.0.0 Ok: saved as ${name}`);
      },
      (e: Error) => callback(Object.assign(new Error(`4.3.0 cannot save: ${e.message}`), { responseCode: 451 })),
    );
  },
});
server.listen(port, '127.0.0.1', () => process.stdout.write(`demo-upstream: listening on 127.0.0.1:${port}, writing to ${dir}/\n`));
