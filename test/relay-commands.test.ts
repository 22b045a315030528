// Issue 2, the relay: every command but DATA is forwarded byte for byte and the upstream's
// reply comes back byte for byte, except what proxsmtpd answers itself (spec §5, §8, §10, §11).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withRelay, verbs } from './helpers/relay.js';
import type { UpstreamSession } from './helpers/upstream.js';

const T = { timeout: 15_000 };

test('VRFY, odd case, unknown verbs and odd spacing reach the upstream byte for byte; its replies come back verbatim', T, async () => {
  const respond = (line: string): string | null => {
    if (line.startsWith('vrfy ')) return '252 2.1.5 upstream-vrfy-text';
    if (line.startsWith('XYZZY')) return '500 Error: command "XYZZY" not recognized';
    if (line.startsWith('HELP')) return '214-2.0.0 This is upstream\r\n214-2.0.0 Topics:\r\n214 2.0.0 End of HELP info';
    if (line.startsWith('EXPN')) return '550-5.1.1 first\r\n550-5.1.1 second \xe9\xff\r\n550 5.1.1 last';
    if (line.startsWith('mail from')) return '250 2.1.0 sender ok';
    if (line.startsWith('NOOP bare')) return '250';
    return null;
  };
  await withRelay({ upstream: { respond } }, async ({ up, session }) => {
    const c = await session();
    const sent = [
      ['vrfy Joe.User\r\n', '252 2.1.5 upstream-vrfy-text\r\n'],
      ['XYZZY some args\r\n', '500 Error: command "XYZZY" not recognized\r\n'],
      ['HELP\r\n', '214-2.0.0 This is upstream\r\n214-2.0.0 Topics:\r\n214 2.0.0 End of HELP info\r\n'],
      ['EXPN  list \t \r\n', '550-5.1.1 first\r\n550-5.1.1 second \xe9\xff\r\n550 5.1.1 last\r\n'],
      ['mail from:<Odd.Case@Example.ORG>\r\n', '250 2.1.0 sender ok\r\n'],
      ['NOOP bare-lf\n', '250\r\n'],
      ['  noop leading blanks\r\n', '250 2.0.0 Ok\r\n'],
      ['NOOP \x80\xfe high bytes\r\n', '250 2.0.0 Ok\r\n'],
    ] as const;
    for (const [cmd, want] of sent) {
      c.send(cmd);
      assert.equal(await c.reply(), want, JSON.stringify(cmd));
    }
    assert.deepEqual(up.commands.slice(1), sent.map(([cmd]) => cmd));
  });
});

test('QUIT is relayed, its 221 reaches the client, and the connection ends', T, async () => {
  await withRelay({}, async ({ up, session }) => {
    const c = await session();
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    assert.equal(await c.waitClosed(), '');
    assert.equal(up.commands.filter((l) => /^QUIT/i.test(l)).length, 1);
  });
});

test('STARTTLS and BDAT get 502 locally and are not forwarded', T, async () => {
  await withRelay({}, async ({ up, session }) => {
    const c = await session();
    assert.equal(await c.command('STARTTLS'), '502 Command not implemented\r\n');
    assert.equal(await c.command('starttls'), '502 Command not implemented\r\n');
    assert.equal(await c.command('MAIL FROM:<a@example.org>'), '250 2.0.0 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<b@example.org>'), '250 2.1.5 Ok\r\n');
    assert.equal(await c.command('BDAT 0 LAST'), '502 Command not implemented\r\n');
    assert.equal(await c.command('bdat 10'), '502 Command not implemented\r\n');
    // The lockstep NOOP proves the upstream has seen everything that was forwarded.
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'NOOP']);
  });
});

test("a client's XCLIENT gets 554 locally and is not forwarded", T, async () => {
  await withRelay({}, async ({ up, session, d }) => {
    const c = await session();
    assert.equal(await c.command('XCLIENT ADDR=192.0.2.1 NAME=spoofed.example'), '554 Insufficient authorization\r\n');
    assert.equal(await c.command('xclient addr=192.0.2.1'), '554 Insufficient authorization\r\n');
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.deepEqual(verbs(up.commands), ['EHLO', 'NOOP']);
    await d.waitForLog(/client attempted use of privileged XCLIENT feature/);
  });
});

