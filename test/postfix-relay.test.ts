// smtpsiftd between two halves of a real, private Postfix (test/helpers/postfix.ts), with no
// filter configured: the relay alone must already be a correct content filter for Postfix in
// both integration modes (../shared/spec/postfix-integration.md §2, §3.2 rules 1, 2, 6, 7).
//
//   A (after-queue):  nodemailer → entry smtpd → queue → scan → smtpsiftd → reinjection smtpd → Maildir
//   B (before-queue): nodemailer → entry smtpd ⇄ smtpsiftd → reinjection smtpd → Maildir

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createTransport } from 'nodemailer';
import { alive } from './helpers/process.js';
import { DOMAIN, postfixUnavailable, processesInSession, startPostfixRelay, type Postfix, type PostfixRelay } from './helpers/postfix.js';
import type { Daemon } from './helpers/daemon.js';

// Without Postfix (a developer machine) the file is skipped; CI installs it, so there a
// missing Postfix fails the run instead of skipping it quietly.
const unavailable = postfixUnavailable();
const skip = unavailable !== undefined && process.env['CI'] === undefined ? unavailable : false;

const REFUSED_A = `refused-a@${DOMAIN}`;
const REFUSED_B = `refused-b@${DOMAIN}`;
const REFUSAL = '550 5.1.1 E2E refused by reinjection';

interface Sent {
  readonly accepted: string[];
  readonly rejected: string[];
  /** The server's reply to the end of data. */
  readonly response: string;
  /** Per rejected recipient, the server's reply. */
  readonly rejectedReplies: string[];
}

/** A failed send: the SMTP reply nodemailer got, if any. */
interface SendError extends Error {
  readonly responseCode?: number;
  readonly response?: string;
}

let seq = 0;

/** One message, on a connection of its own, with a token that identifies it in a mailbox. */
async function send(port: number, from: string, to: string[]): Promise<Sent & { token: string }> {
  const token = `tok-${process.pid}-${++seq}-${Math.random().toString(36).slice(2)}`;
  const transport = createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    name: 'client.e2e.test',
    connectionTimeout: 5000,
    greetingTimeout: 5000,
    socketTimeout: 15_000,
  });
  try {
    const raw =
      `From: <${from}>\r\nTo: ${to.map((t) => `<${t}>`).join(', ')}\r\nSubject: ${token}\r\n` +
      `Message-ID: <${token}@client.e2e.test>\r\n\r\nbody of ${token}\r\n.leading dot line\r\n`;
    const info = await transport.sendMail({ envelope: { from, to }, raw });
    const rejectedErrors = (info as { rejectedErrors?: SendError[] }).rejectedErrors ?? [];
    return {
      token,
      accepted: info.accepted.map(String),
      rejected: info.rejected.map(String),
      response: info.response,
      rejectedReplies: rejectedErrors.map((e) => e.response ?? e.message),
    };
  } finally {
    transport.close();
  }
}

/** The queue ID in `250 2.0.0 Ok: queued as ID`. */
function queueId(reply: string): string {
  const id = /queued as ([0-9A-Za-z]+)/.exec(reply)?.[1];
  assert.ok(id, `no queue id in ${JSON.stringify(reply)}`);
  return id;
}

