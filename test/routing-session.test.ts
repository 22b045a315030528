// Issue 5, Moxy routing: the session in routed mode. Greeting and EHLO are ours; the first
// RCPT dials the recipient domain's destination, which then gets the client's EHLO name,
// XFORWARD of the real client, MAIL and RCPT, and answers the client verbatim.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lines, verbs } from './helpers/relay.js';
import { withRouted } from './helpers/routing.js';
import { waitFor } from './helpers/process.js';
import { existsSync, readFileSync } from 'node:fs';
import type { RawClient } from './helpers/client.js';

const T = { timeout: 20_000 };

/** The UTF-8 bytes of `text`, as the one-character-per-byte string RawClient sends. */
const utf8 = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');

async function message(c: RawClient, body = 'Subject: r\r\n\r\nbody\r\n'): Promise<string> {
  assert.match(await c.command('DATA'), /^354 /);
  c.send(`${body}.\r\n`);
  return c.reply();
}

const ROUTES = (at: (i: number) => string): string =>
  `# domain  destinations\nA.test ${at(0)}\n.b.test   ${at(1)}\nb.test ${at(2)}\nbücher.test ${at(2)}\n`;

test('greeting and EHLO are answered locally; the first RCPT dials the domain and relays verbatim', T, async () => {
  await withRouted({ routes: ROUTES, config: (_at, dir) => ({ RouteType: 'file', RouteDatabase: `${dir}/routes`, Banner: 'mx.example ESMTP routed' }) }, async ({ ups, d, session, at }) => {
    const c = await session(null);
    assert.deepEqual(lines(await c.command('EHLO client.test')), ['250-smtp.passthru', '250-PIPELINING', '250 8BITMIME']);
    assert.equal(ups[0]?.sessions.length, 0, 'no upstream before the first RCPT');
    assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
    assert.equal(ups[0]?.sessions.length, 0);
    assert.equal(await c.command('RCPT TO:<x@a.TEST>'), '250 2.1.5 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<reject@a.test>'), '550 5.1.1 <reject>: Recipient address rejected\r\n');
    assert.equal(await c.command('RCPT TO:<y@a.test>'), '250 2.1.5 Ok\r\n');
    assert.match(await message(c), /^250 2\.0\.0 Ok: queued as Q1\r\n$/);
    const up = ups[0]?.sessions[0];
    assert.deepEqual(up?.commands.slice(0, 3), [
      'EHLO client.test\r\n',
      'XFORWARD ADDR=127.0.0.1 HELO=client.test PROTO=ESMTP\r\n',
      'MAIL FROM:<s@example.org>\r\n',
    ]);
    assert.deepEqual(verbs(up?.commands ?? []), ['EHLO', 'XFORWARD', 'MAIL', 'RCPT', 'RCPT', 'RCPT', 'DATA']);
    assert.equal(up?.messages[0]?.toString(), 'Subject: r\r\n\r\nbody\r\n');
    await d.waitForLog(new RegExp(`rcpts=2 .*status=DELIVERED .*dest=${at(0)}`));
    assert.equal(ups[1]?.sessions.length, 0);
    assert.equal(ups[2]?.sessions.length, 0);
  });
});

