// Issue 2, the relay: DATA. It ends only at CRLF.CRLF; what goes upstream is dot-stuffed with
// CRLF line endings (design invariant 4), and a CRLF message arrives byte-identical.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { withRelay, unstuff, verbs } from './helpers/relay.js';
import type { RawClient } from './helpers/client.js';

const T = { timeout: 15_000 };

/**
 * Every case runs both ways DATA can go: the whole message first (the default), and relayed
 * as it arrives (`CutThrough: on`), where the 354 is the upstream's own.
 */
const MODES = [
  { name: '', config: {}, cut: false, dataReply: '354 Start mail input; end with <CRLF>.<CRLF>\r\n' },
  { name: ' [CutThrough: on]', config: { CutThrough: 'on' }, cut: true, dataReply: '354 End data with <CR><LF>.<CR><LF>\r\n' },
] as const;
type Mode = (typeof MODES)[number];

/** MAIL, RCPT, DATA (354 checked). */
async function startMessage(c: RawClient, m: Mode, from = 'a@example.org', to = 'b@example.net'): Promise<void> {
  assert.equal(await c.command(`MAIL FROM:<${from}>`), '250 2.0.0 Ok\r\n');
  assert.equal(await c.command(`RCPT TO:<${to}>`), '250 2.1.5 Ok\r\n');
  assert.equal(await c.command('DATA'), m.dataReply);
}

/** No bare CR, no bare LF: every line ending is CRLF. */
function assertCrlfOnly(wire: Buffer): void {
  const s = wire.toString('latin1');
  assert.doesNotMatch(s, /\r(?!\n)|(?<!\r)\n/, `bare CR or LF in ${JSON.stringify(s)}`);
}

/** Every line that starts with a dot is stuffed: a lone `.` line can never reach the upstream. */
function assertStuffed(wire: Buffer): void {
  for (const line of wire.toString('latin1').split('\r\n')) assert.ok(!line.startsWith('.') || line.startsWith('..'), `unstuffed ${JSON.stringify(line)}`);
}

