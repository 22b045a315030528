// Issue 3, "The filter run": FilterType pipe, file and reject, and no FilterCommand at all
// (spec §13.1, §13.3, §13.5, §13.6), with real /bin/sh filters and the real daemon.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { withRelay, unstuff, verbs } from './helpers/relay.js';
import { sendMessage, withFilter } from './helpers/filter.js';
import { spoolFiles } from './helpers/process.js';

const T = { timeout: 20_000 };

test('pipe: the filter reads the message dot-unstuffed, as the client meant it; its stdout is the message', T, async () => {
  await withFilter(
    { config: (sc) => ({ FilterCommand: `tee ${sc.path('seen')} | sed 's/^Subject: in/Subject: out/'` }) },
    async ({ session, up, d }, sc) => {
      const c = await session();
      const wire = 'Subject: in\r\n\r\n..x\r\n...two\r\n..\r\nplain\r\n';
      assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], wire), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.equal(sc.read('seen'), 'Subject: in\r\n\r\n.x\r\n..two\r\n.\r\nplain\r\n');
      const got = up.messages[0];
      assert.ok(got);
      assert.equal(got.toString('latin1'), 'Subject: out\r\n\r\n..x\r\n...two\r\n..\r\nplain\r\n', 'stuffed again on the way up');
      assert.equal(unstuff(got).toString('latin1'), 'Subject: out\r\n\r\n.x\r\n..two\r\n.\r\nplain\r\n');
      assert.deepEqual(spoolFiles(d.spoolDir), []);
    },
  );
});

test('pipe: a filter that exits without reading a large message still works; its output is delivered', T, async () => {
  await withFilter(
    { config: () => ({ FilterCommand: "printf 'Subject: replaced\\n\\nnew body\\n'" }) },
    async ({ session, up, d }) => {
      const c = await session();
      // 6 MB of 76-character lines, the client's data read to its end and discarded.
      const line = `${randomBytes(38).toString('hex')}\r\n`;
      const big = `Subject: big\r\n\r\n${line.repeat(Math.ceil((6 * 1024 * 1024) / line.length))}`;
      assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], big, 20_000), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.equal(up.messages[0]?.toString('latin1'), 'Subject: replaced\r\n\r\nnew body\r\n');
      // The session goes on: nothing of the big body was left to be read as commands.
      assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
      assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'DATA', 'NOOP']);
      assert.deepEqual(spoolFiles(d.spoolDir), []);
    },
  );
});

test('pipe: exit 0 with empty output delivers an empty message (as proxsmtpd)', T, async () => {
  await withFilter({ config: () => ({ FilterCommand: 'cat > /dev/null; exit 0' }) }, async ({ session, up }) => {
    const c = await session();
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: gone\r\n\r\nbody\r\n'), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(up.messages.length, 1);
    assert.equal(up.messages[0]?.length, 0);
  });
});

test('file: EMAIL names a 0600 file; stdin and stdout are /dev/null; an in-place edit is what gets sent', T, async () => {
  await withFilter(
    {
      config: (sc) => ({
        FilterType: 'file',
        // The shell's own stdin and stdout ($$), read through a pipe: a redirection of a
        // command would show dash's own temporary descriptors instead.
        FilterCommand:
          `stat -c %a "$EMAIL" > ${sc.path('mode')}; cp "$EMAIL" ${sc.path('orig')}; readlink /proc/$$/fd/0 /proc/$$/fd/1 | cat > ${sc.path('stdio')}; ` +
          // Same file, same inode: truncate and rewrite.
          `sed 's/^Subject: in/Subject: edited/' "$EMAIL" > ${sc.path('tmp')} && cat ${sc.path('tmp')} > "$EMAIL"`,
      }),
    },
    async ({ session, up, d }, sc) => {
      const c = await session();
      assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: in\r\n\r\n..dot\r\n'), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.equal(sc.read('mode'), '600\n');
      assert.equal(sc.read('stdio'), '/dev/null\n/dev/null\n');
      assert.equal(sc.read('orig'), 'Subject: in\r\n\r\n.dot\r\n', 'the file holds the message dot-unstuffed');
      assert.equal(up.messages[0]?.toString('latin1'), 'Subject: edited\r\n\r\n..dot\r\n');
      assert.deepEqual(spoolFiles(d.spoolDir), []);
    },
  );
});

test('file: a filter that replaces the file (mv) gets the new file sent, re-read by name', T, async () => {
  await withFilter(
    {
      config: () => ({
        FilterType: 'file',
        FilterCommand: `{ printf 'X-Replaced: yes\\n'; cat "$EMAIL"; } > "$TMPDIR/new.$$" && mv "$TMPDIR/new.$$" "$EMAIL"`,
      }),
    },
    async ({ session, up, d }) => {
      const c = await session();
      assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: mv\r\n\r\nbody\r\n'), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.equal(up.messages[0]?.toString('latin1'), 'X-Replaced: yes\r\nSubject: mv\r\n\r\nbody\r\n');
      assert.deepEqual(spoolFiles(d.spoolDir), []);
    },
  );
});

for (const [name, config, expected] of [
  ['default FilterReject', {}, '530 Email Rejected\r\n'],
  ['FilterReject text without a code', { FilterReject: 'Go away' }, '550 Content Rejected; Go away\r\n'],
  ['FilterReject with a code', { FilterReject: '554 5.7.1 No mail here' }, '554 5.7.1 No mail here\r\n'],
] as const) {
  test(`reject: MAIL, RCPT and DATA answered with FilterReject (${name}); nothing of the envelope forwarded, only RSET`, T, async () => {
    await withFilter({ config: () => ({ FilterType: 'reject', FilterCommand: 'cat', ...config }) }, async ({ session, up }) => {
      const c = await session();
      assert.equal(await c.command('MAIL FROM:<a@example.org>'), expected);
      assert.equal(await c.command('RCPT TO:<b@example.net>'), expected);
      assert.equal(await c.command('DATA'), expected);
      // Other commands are relayed; a second DATA is refused the same way, and no body is read.
      assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
      assert.equal(await c.command('DATA'), expected);
      assert.deepEqual(verbs(up.commands), ['EHLO', 'RSET', 'NOOP', 'RSET']);
      assert.equal(up.messages.length, 0);
    });
  });
}

test('no FilterCommand: the message passes unchanged, and the Header is still applied', T, async () => {
  await withRelay({ config: { Header: 'X-Sifted: yes' } }, async ({ session, up, d }) => {
    const c = await session();
    const body = 'Subject: plain\r\n\r\n..dot\r\nline\n8bit \xe9\r\n';
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], body), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(up.messages[0]?.toString('latin1'), 'Subject: plain\r\nX-Sifted: yes\r\n\r\n..dot\r\nline\r\n8bit \xe9\r\n');
    assert.deepEqual(spoolFiles(d.spoolDir), []);
  });
});