test('the Banner is the greeting; HELO gets one line; commands out of order are refused locally', T, async () => {
  await withRouted({ routes: ROUTES, config: (_at, dir) => ({ RouteType: 'file', RouteDatabase: `${dir}/routes`, Banner: 'mx.example ESMTP routed' }) }, async ({ d, ups }) => {
    const { RawClient } = await import('./helpers/client.js');
    const c = await RawClient.connect(d.port);
    try {
      assert.equal(await c.reply(), '220 mx.example ESMTP routed\r\n');
      assert.match(await c.command('MAIL FROM:<s@example.org>'), /^503 5\.5\.1 /);
      assert.equal(await c.command('HELO old.client'), '250 smtp.passthru\r\n');
      assert.match(await c.command('RCPT TO:<x@a.test>'), /^503 5\.5\.1 /);
      assert.match(await c.command('DATA'), /^554 5\.5\.1 /);
      assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
      assert.match(await c.command('STARTTLS'), /^502 /);
      assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
      assert.match(await c.command('MAIL FROM:<s@example.org>'), /^503 5\.5\.1 Error: nested/);
      assert.equal(await c.command('RCPT TO:<x@a.test>'), '250 2.1.5 Ok\r\n');
      // A HELO client: HELO upstream, which offers no extensions, so no XFORWARD.
      assert.deepEqual(ups[0]?.sessions[0]?.commands.slice(0, 2), ['HELO old.client\r\n', 'MAIL FROM:<s@example.org>\r\n']);
      assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
      await c.waitClosed();
    } finally {
      c.close();
    }
  });
});

test('subdomain wildcard, exact entry over wildcard, IDN and case: each domain to its upstream', T, async () => {
  await withRouted({ routes: ROUTES }, async ({ ups, session }) => {
    const c = await session();
    const route = async (rcpt: string, up: number): Promise<void> => {
      const before = ups.map((u) => u.messages.length);
      assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
      assert.equal(await c.command(`RCPT TO:<${rcpt}>`), '250 2.1.5 Ok\r\n', rcpt);
      assert.match(await message(c), /^250 /);
      ups.forEach((u, i) => assert.equal(u.messages.length, before[i]! + (i === up ? 1 : 0), `${rcpt} to upstream ${up}`));
    };
    await route('x@deep.sub.B.test', 1);
    await route('x@b.test', 2);
    await route('x@sub.b.test', 1);
    await route('x@xn--bcher-kva.test', 2);
    // An SMTPUTF8 client sends UTF-8 bytes (RawClient sends a string's characters as bytes).
    await route(utf8('x@BÜCHER.test'), 2);
    // Not example.com itself for `.b.test` alone, and no route for an unknown domain.
    assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<x@a.test.evil>'), '550 5.7.1 Relaying denied\r\n');
  });
});

test('SMTPUTF8: a UTF-8 domain finds its route in either form; relayed and logged as the bytes the client sent', T, async () => {
  const routes = (at: (i: number) => string): string => `bücher.example ${at(0)}\nxn--mller-kva.example ${at(1)}\n`;
  await withRouted(
    {
      routes,
      config: (_at, dir) => ({ RouteType: 'file', RouteDatabase: `${dir}/routes`, LogType: 'filelog', LogFile: `${dir}/acct.log`, LogFormat: '%status %sender|%rcpts [%dhost]' }),
    },
    async ({ ups, session, dir, at }) => {
      const c = await session();
      assert.equal(await c.command(utf8('MAIL FROM:<sénder@e2e.test>')), '250 2.1.0 Ok\r\n');
      assert.equal(await c.command(utf8('RCPT TO:<jürgen@bücher.example>')), '250 2.1.5 Ok\r\n');
      assert.match(await message(c), /^250 /);
      // The U-label in the route file, the A-label here, and the reverse.
      assert.equal(await c.command('MAIL FROM:<s@e2e.test>'), '250 2.1.0 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<u@xn--bcher-kva.example>'), '250 2.1.5 Ok\r\n');
      assert.equal(await c.command('RSET'), '250 2.0.0 Ok\r\n');
      assert.equal(await c.command('MAIL FROM:<s@e2e.test>'), '250 2.1.0 Ok\r\n');
      assert.equal(await c.command(utf8('RCPT TO:<u@MÜLLER.example>')), '250 2.1.5 Ok\r\n');
      assert.equal(await c.command('RSET'), '250 2.0.0 Ok\r\n');
      // Bytes that are not UTF-8 are no domain at all.
      assert.equal(await c.command('MAIL FROM:<s@e2e.test>'), '250 2.1.0 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<u@b\xfccher.example>'), '550 5.7.1 Relaying denied\r\n');
      // The upstream got the client's bytes, not a re-encoding.
      const up = ups[0]?.sessions[0]?.commands ?? [];
      assert.ok(up.includes(utf8('MAIL FROM:<sénder@e2e.test>\r\n')), up.join(''));
      assert.ok(up.includes(utf8('RCPT TO:<jürgen@bücher.example>\r\n')), up.join(''));
      assert.equal(ups[1]?.sessions.length, 1);
      const log = await waitFor(() => (existsSync(`${dir}/acct.log`) ? readFileSync(`${dir}/acct.log`, 'utf8') : undefined), 'the accounting line');
      assert.equal(log, `delivered sénder@e2e.test|jürgen@bücher.example [${at(0)}]\n`);
    },
  );
});

