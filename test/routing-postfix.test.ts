// Issue 5, Moxy routing with Postfix as the sending client: one message to recipients of two
// routes. Postfix's smtp client (the after-queue scan transport, FILTER_README) sends both in
// one transaction; smtpsiftd takes the first route's recipient and answers the other
// `452 4.5.3 ... separate transaction`; Postfix keeps that recipient queued and sends it in
// another transaction, which routes to the other destination. Both are delivered.
//
//   nodemailer → entry smtpd → queue → scan (smtp) → smtpsiftd (routed) ─┬→ reinjection smtpd → Maildir   (e2e.test)
//                                                                       └→ recording upstream             (other.test)

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTransport } from 'nodemailer';
import { tempDir } from './helpers/daemon.js';
import { DOMAIN, postfixUnavailable, startPostfixRelay, type PostfixRelay } from './helpers/postfix.js';
import { RecordingUpstream } from './helpers/upstream.js';

const unavailable = postfixUnavailable();
const skip = unavailable !== undefined && process.env['CI'] === undefined ? unavailable : false;

describe('routed mode with Postfix as the sending client', { skip, timeout: 60_000 }, () => {
  let relay: PostfixRelay;
  let other: RecordingUpstream;
  const tmp = tempDir('smtpsift-routes-');

  before(async () => {
    other = await RecordingUpstream.start();
    relay = await startPostfixRelay({
      daemon: (ports) => {
        const routes = join(tmp.dir, 'routes');
        writeFileSync(routes, `${DOMAIN} 127.0.0.1:${ports.reinject}\nother.test 127.0.0.1:${other.port}\n`);
        return { RouteType: 'file', RouteDatabase: routes };
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await other?.close();
    tmp.remove();
  });

  it('delivers both recipients of two routes: one at once, the 452 one in a separate transaction', async () => {
    const { pf, d } = relay;
    const token = `route-${process.pid}-${Date.now()}`;
    const to = [`first@${DOMAIN}`, 'second@other.test'];
    const transport = createTransport({ host: '127.0.0.1', port: pf.entryAfterQueue, secure: false, ignoreTLS: true, name: 'client.e2e.test' });
    try {
      const raw = `From: <sender@${DOMAIN}>\r\nTo: ${to.join(', ')}\r\nSubject: ${token}\r\n\r\nbody ${token}\r\n`;
      const info = await transport.sendMail({ envelope: { from: `sender@${DOMAIN}`, to }, raw });
      assert.deepEqual(info.accepted.map(String).sort(), [...to].sort());
    } finally {
      transport.close();
    }
    // Whichever recipient Postfix offered second got the 452 and is retried; flush until both arrived.
    const deadline = Date.now() + 30_000;
    while ((pf.delivered().filter((m) => m.content.includes(token)).length < 1 || other.messages.length < 1) && Date.now() < deadline) {
      await pf.flush().catch(() => undefined);
      await new Promise((r) => setTimeout(r, 300));
    }
    assert.equal(pf.delivered().filter((m) => m.content.includes(token)).length, 1, `Postfix log:\n${pf.logTail()}\ndaemon:\n${d.log().slice(-3000)}`);
    assert.equal(other.messages.length, 1);
    assert.match(other.messages[0]?.toString() ?? '', new RegExp(`Subject: ${token}`));
    assert.ok(other.commands.includes('RCPT TO:<second@other.test>\r\n') || other.commands.some((c) => /RCPT TO:<second@other\.test>/.test(c)));
    await d.waitForLog(/452 4\.5\.3 <(first@e2e\.test|second@other\.test)> is routed to another destination/);
    await pf.waitForEmptyQueue();
  });
});
