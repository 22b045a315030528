// Issue 2, the relay: pipelined input is answered in order with the envelope right,
// whether or not PIPELINING was advertised (design: proxsmtpd bugs B1 and B2 fixed).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { withRelay, verbs } from './helpers/relay.js';

const T = { timeout: 15_000 };

const GROUP =
  'MAIL FROM:<sender@example.org>\r\n' +
  'RCPT TO:<one@example.net>\r\n' +
  'RCPT TO:<reject@example.net>\r\n' +
  'RCPT TO:<two@example.net>\r\n' +
  'DATA\r\n';

for (const pipelining of ['on', 'off']) {
  test(`MAIL, RCPT, RCPT(rejected), RCPT, DATA in one write (Pipelining: ${pipelining}): replies in order, envelope right`, T, async () => {
    await withRelay({ config: { Pipelining: pipelining } }, async ({ up, d, session }) => {
      const c = await session();
      c.send(GROUP);
      assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
      assert.equal(await c.reply(), '250 2.1.5 Ok\r\n');
      assert.equal(await c.reply(), '550 5.1.1 <reject>: Recipient address rejected\r\n');
      assert.equal(await c.reply(), '250 2.1.5 Ok\r\n');
      // The group is answered in full before the 354 (no reply may trail it).
      assert.equal(await c.reply(), '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
      assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'RCPT', 'RCPT']);
      // DATA goes upstream only once the message is complete.
      c.send('Subject: pipelined\r\n\r\nfirst half\r\n');
      await sleep(150);
      assert.ok(!verbs(up.commands).includes('DATA'), 'DATA went upstream before the end of the message');
      c.send('second half\r\n.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'RCPT', 'RCPT', 'DATA']);
      assert.equal(up.messages[0]?.toString('latin1'), 'Subject: pipelined\r\n\r\nfirst half\r\nsecond half\r\n');
      // The log line counts only the two recipients the upstream accepted.
      const line = await d.waitForLog(/from=<[^>]*> rcpts=\d+ size=\d+ .*status=\w+/);
      const size = Buffer.byteLength('Subject: pipelined\r\n\r\nfirst half\r\nsecond half\r\n');
      assert.match(line, new RegExp(`^from=<sender@example\\.org> rcpts=2 size=${size} .*status=DELIVERED$`));
    });
  });
}

test('DATA with no accepted recipient gets 554 5.5.1 No valid recipients and nothing goes upstream', T, async () => {
  await withRelay({}, async ({ up, session }) => {
    const c = await session();
    c.send('MAIL FROM:<sender@example.org>\r\nRCPT TO:<reject@example.net>\r\nDATA\r\nNOOP\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
    assert.equal(await c.reply(), '550 5.1.1 <reject>: Recipient address rejected\r\n');
    assert.equal(await c.reply(), '554 5.5.1 No valid recipients\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
    // No transaction at all.
    assert.equal(await c.command('RSET'), '250 2.0.0 Ok\r\n');
    assert.equal(await c.command('DATA'), '554 5.5.1 No valid recipients\r\n');
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'NOOP', 'RSET', 'NOOP']);
    assert.equal(up.messages.length, 0);
  });
});

test('a whole transaction, its message and the next one pipelined behind the end of data', T, async () => {
  await withRelay({}, async ({ up, session }) => {
    const c = await session();
    c.send(GROUP);
    for (let i = 0; i < 5; i++) await c.reply();
    // The end of the first message, the next envelope and DATA, in one write.
    c.send('one\r\n.\r\nMAIL FROM:<s2@example.org>\r\nRCPT TO:<three@example.net>\r\nDATA\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
    assert.equal(await c.reply(), '250 2.1.5 Ok\r\n');
    assert.match(await c.reply(), /^354 /);
    c.send('two\r\n.\r\nQUIT\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q2\r\n');
    assert.equal(await c.reply(), '221 2.0.0 Bye\r\n');
    await c.waitClosed();
    assert.deepEqual(up.messages.map((m) => m.toString('latin1')), ['one\r\n', 'two\r\n']);
    assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'RCPT', 'RCPT', 'DATA', 'MAIL', 'RCPT', 'DATA', 'QUIT']);
  });
});

test('a client that does not wait for 354 (message in the same write as DATA) is still handled', T, async () => {
  await withRelay({}, async ({ up, session }) => {
    const c = await session();
    c.send('MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: eager\r\n\r\nbody\r\n.\r\nNOOP\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
    assert.equal(await c.reply(), '250 2.1.5 Ok\r\n');
    assert.match(await c.reply(), /^354 /);
    assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
    assert.equal(up.messages[0]?.toString('latin1'), 'Subject: eager\r\n\r\nbody\r\n');
    assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'DATA', 'NOOP']);
  });
});

test('many pipelined commands with multi-line replies come back in order, byte for byte', T, async () => {
  const respond = (line: string): string | null => {
    const m = /^NOOP (\d+)/.exec(line);
    return m ? `250-line one of ${m[1]}\r\n250 line two of ${m[1]}` : null;
  };
  await withRelay({ upstream: { respond } }, async ({ up, session }) => {
    const c = await session();
    const n = 200;
    c.send(Array.from({ length: n }, (_, i) => `NOOP ${i}\r\n`).join(''));
    for (let i = 0; i < n; i++) assert.equal(await c.reply(), `250-line one of ${i}\r\n250 line two of ${i}\r\n`);
    assert.equal(up.commands.length, n + 1);
  });
});