test('a recipient of another destination list gets 452 4.5.3; a later transaction may route elsewhere', T, async () => {
  await withRouted({ routes: (at) => `a.test ${at(0)}\nalias.test ${at(0)}\nc.test ${at(2)}\n` }, async ({ ups, session }) => {
    const c = await session();
    assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<x@a.test>'), '250 2.1.5 Ok\r\n');
    // Same list, another domain: same upstream, lockstep.
    assert.equal(await c.command('RCPT TO:<y@alias.test>'), '250 2.1.5 Ok\r\n');
    const r = await c.command('RCPT TO:<z@c.test>');
    assert.match(r, /^452 4\.5\.3 <z@c\.test> .*separate transaction\r\n$/);
    assert.match(await message(c), /^250 /);
    assert.equal(ups[2]?.sessions.length, 0);
    // Next transaction: c.test. The first upstream is let go with QUIT.
    assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<z@c.test>'), '250 2.1.5 Ok\r\n');
    assert.match(await message(c), /^250 /);
    assert.equal(ups[2]?.messages.length, 1);
    assert.equal(ups[0]?.sessions[0]?.commands.at(-1), 'QUIT\r\n');
    // And back to a.test: a new connection there.
    assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<x@a.test>'), '250 2.1.5 Ok\r\n');
    assert.match(await message(c), /^250 /);
    assert.equal(ups[0]?.sessions.length, 2);
  });
});

test('the upstream connection is reused for the next transaction to the same list; RSET reaches it', T, async () => {
  await withRouted({ routes: (at) => `a.test ${at(0)}\n` }, async ({ ups, session }) => {
    const c = await session();
    for (let i = 0; i < 2; i++) {
      assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<x@a.test>'), '250 2.1.5 Ok\r\n');
      assert.match(await message(c), /^250 /);
    }
    assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<x@a.test>'), '250 2.1.5 Ok\r\n');
    assert.equal(await c.command('RSET'), '250 2.0.0 Ok\r\n');
    assert.equal(ups[0]?.sessions.length, 1);
    assert.deepEqual(verbs(ups[0]?.sessions[0]?.commands ?? []), [
      'EHLO', 'XFORWARD', 'MAIL', 'RCPT', 'DATA', 'XFORWARD', 'MAIL', 'RCPT', 'DATA', 'XFORWARD', 'MAIL', 'RCPT', 'RSET',
    ]);
  });
});

