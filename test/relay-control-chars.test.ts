// A command line with a control character (other than TAB) is refused, never relayed: an
// upstream may split words where smtpsiftd sees none (Postfix splits at VT and FF), so
// `XCLIENT<VT>ADDR=...` went up as an "unknown verb" and spoofed the client's address to a
// Postfix that trusts smtpsiftd, and `RCPT<VT>TO:` added a recipient no filter was told of.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withRelay } from './helpers/relay.js';
import { withFilter } from './helpers/filter.js';

const T = { timeout: 15_000 };
const REFUSED = '500 5.5.2 Syntax error: control character in the command\r\n';

const LINES = [
  'XCLIENT\x0bADDR=10.1.2.3\r\n',
  'XCLIENT\x0cADDR=10.1.2.3\r\n',
  'XCLIENT\0\r\n',
  'EHLO\x0bclient.test\r\n',
  'STARTTLS\x0b\r\n',
  'MAIL\x0bFROM:<a@example.org>\r\n',
  'RCPT\x0cTO:<hidden@example.net>\r\n',
  'NOOP \x01\r\n',
  'RSET\rMAIL FROM:<b@example.org>\r\n',
  'NOOP \x7f\r\n',
];

test('control characters in a command: 500 5.5.2 for each, nothing of them upstream, the session goes on', T, async () => {
  await withRelay({}, async ({ up, session }) => {
    const c = await session();
    const before = up.commands.length;
    for (const line of LINES) {
      c.send(line);
      assert.equal(await c.reply(), REFUSED, JSON.stringify(line));
    }
    assert.deepEqual(up.commands.slice(before), [], 'nothing relayed');
    // TAB stays a separator, as before.
    assert.equal(await c.command('NOOP\tfine'), '250 2.0.0 Ok\r\n');
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
  });
});

test('a recipient smuggled with a control character is neither relayed nor in RECIPIENTS', T, async () => {
  await withFilter({ config: (sc) => ({ FilterCommand: `echo "$RECIPIENTS" > ${sc.dir}/rcpts; cat` }) }, async ({ session, up }, sc) => {
    const c = await session();
    assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
    c.send('RCPT\x0bTO:<hidden@example.net>\r\n');
    assert.equal(await c.reply(), REFUSED);
    assert.match(await c.command('RCPT TO:<seen@example.net>'), /^250 /);
    assert.match(await c.command('DATA'), /^354 /);
    c.send('Subject: x\r\n\r\nbody\r\n.\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(sc.read('rcpts'), 'seen@example.net\n');
    assert.ok(!up.commands.some((l) => l.includes('hidden')), JSON.stringify(up.commands));
  });
});
