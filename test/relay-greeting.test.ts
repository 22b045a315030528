// Issue 2, the relay: the greeting and the HELO/EHLO reply the client sees (spec §6, §7).

import { SPEC_EHLO } from './helpers/upstream.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withRelay } from './helpers/relay.js';

const T = { timeout: 15_000 };

test('a single-line 220 greeting becomes 220 smtp.passthru', T, async () => {
  await withRelay({ upstream: { greeting: '220 upstream.test ESMTP secret-banner' } }, async ({ connect }) => {
    const c = await connect();
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
  });
});

test('a bare "220" greeting is rewritten too', T, async () => {
  await withRelay({ upstream: { greeting: '220' } }, async ({ connect }) => {
    const c = await connect();
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
  });
});

test('a greeting with a TAB after 220 is rewritten too, and the session goes on (audit D6: it was a 421)', T, async () => {
  await withRelay({ upstream: { greeting: '220\tupstream.test tab' } }, async ({ up, connect }) => {
    const c = await connect();
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.match(await c.command('EHLO client.test'), /^250-smtp\.passthru\r\n/);
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.equal(up.commands.at(-1), 'NOOP\r\n');
  });
});

test('ServerName replaces the host in the greeting, the EHLO and the HELO reply', T, async () => {
  await withRelay({ config: { ServerName: 'mx1.example.org' } }, async ({ connect }) => {
    const c = await connect();
    assert.equal(await c.reply(), '220 mx1.example.org\r\n');
    assert.match(await c.command('EHLO client.test'), /^250-mx1\.example\.org\r\n250-PIPELINING\r\n/);
    assert.equal(await c.command('HELO client.test'), '250 mx1.example.org\r\n');
  });
});

test('a multi-line 220 greeting is relayed verbatim', T, async () => {
  const greeting = '220-upstream.test ESMTP first\r\n220-second line\r\n220 third line';
  await withRelay({ upstream: { greeting } }, async ({ connect }) => {
    const c = await connect();
    assert.equal(await c.reply(), `${greeting}\r\n`);
    // And the session works after it.
    assert.match(await c.command('EHLO client.test'), /^250-smtp\.passthru\r\n/);
  });
});

test('a non-220 greeting is relayed verbatim and the session stays open', T, async () => {
  await withRelay({ upstream: { greeting: '554 5.3.2 upstream.test no service for you' } }, async ({ up, connect }) => {
    const c = await connect();
    assert.equal(await c.reply(), '554 5.3.2 upstream.test no service for you\r\n');
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.equal(up.commands.at(-1), 'NOOP\r\n');
    assert.equal(c.isClosed, false);
  });
});

test('EHLO is forwarded verbatim and the reply rewritten: host line, hidden extensions, order kept', T, async () => {
  await withRelay({}, async ({ up, connect }) => {
    const c = await connect();
    await c.reply();
    const r = await c.command('ehlo Client.Test');
    assert.equal(
      r,
      '250-smtp.passthru\r\n' +
        '250-PIPELINING\r\n' +
        '250-SIZE 104857600\r\n' +
        '250-AUTH PLAIN LOGIN\r\n' +
        '250-8BITMIME\r\n' +
        '250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n',
    );
    assert.deepEqual(up.commands, ['ehlo Client.Test\r\n']);
  });
});

test('every extension proxsmtpd hides is removed, case-insensitively, and a removed last line gives 250 XFILTERED', T, async () => {
  const ehlo = [
    '250-upstream.test says hi',
    '250-STARTTLS',
    '250-SIZE 1000',
    '250-binarymime',
    '250-CHECKPOINT',
    '250-XCLIENT NAME ADDR PROTO HELO',
    '250-STARTTLSX keep-me',
    '250-XEXCH50',
    '250-DSN',
    '250-ENHANCEDSTATUSCODES',
    '250-SMTPUTF8',
    '250-VRFY',
    '250-ETRN',
    '250 Chunking',
  ];
  await withRelay({ upstream: { ehlo } }, async ({ connect }) => {
    const c = await connect();
    await c.reply();
    assert.equal(
      await c.command('EHLO client.test'),
      '250-smtp.passthru\r\n' +
        '250-SIZE 1000\r\n' +
        '250-STARTTLSX keep-me\r\n' +
        '250-DSN\r\n' +
        '250-ENHANCEDSTATUSCODES\r\n' +
        '250-SMTPUTF8\r\n' +
        '250-VRFY\r\n' +
        '250-ETRN\r\n' +
        '250 XFILTERED\r\n',
    );
  });
});