test('CutThrough on in routed mode: each message is cut through to its domain\'s upstream (its own 354); a refused DATA leaves the transaction open until RSET', T, async () => {
  let dataSeen = 0;
  await withRouted(
    {
      routes: (at) => `a.test ${at(0)}\nb.test ${at(1)}\n`,
      upstreams: [{ respond: (l) => (/^DATA/i.test(l) && ++dataSeen === 2 ? '554 5.7.1 no thanks' : null) }, {}, {}],
      config: (_at, dir) => ({ RouteType: 'file', RouteDatabase: `${dir}/routes`, CutThrough: 'on' }),
    },
    async ({ ups, session }) => {
      const c = await session();
      for (const domain of ['a.test', 'b.test']) {
        assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
        assert.equal(await c.command(`RCPT TO:<x@${domain}>`), '250 2.1.5 Ok\r\n');
        assert.equal(await c.command('DATA'), '354 End data with <CR><LF>.<CR><LF>\r\n');
        c.send(`Subject: ${domain}\r\n\r\nbody\r\n.\r\n`);
        assert.match(await c.reply(), /^250 2\.0\.0 Ok: queued as Q1\r\n$/);
      }
      assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<y@a.test>'), '250 2.1.5 Ok\r\n');
      assert.equal(await c.command('DATA'), '554 5.7.1 no thanks\r\n');
      assert.equal(await c.command('RSET'), '250 2.0.0 Ok\r\n');
      assert.deepEqual(ups[0]?.messages.map((m) => m.toString()), ['Subject: a.test\r\n\r\nbody\r\n']);
      assert.deepEqual(ups[1]?.messages.map((m) => m.toString()), ['Subject: b.test\r\n\r\nbody\r\n']);
      assert.deepEqual(verbs(ups[0]?.commands ?? []).slice(-5), ['XFORWARD', 'MAIL', 'RCPT', 'DATA', 'RSET']);
    },
  );
});

test("the upstream's refusal of MAIL is the RCPT's reply, verbatim; no XFORWARD when not offered", T, async () => {
  await withRouted(
    {
      upstreams: [{ ehlo: ['250-up.test', '250 8BITMIME'], respond: (l) => (/^MAIL/i.test(l) ? '553 5.7.1 <s@example.org>: Sender address rejected' : null) }],
      routes: (at) => `a.test ${at(0)}\n`,
    },
    async ({ ups, session }) => {
      const c = await session();
      assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<x@a.test>'), '553 5.7.1 <s@example.org>: Sender address rejected\r\n');
      assert.match(await c.command('DATA'), /^554 5\.5\.1 /);
      assert.deepEqual(verbs(ups[0]?.sessions[0]?.commands ?? []), ['EHLO', 'MAIL']);
    },
  );
});

test('nodb: every recipient goes to RouteDefault, the upstream decides', T, async () => {
  await withRouted({ config: (at) => ({ RouteType: 'nodb', RouteDefault: `${at(1)}` }) }, async ({ ups, session }) => {
    const c = await session();
    assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<x@anything.test>'), '250 2.1.5 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<reject@else.test>'), '550 5.1.1 <reject>: Recipient address rejected\r\n');
    assert.match(await message(c), /^250 /);
    assert.equal(ups[1]?.messages.length, 1);
  });
});

test('Moxy names are accepted: dbtype dbm is lmdb, nodb_dest, dbname', T, async () => {
  await withRouted({ config: (at) => ({ dbtype: 'nodb', nodb_dest: at(0) }) }, async ({ ups, session }) => {
    const c = await session();
    assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<x@anything.test>'), '250 2.1.5 Ok\r\n');
    assert.equal(ups[0]?.sessions.length, 1);
  });
});

test('filters and Header hold in routed mode; the filter SERVER is the chosen upstream', T, async () => {
  await withRouted(
    {
      routes: (at) => `a.test ${at(1)}\n`,
      config: (_at, dir) => ({
        RouteType: 'file',
        RouteDatabase: `${dir}/routes`,
        FilterCommand: `echo "$SERVER $SENDER $RECIPIENTS" > ${dir}/env; cat`,
        Header: 'X-Routed: yes',
      }),
    },
    async ({ ups, session, dir }) => {
      const c = await session();
      assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
      assert.equal(await c.command('RCPT TO:<x@a.test>'), '250 2.1.5 Ok\r\n');
      assert.match(await message(c), /^250 /);
      const { readFileSync } = await import('node:fs');
      assert.equal(readFileSync(`${dir}/env`, 'utf8'), '127.0.0.1 s@example.org x@a.test\n');
      assert.equal(ups[1]?.messages[0]?.toString(), 'Subject: r\r\nX-Routed: yes\r\n\r\nbody\r\n');
    },
  );
});