/** The virtual(8) delivery of `rcpt`: the reinjected message's queue ID. */
function deliveryQueueIds(pf: Postfix, rcpt: string): string[] {
  const re = new RegExp(`: ([0-9A-F]+): to=<${escape(rcpt)}>, relay=virtual, .*status=sent`, 'g');
  return [...pf.log().matchAll(re)].map((m) => m[1] ?? '');
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Occurrences of `needle` in `hay`. */
function count(hay: string, needle: string): number {
  return hay.split(needle).length - 1;
}

// Both ways DATA can go: received whole first (the default), and relayed as it arrives.
for (const cut of [false, true]) {
  describe(`smtpsiftd inside a real Postfix, no filter${cut ? ', CutThrough: on' : ''}`, { skip, timeout: 180_000 }, () => {
    let relay: PostfixRelay;
    let pf: Postfix;
    let d: Daemon;
    let startup = '';

    before(async () => {
      const t0 = Date.now();
      relay = await startPostfixRelay({
        ...(cut ? { daemon: { CutThrough: 'on' } } : {}),
        postfix: { refuseRecipients: { [REFUSED_A]: REFUSAL, [REFUSED_B]: REFUSAL } },
      });
      ({ pf, d } = relay);
      startup = `Postfix ${pf.name} and smtpsiftd up in ${Date.now() - t0} ms: A=${pf.entryAfterQueue} B=${pf.entryBeforeQueue} proxy=${pf.proxyPort} reinject=${pf.reinjectPort}`;
    });

    after(async () => {
      await relay?.stop();
    });

    it('A: a message to the after-queue entry is delivered once, through smtpsiftd', { timeout: 30_000 }, async (t) => {
      t.diagnostic(startup);
      const rcpt = `a-once@${DOMAIN}`;
      const sent = await send(pf.entryAfterQueue, `sender-a-once@${DOMAIN}`, [rcpt]);
      assert.match(sent.response, /^250 /);
      const entryId = queueId(sent.response);

      const [msg] = await pf.waitForMail(rcpt, 1);
      await pf.waitForEmptyQueue();
      assert.equal(pf.mailbox(rcpt).length, 1);
      assert.ok(msg?.includes(`Subject: ${sent.token}`), msg);
      // Dot-stuffing undone exactly once on the way.
      assert.ok(msg?.includes(`\n.leading dot line\n`), msg);
      // Cut through, the 354 was the reinjection smtpd's; else smtpsiftd's own.
      assert.match(d.log(), cut ? /CLIENT > 354 End data with <CR><LF>\.<CR><LF>/ : /CLIENT > 354 Start mail input/);

      // The queued message left through the scan transport to smtpsiftd, which answered with the
      // reinjection smtpd's reply, and that reinjected message is the one in the Maildir.
      const hop = new RegExp(`${entryId}: to=<${escape(rcpt)}>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${pf.proxyPort},.* status=sent \\(250 2\\.0\\.0 Ok: queued as ([0-9A-F]+)\\)`);
      const reinjected = hop.exec(pf.log())?.[1];
      assert.ok(reinjected, `no scan delivery of ${entryId} to the proxy in:\n${pf.logTail()}`);
      assert.deepEqual(deliveryQueueIds(pf, rcpt), [reinjected]);
      assert.ok(d.log().includes(`queued as ${reinjected}`), 'smtpsiftd never relayed the reinjection reply');
      assert.ok(d.log().includes(`<${rcpt}>`), 'smtpsiftd never saw the recipient');
      // The after-queue scan client sent XFORWARD and smtpsiftd passed it on: the reinjection
      // smtpd logs the original client's queue ID.
      assert.match(pf.log(), new RegExp(`${reinjected}: client=localhost\\[127\\.0\\.0\\.1\\], orig_queue_id=${entryId}`));
    });

    it('B: a message to the before-queue entry is delivered once, through smtpsiftd', { timeout: 30_000 }, async () => {
      const rcpt = `b-once@${DOMAIN}`;
      const sent = await send(pf.entryBeforeQueue, `sender-b-once@${DOMAIN}`, [rcpt]);
      // Before-queue, the client's 250 is the reinjection smtpd's, relayed by smtpsiftd and
      // then by the entry smtpd.
      const id = queueId(sent.response);

      const [msg] = await pf.waitForMail(rcpt, 1);
      await pf.waitForEmptyQueue();
      assert.equal(pf.mailbox(rcpt).length, 1);
      assert.ok(msg?.includes(`Subject: ${sent.token}`), msg);
      assert.ok(msg?.includes(`\n.leading dot line\n`), msg);
      assert.deepEqual(deliveryQueueIds(pf, rcpt), [id]);
      assert.match(pf.log(), new RegExp(`proxy-accept: END-OF-MESSAGE: 250 2\\.0\\.0 Ok: queued as ${id}; from=<sender-b-once@${DOMAIN}> to=<${escape(rcpt)}>`));
      assert.ok(d.log().includes(`queued as ${id}`), 'smtpsiftd never relayed the reinjection reply');
    });

    it('B: a recipient the reinjection smtpd refuses is refused to the client, the others are delivered', { timeout: 30_000 }, async () => {
      const ok = `b-mixed@${DOMAIN}`;
      const sender = `sender-b-refused@${DOMAIN}`;
      const sent = await send(pf.entryBeforeQueue, sender, [ok, REFUSED_B]);
      assert.deepEqual(sent.accepted, [ok]);
      assert.deepEqual(sent.rejected, [REFUSED_B]);
      assert.match(sent.rejectedReplies[0] ?? '', /^550 5\.1\.1 <refused-b@e2e\.test>: Recipient address rejected: E2E refused by reinjection/);

      // Only one recipient refused, and no bounce: the client was told.
      const single = await send(pf.entryBeforeQueue, sender, [REFUSED_B]).then(
        () => assert.fail('a transaction whose only recipient was refused was accepted'),
        (e: SendError) => e,
      );
      assert.equal(single.responseCode, 550, single.message);
      assert.match(single.response ?? '', /E2E refused by reinjection/);

      await pf.waitForMail(ok, 1);
      await pf.waitForEmptyQueue();
      assert.equal(pf.mailbox(ok).length, 1);
      assert.equal(pf.mailbox(REFUSED_B).length, 0);
      assert.equal(pf.mailbox(sender).length, 0, 'before-queue refusal must not bounce');
    });

    it('A: a recipient the reinjection smtpd refuses is bounced to the sender, the others are delivered', { timeout: 30_000 }, async () => {
      const ok = `a-mixed@${DOMAIN}`;
      const sender = `sender-a-refused@${DOMAIN}`;
      const sent = await send(pf.entryAfterQueue, sender, [ok, REFUSED_A]);
      // After-queue, the entry smtpd takes both; the refusal comes later, as a bounce.
      assert.deepEqual(sent.accepted, [ok, REFUSED_A]);
      const entryId = queueId(sent.response);

      const [bounce] = await pf.waitForMail(sender, 1);
      await pf.waitForMail(ok, 1);
      await pf.waitForEmptyQueue();
      assert.equal(pf.mailbox(ok).length, 1);
      assert.equal(pf.mailbox(REFUSED_A).length, 0);
      assert.equal(pf.mailbox(sender).length, 1);
      assert.match(bounce ?? '', /^From: Mail Delivery System <MAILER-DAEMON@e2e\.test>$/m);
      assert.match(bounce ?? '', /^Return-Path: <>$/m);
      // The bounce quotes the reinjection smtpd's reply as smtpsiftd relayed it, for that
      // recipient only.
      assert.match(bounce ?? '', /<refused-a@e2e\.test>: host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550 5\.1\.1\s+<refused-a@e2e\.test>: Recipient address rejected: E2E refused by\s+reinjection \(in reply to RCPT TO command\)/);
      assert.deepEqual(bounce?.match(/^Final-Recipient: .*$/gm), [`Final-Recipient: rfc822; ${REFUSED_A}`]);
      assert.match(bounce ?? '', /^Status: 5\.1\.1$/m);
      assert.match(pf.log(), new RegExp(`${entryId}: to=<${escape(REFUSED_A)}>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${pf.proxyPort},.* status=bounced`));
    });

    it('A: a recipient the reinjection smtpd temp-fails stays deferred, and is delivered once after a flush', { timeout: 30_000 }, async () => {
      const rcpt = `a-later@${DOMAIN}`;
      const sender = `sender-a-later@${DOMAIN}`;
      await pf.setRefusals({ recipients: { [REFUSED_A]: REFUSAL, [REFUSED_B]: REFUSAL, [rcpt]: '450 4.2.0 E2E try later' } });
      const sent = await send(pf.entryAfterQueue, sender, [rcpt]);
      const entryId = queueId(sent.response);

      const [deferred] = await pf.waitForDeferred(1);
      assert.equal(deferred?.queue_id, entryId);
      assert.match(deferred?.recipients[0]?.delay_reason ?? '', /said: 450 4\.2\.0 <a-later@e2e\.test>: Recipient address rejected: E2E try later \(in reply to RCPT TO command\)/);
      // Parked: no retry until the test asks (retry: 'on-flush'), no bounce, no delay warning.
      await new Promise((r) => setTimeout(r, 1500));
      const attempts = (): number => count(pf.log(), `${entryId}: to=<${rcpt}>, relay=127.0.0.1[127.0.0.1]:${pf.proxyPort}`);
      assert.equal(attempts(), 1);
      assert.equal(pf.mailbox(sender).length, 0);

      await pf.setRefusals({ recipients: { [REFUSED_A]: REFUSAL, [REFUSED_B]: REFUSAL } });
      await pf.flush();
      await pf.waitForMail(rcpt, 1, 5000);
      await pf.waitForEmptyQueue();
      assert.equal(pf.mailbox(rcpt).length, 1);
      assert.equal(attempts(), 2);
      assert.equal(pf.mailbox(sender).length, 0);
    });

    for (const mode of ['A', 'B'] as const) {
      it(`${mode}: 20 concurrent messages are each delivered exactly once`, { timeout: 60_000 }, async (t) => {
        const port = mode === 'A' ? pf.entryAfterQueue : pf.entryBeforeQueue;
        const rcpts = Array.from({ length: 20 }, (_, i) => `conc-${mode.toLowerCase()}-${i}@${DOMAIN}`);
        const t0 = Date.now();
        const sent = await Promise.all(rcpts.map((r) => send(port, `sender-conc-${mode.toLowerCase()}@${DOMAIN}`, [r])));
        for (const s of sent) assert.match(s.response, /^250 /);
        for (const r of rcpts) await pf.waitForMail(r, 1, 20_000);
        await pf.waitForEmptyQueue(20_000);
        t.diagnostic(`${mode}: 20 concurrent messages delivered in ${Date.now() - t0} ms`);

        const dlog = d.log();
        rcpts.forEach((r, i) => {
          const box = pf.mailbox(r);
          assert.equal(box.length, 1, `${r} got ${box.length} copies`);
          // Its own message, not another session's.
          assert.ok(box[0]?.includes(`Subject: ${sent[i]?.token}\n`), `${r} got someone else's message`);
          const ids = deliveryQueueIds(pf, r);
          assert.equal(ids.length, 1, `${r}: deliveries ${ids.join(',')}`);
          // Each delivered copy went through smtpsiftd: it relayed that reinjection's reply once
          // (at -d 4 it logs the upstream line, and the per-message summary quotes it).
          assert.ok(dlog.includes(`queued as ${ids[0]}`), `${r}: ${ids[0]} not in smtpsiftd's log`);
        });
        if (mode === 'B') {
          for (const r of rcpts) assert.equal(count(pf.log(), `to=<${r}> proto=ESMTP`), 1, `${r}: not exactly one proxy-accept`);
        }
        assert.doesNotMatch(pf.log(), /warning: timeout talking to proxy|queue file write error/);
      });
    }

    it('stop() leaves no Postfix process and no files', { timeout: 30_000 }, async (t) => {
      const pid = pf.pid;
      assert.ok(pid > 1 && alive(pid));
      const t0 = Date.now();
      await pf.stop();
      t.diagnostic(`postfix stop took ${Date.now() - t0} ms`);
      assert.equal(alive(pid), false, `master ${pid} still running`);
      assert.deepEqual(processesInSession(pid), [], 'a Postfix daemon outlived its master');
      assert.equal(existsSync(pf.dir), false);
    });
  });
}