for (const m of MODES) {
  test(`dot transparency round trip: lines starting with dots arrive stuffed and un-stuff to what the client meant${m.name}`, T, async () => {
    await withRelay({ config: m.config }, async ({ up, session }) => {
      const c = await session();
      await startMessage(c, m);
      const meant = 'Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\n...\r\nmid.dle\r\n. space\r\n';
      const stuffed = 'Subject: dots\r\n\r\n..leading\r\n...two\r\n..\r\n....\r\nmid.dle\r\n.. space\r\n';
      c.send(`${stuffed}.\r\n`);
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      const wire = up.messages[0];
      assert.ok(wire);
      assert.equal(wire.toString('latin1'), stuffed);
      assert.equal(unstuff(wire).toString('latin1'), meant);
    });
  });

  test(`bare LF and bare CR line endings become CRLF upstream; a dot after them is content and is stuffed${m.name}`, T, async () => {
    await withRelay({ config: m.config }, async ({ up, session }) => {
      const c = await session();
      await startMessage(c, m);
      c.send('Subject: lf\n\nline1\n.\nline2\r\nline3\n\r\nlone\rcr\r\n.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      const wire = up.messages[0];
      assert.ok(wire);
      assert.equal(wire.toString('latin1'), 'Subject: lf\r\n\r\nline1\r\n..\r\nline2\r\nline3\r\n\r\nlone\r\ncr\r\n');
      assertCrlfOnly(wire);
      assertStuffed(wire);
    });
  });

  for (const [name, trick] of [
    ['\\n.\\n', '\n.\n'],
    ['\\n.\\r\\n', '\n.\r\n'],
    ['\\r.\\r\\n', '\r.\r\n'],
    ['\\r\\n.\\n', '\r\n.\n'],
    ['\\r\\n.\\r\\r\\n', '\r\n.\r\r\n'],
  ] as const) {
    test(`SMTP smuggling: ${name} is content, not the end of data; the upstream sees one MAIL and one message${m.name}`, T, async () => {
      await withRelay({ config: m.config }, async ({ up, session }) => {
        const c = await session();
        await startMessage(c, m);
        c.send(`Subject: smuggle\r\n\r\nhello${trick}MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nsmuggled\r\n`);
        // Nothing ended the data yet: no reply, no message upstream (and no DATA, unless cut through).
        await sleep(150);
        assert.equal(up.messages.length, 0, 'the message ended early');
        if (!m.cut) assert.ok(!verbs(up.commands).includes('DATA'), 'DATA went upstream early');
        c.send('.\r\n');
        assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
        assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
        assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'DATA', 'NOOP']);
        assert.equal(up.messages.length, 1);
        const wire = up.messages[0];
        assert.ok(wire);
        assertCrlfOnly(wire);
        assertStuffed(wire);
        assert.match(wire.toString('latin1'), /\r\nMAIL FROM:<evil@example\.org>\r\nRCPT TO:<victim@example\.net>\r\nDATA\r\nsmuggled\r\n$/);
      });
    });
  }

  test(`"text." then CRLF does not end the data: the dot must start a line after CRLF${m.name}`, T, async () => {
    await withRelay({ config: m.config }, async ({ up, session }) => {
      const c = await session();
      await startMessage(c, m);
      c.send('Subject: x\r\n\r\nabc.\r\n');
      await sleep(150);
      assert.equal(up.messages.length, 0);
      c.send(' .\r\n.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.equal(up.messages[0]?.toString('latin1'), 'Subject: x\r\n\r\nabc.\r\n .\r\n');
    });
  });

  test(`a last line ending in a bare LF or CR before CRLF.CRLF is delivered with CRLF endings${m.name}`, T, async () => {
    await withRelay({ config: m.config }, async ({ up, session }) => {
      const c = await session();
      await startMessage(c, m);
      c.send('Subject: x\r\n\r\nlast line\n\r\n.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      await startMessage(c, m);
      c.send('Subject: y\r\n\r\nlast line\r\r\n.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q2\r\n');
      assert.deepEqual(
        up.messages.map((m) => m.toString('latin1')),
        ['Subject: x\r\n\r\nlast line\r\n\r\n', 'Subject: y\r\n\r\nlast line\r\n\r\n'],
      );
    });
  });

  test(`an empty message (DATA then "." at once) as the first message of a connection, and later${m.name}`, T, async () => {
    await withRelay({ config: m.config }, async ({ up, session }) => {
      const c = await session();
      await startMessage(c, m);
      c.send('.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      // Pipelined: DATA and its end in one write.
      c.send('MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
      assert.equal(await c.reply(), '250 2.1.5 Ok\r\n');
      assert.match(await c.reply(), /^354 /);
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q2\r\n');
      assert.deepEqual(up.messages.map((m) => m.length), [0, 0]);
      assert.equal(up.commands.filter((l) => l === 'DATA\r\n').length, 2);
    });
  });

  test(`8-bit and NUL bytes pass unchanged${m.name}`, T, async () => {
    await withRelay({ config: m.config }, async ({ up, session }) => {
      const c = await session();
      await startMessage(c, m);
      const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i).filter((b) => b !== 10 && b !== 13 && b !== 0x2e));
      const body = Buffer.concat([Buffer.from('Subject: bytes\r\n\r\n'), all, Buffer.from('\r\n\0\0\0\r\n\xff\xfe\r\n', 'latin1')]);
      c.send(Buffer.concat([body, Buffer.from('.\r\n')]));
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.ok(up.messages[0]?.equals(body));
    });
  });

  test(`a CRLF message arrives byte-identical, sent in odd pieces; the spool file is gone afterwards${m.name}`, T, async () => {
    await withRelay({ config: m.config }, async ({ up, d, session }) => {
      const c = await session();
      await startMessage(c, m);
      const lines: string[] = ['From: a@example.org', 'To: b@example.net', 'Subject: pieces', ''];
      for (let i = 0; i < 5000; i++) lines.push(`${i % 7 === 0 ? '.' : ''}line ${i} ${'x'.repeat(i % 120)}`);
      const stuffed = Buffer.from(`${lines.map((l) => (l.startsWith('.') ? `.${l}` : l)).join('\r\n')}\r\n.\r\n`);
      // Pieces that split CRLFs and dots at every possible place.
      for (let at = 0, step = 1; at < stuffed.length; at += step, step = (step % 13) + 1) {
        c.send(stuffed.subarray(at, Math.min(stuffed.length, at + step)));
      }
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      const wire = up.messages[0];
      assert.ok(wire);
      assert.ok(wire.equals(stuffed.subarray(0, stuffed.length - 3)), 'the upstream got other bytes than the client sent');
      assert.equal(unstuff(wire).toString(), `${lines.join('\r\n')}\r\n`);
      const privateDirs = readdirSync(d.spoolDir);
      assert.equal(privateDirs.length, 1);
      assert.deepEqual(readdirSync(join(d.spoolDir, privateDirs[0] ?? '')), []);
    });
  });

  test(`the upstream's final reply, multi-line too, reaches the client verbatim; a refused DATA is the final reply${m.name}`, T, async () => {
    let n = 0;
    const respond = (line: string): string | null =>
      line === 'DATA\r\n' && ++n === 2 ? '554-5.5.1 Error: no valid recipients\r\n554 5.5.1 really' : null;
    const afterData = (): string => '250-2.0.0 first line\r\n250 2.0.0 Ok: queued as MULTI';
    const refusal = '554-5.5.1 Error: no valid recipients\r\n554 5.5.1 really\r\n';
    await withRelay({ upstream: { respond, afterData }, config: m.config }, async ({ session }) => {
      const c = await session();
      await startMessage(c, m);
      c.send('Subject: one\r\n\r\nbody\r\n.\r\n');
      assert.equal(await c.reply(), '250-2.0.0 first line\r\n250 2.0.0 Ok: queued as MULTI\r\n');
      assert.equal(await c.command('MAIL FROM:<a@example.org>'), '250 2.0.0 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<b@example.net>'), '250 2.1.5 Ok\r\n');
      if (m.cut) {
        // Relayed as it arrives: the refusal is the reply to DATA itself, and no data follows.
        assert.equal(await c.command('DATA'), refusal);
      } else {
        assert.equal(await c.command('DATA'), m.dataReply);
        c.send('Subject: two\r\n\r\nbody\r\n.\r\n');
        assert.equal(await c.reply(), refusal);
      }
      assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    });
  });

  test(`several messages in one session, each with its own envelope; RSET and EHLO reset it${m.name}`, T, async () => {
    await withRelay({ config: m.config }, async ({ up, d, session }) => {
      const c = await session();
      await startMessage(c, m, 'first@example.org', 'r1@example.net');
      c.send('Subject: 1\r\n\r\none\r\n.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      // The end of a message resets the envelope.
      assert.equal(await c.command('DATA'), '554 5.5.1 No valid recipients\r\n');
      // An aborted transaction.
      assert.equal(await c.command('MAIL FROM:<aborted@example.org>'), '250 2.0.0 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<gone@example.net>'), '250 2.1.5 Ok\r\n');
      assert.equal(await c.command('RSET'), '250 2.0.0 Ok\r\n');
      assert.equal(await c.command('DATA'), '554 5.5.1 No valid recipients\r\n');
      assert.equal(await c.command('MAIL FROM:<aborted2@example.org>'), '250 2.0.0 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<gone2@example.net>'), '250 2.1.5 Ok\r\n');
      assert.match(await c.command('EHLO again.test'), /^250-smtp\.passthru/);
      assert.equal(await c.command('DATA'), '554 5.5.1 No valid recipients\r\n');
      // Second message, two recipients.
      assert.equal(await c.command('MAIL FROM:<second@example.org>'), '250 2.0.0 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<r2@example.net>'), '250 2.1.5 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<r3@example.net>'), '250 2.1.5 Ok\r\n');
      assert.match(await c.command('DATA'), /^354 /);
      c.send('Subject: 2\r\n\r\ntwo\r\n.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q2\r\n');
      // Third, the null sender.
      await startMessage(c, m, '', 'r4@example.net');
      c.send('Subject: 3\r\n\r\nthree\r\n.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q3\r\n');
      assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
      await c.waitClosed();
      assert.deepEqual(up.messages.map((m) => m.toString()), ['Subject: 1\r\n\r\none\r\n', 'Subject: 2\r\n\r\ntwo\r\n', 'Subject: 3\r\n\r\nthree\r\n']);
      assert.equal(up.commands.filter((l) => l === 'DATA\r\n').length, 3);
      await d.waitForLog(/from=<> rcpts=1 /);
      const logged = [...d.log().matchAll(/from=<[^>]*> rcpts=\d+/g)].map((m) => m[0]);
      assert.deepEqual(logged, ['from=<first@example.org> rcpts=1', 'from=<second@example.org> rcpts=2', 'from=<> rcpts=1']);
    });
  });

  test(`DATA lines may be any length: a 1 MB line passes unchanged${m.name}`, T, async () => {
    await withRelay({ config: m.config }, async ({ up, session }) => {
      const c = await session();
      await startMessage(c, m);
      const body = `Subject: long\r\n\r\n${'y'.repeat(1024 * 1024)}\r\n.short\r\n`;
      c.send(`${body.replace('\r\n.short', '\r\n..short')}.\r\n`);
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      const wire = up.messages[0];
      assert.ok(wire);
      assert.equal(unstuff(wire).toString('latin1'), body);
    });
  });
}