test('the spec §7 example list is rewritten as proxsmtpd does, PIPELINING aside', T, async () => {
  const ehlo = SPEC_EHLO;
  await withRelay({ upstream: { ehlo } }, async ({ connect }) => {
    const c = await connect();
    await c.reply();
    assert.equal(
      await c.command('EHLO client.test'),
      '250-smtp.passthru\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n250-VRFY\r\n250-ETRN\r\n' +
        '250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n' +
        '250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n',
    );
  });
});

test('Pipelining: off hides PIPELINING (XFILTERED when it was the last line)', T, async () => {
  await withRelay({ config: { Pipelining: 'off' } }, async ({ connect }) => {
    const c = await connect();
    await c.reply();
    const r = await c.command('EHLO client.test');
    assert.match(r, /^250-smtp\.passthru\r\n250-SIZE 104857600\r\n/);
    assert.doesNotMatch(r, /PIPELINING/);
  });
  await withRelay(
    { config: { Pipelining: 'off' }, upstream: { ehlo: ['250-upstream.test', '250-8BITMIME', '250 PIPELINING'] } },
    async ({ connect }) => {
      const c = await connect();
      await c.reply();
      assert.equal(await c.command('EHLO client.test'), '250-smtp.passthru\r\n250-8BITMIME\r\n250 XFILTERED\r\n');
    },
  );
});

test('PIPELINING as the last line is kept when Pipelining is on', T, async () => {
  await withRelay({ upstream: { ehlo: ['250-upstream.test', '250-8BITMIME', '250 PIPELINING'] } }, async ({ connect }) => {
    const c = await connect();
    await c.reply();
    assert.equal(await c.command('EHLO client.test'), '250-smtp.passthru\r\n250-8BITMIME\r\n250 PIPELINING\r\n');
  });
});

test('an EHLO reply of only the host line becomes 250 smtp.passthru', T, async () => {
  await withRelay({ upstream: { ehlo: ['250 upstream.test at your service'] } }, async ({ connect }) => {
    const c = await connect();
    await c.reply();
    assert.equal(await c.command('EHLO client.test'), '250 smtp.passthru\r\n');
  });
});

test('HELO is forwarded verbatim and answered 250 ServerName', T, async () => {
  await withRelay({}, async ({ up, connect }) => {
    const c = await connect();
    await c.reply();
    assert.equal(await c.command('HELO client.test'), '250 smtp.passthru\r\n');
    assert.equal(await c.command('helo  other.test'), '250 smtp.passthru\r\n');
    assert.deepEqual(up.commands, ['HELO client.test\r\n', 'helo  other.test\r\n']);
  });
});

test('an EHLO or HELO rejection is relayed unchanged, multi-line too', T, async () => {
  const respond = (line: string): string | null => {
    if (/^EHLO bad/i.test(line)) return '501-5.5.4 Syntax: EHLO hostname\r\n501 5.5.4 and a second line';
    if (/^HELO bad/i.test(line)) return '550 5.7.1 go away';
    return null;
  };
  await withRelay({ upstream: { respond } }, async ({ up, connect }) => {
    const c = await connect();
    await c.reply();
    assert.equal(await c.command('EHLO bad'), '501-5.5.4 Syntax: EHLO hostname\r\n501 5.5.4 and a second line\r\n');
    assert.equal(await c.command('HELO bad'), '550 5.7.1 go away\r\n');
    // The session goes on.
    assert.match(await c.command('EHLO good.test'), /^250-smtp\.passthru\r\n/);
    assert.deepEqual(up.commands, ['EHLO bad\r\n', 'HELO bad\r\n', 'EHLO good.test\r\n']);
  });
});