test('a command line of 4222 bytes (CRLF included) gets 500 Line too long and the session goes on; 4221 bytes is forwarded', T, async () => {
  await withRelay({}, async ({ up, session }) => {
    const c = await session();
    const ok = `NOOP ${'a'.repeat(4221 - 2 - 5)}\r\n`;
    const long = `NOOP ${'b'.repeat(4222 - 2 - 5)}\r\n`;
    assert.equal(ok.length, 4221);
    assert.equal(long.length, 4222);
    c.send(ok);
    assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
    c.send(long);
    assert.equal(await c.reply(), '500 Line too long\r\n');
    // Much longer, in pieces, and with a command pipelined behind it.
    c.send(`RCPT TO:<${'c'.repeat(6000)}`);
    c.send(`${'c'.repeat(6000)}>\r\nNOOP after\r\n`);
    assert.equal(await c.reply(), '500 Line too long\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
    assert.deepEqual(up.commands.slice(1), [ok, 'NOOP after\r\n']);
  });
});

test('AUTH is relayed line by line: 334 challenges out, answers up verbatim, never taken for commands', T, async () => {
  let step = 0;
  const respond = (line: string): string | null => {
    if (/^AUTH LOGIN/i.test(line)) return (step = 1), '334 VXNlcm5hbWU6';
    if (step === 1) return (step = 2), '334 UGFzc3dvcmQ6';
    if (step === 2) return (step = 0), '235 2.7.0 Authentication successful';
    return null;
  };
  await withRelay({ upstream: { respond } }, async ({ up, session }) => {
    const c = await session();
    assert.equal(await c.command('AUTH LOGIN'), '334 VXNlcm5hbWU6\r\n');
    // Both answers are valid base64 that also read as verbs we would answer locally.
    assert.equal(await c.command('STARTTLS'), '334 UGFzc3dvcmQ6\r\n');
    assert.equal(await c.command('DATA'), '235 2.7.0 Authentication successful\r\n');
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.deepEqual(up.commands.slice(1), ['AUTH LOGIN\r\n', 'STARTTLS\r\n', 'DATA\r\n', 'NOOP\r\n']);
  });
});

test('a failed AUTH (535) is relayed and the session goes on', T, async () => {
  let waiting = false;
  const respond = (line: string): string | null => {
    if (/^AUTH PLAIN$/i.test(line.trimEnd())) return (waiting = true), '334 ';
    if (waiting) return (waiting = false), '535 5.7.8 Error: authentication failed: bad credentials';
    if (/^AUTH PLAIN /i.test(line)) return '535-5.7.8 Error: authentication failed\r\n535 5.7.8 second line';
    return null;
  };
  await withRelay({ upstream: { respond } }, async ({ up, session }) => {
    const c = await session();
    assert.equal(await c.command('AUTH PLAIN AHVzZXIAd3Jvbmc='), '535-5.7.8 Error: authentication failed\r\n535 5.7.8 second line\r\n');
    assert.equal(await c.command('AUTH PLAIN'), '334 \r\n');
    assert.equal(await c.command('AHVzZXIAd3Jvbmc='), '535 5.7.8 Error: authentication failed: bad credentials\r\n');
    assert.equal(await c.command('MAIL FROM:<a@example.org>'), '250 2.0.0 Ok\r\n');
    assert.deepEqual(up.commands.slice(1), [
      'AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n',
      'AUTH PLAIN\r\n',
      'AHVzZXIAd3Jvbmc=\r\n',
      'MAIL FROM:<a@example.org>\r\n',
    ]);
  });
});

test('XFORWARD is forwarded verbatim, accepted or refused, and the reply relayed', T, async () => {
  const respond = (line: string): string | null => (/^XFORWARD NAME=refuse/.test(line) ? '550 5.7.0 Error: insufficient authorization' : null);
  await withRelay({ upstream: { respond } }, async ({ up, session }) => {
    const c = await session();
    const x1 = 'XFORWARD NAME=mx.example.org ADDR=192.0.2.7 PORT=25\r\n';
    const x2 = 'xforward PROTO=ESMTP HELO=client.example.org SOURCE=REMOTE\r\n';
    const x3 = 'XFORWARD NAME=refuse ADDR=192.0.2.9\r\n';
    for (const x of [x1, x2]) {
      c.send(x);
      assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
    }
    c.send(x3);
    assert.equal(await c.reply(), '550 5.7.0 Error: insufficient authorization\r\n');
    assert.deepEqual(up.commands.slice(1), [x1, x2, x3]);
  });
});

const XCLIENT_EHLO = ['250-upstream.test', '250-PIPELINING', '250-XCLIENT NAME ADDR PROTO HELO', '250 8BITMIME'];

/** The XCLIENT commands one upstream connection received. */
function xclientCommands(s: UpstreamSession): string[] {
  return s.commands.filter((l) => /^XCLIENT/i.test(l));
}

test('XClient: on sends XCLIENT ADDR=127.0.0.1 once, after an EHLO that offers it; the client sees neither the line nor its reply', T, async () => {
  await withRelay({ config: { XClient: 'on' }, upstream: { ehlo: XCLIENT_EHLO } }, async ({ up, connect }) => {
    const c = await connect();
    await c.reply();
    assert.equal(await c.command('EHLO client.test'), '250-smtp.passthru\r\n250-PIPELINING\r\n250 8BITMIME\r\n');
    assert.equal(await c.command('MAIL FROM:<a@example.org>'), '250 2.0.0 Ok\r\n');
    assert.match(await c.command('EHLO again.test'), /^250-smtp\.passthru\r\n/);
    assert.equal(await c.command('RSET'), '250 2.0.0 Ok\r\n');
    const s = up.sessions[0];
    assert.ok(s);
    assert.deepEqual(xclientCommands(s), ['XCLIENT ADDR=127.0.0.1\r\n']);
    assert.equal(s.commands[0], 'EHLO client.test\r\n');
    assert.equal(s.commands[1], 'XCLIENT ADDR=127.0.0.1\r\n');
    // Whatever follows (a repeated EHLO is allowed), the client's MAIL comes after it.
    assert.ok(s.commands.indexOf('MAIL FROM:<a@example.org>\r\n') > 1);
    // A second connection gets its own.
    const c2 = await connect();
    await c2.reply();
    await c2.command('EHLO client2.test');
    assert.equal(await c2.command('NOOP'), '250 2.0.0 Ok\r\n');
    const s2 = up.sessions[1];
    assert.ok(s2);
    assert.deepEqual(xclientCommands(s2), ['XCLIENT ADDR=127.0.0.1\r\n']);
  });
});

test('XClient: on sends XCLIENT after HELO even when it is not offered, and a refusal is not shown', T, async () => {
  const respond = (line: string): string | null => (line.startsWith('XCLIENT') ? '550 5.7.0 not authorized' : null);
  await withRelay({ config: { XClient: 'on' }, upstream: { respond } }, async ({ up, d, connect }) => {
    const c = await connect();
    await c.reply();
    assert.equal(await c.command('HELO client.test'), '250 smtp.passthru\r\n');
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.equal(await c.command('HELO client.test'), '250 smtp.passthru\r\n');
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.deepEqual(up.commands, ['HELO client.test\r\n', 'XCLIENT ADDR=127.0.0.1\r\n', 'NOOP\r\n', 'HELO client.test\r\n', 'NOOP\r\n']);
    await d.waitForLog(/server didn't accept XCLIENT/);
  });
});

test('without XClient nothing is sent, even when the upstream offers XCLIENT; an EHLO without the offer sends nothing either', T, async () => {
  await withRelay({ upstream: { ehlo: XCLIENT_EHLO } }, async ({ up, session }) => {
    const c = await session();
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.deepEqual(verbs(up.commands), ['EHLO', 'NOOP']);
  });
  await withRelay({ config: { XClient: 'on' } }, async ({ up, session }) => {
    const c = await session();
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.deepEqual(verbs(up.commands), ['EHLO', 'NOOP']);
  });
});

test('an upstream reply line too long for proxsmtpd (4224 bytes) is cut, not fatal: the rest of the reply and the session go on', T, async () => {
  const long = `250-${'x'.repeat(6000)}`;
  const respond = (line: string): string | null => (line.startsWith('NOOP long') ? `${long}\r\n250 2.0.0 end` : null);
  await withRelay({ upstream: { respond } }, async ({ session }) => {
    const c = await session();
    const r = await c.command('NOOP long');
    const [first, second, ...rest] = r.split('\r\n');
    assert.ok(first !== undefined && first.length < 4224 && first.length > 4000, `first line of ${first?.length} bytes`);
    assert.ok(long.startsWith(first));
    assert.equal(second, '250 2.0.0 end');
    assert.deepEqual(rest, ['']);
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
  });
});

test('replies with a TAB after the code (the last line of a reply) are relayed byte for byte and the message goes through (audit D6: 421)', T, async () => {
  const respond = (line: string): string | null => {
    if (line.startsWith('MAIL')) return '250\tok tab';
    if (line.startsWith('RCPT')) return '250-2.1.5 first\r\n250\t2.1.5 last';
    return null;
  };
  await withRelay({ upstream: { respond, afterData: () => '250\t2.0.0 queued, tab' } }, async ({ up, session }) => {
    const c = await session();
    assert.equal(await c.command('MAIL FROM:<a@example.org>'), '250\tok tab\r\n');
    assert.equal(await c.command('RCPT TO:<b@example.net>'), '250-2.1.5 first\r\n250\t2.1.5 last\r\n');
    assert.equal(await c.command('DATA'), '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
    assert.equal(await c.command('Subject: tab\r\n\r\nbody\r\n.'), '250\t2.0.0 queued, tab\r\n');
    assert.equal(up.messages[0]?.toString('latin1'), 'Subject: tab\r\n\r\nbody\r\n');
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
  });
});

test('a line that is not a reply (no code, or a code run on into text) is still a protocol error: 421 and close', T, async () => {
  for (const bad of ['hello there', '250x ok', '25\tshort']) {
    const respond = (line: string): string | null => (line.startsWith('NOOP') ? bad : null);
    await withRelay({ upstream: { respond } }, async ({ session }) => {
      const c = await session();
      assert.equal(await c.command('NOOP'), '421 4.4.0 Upstream server protocol error, try again later\r\n', bad);
      await c.waitClosed();
    });
  }
});
