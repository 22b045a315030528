// Issue 3, "Around the filter": the Header option on the filter's output (spec §16, with
// B9 fixed), filter output that would break DATA (lone dots, no final newline), KeepAlives
// while the client sends and while the filter runs (B6 fixed), and Skip: authenticated
// (spec §11). Real daemon, real /bin/sh filters.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { unstuff, verbs, type Relay } from './helpers/relay.js';
import { sendMessage, withFilter } from './helpers/filter.js';
import { startDaemon, tempDir } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream } from './helpers/upstream.js';
import { startSmtpServer } from './helpers/smtp-server.js';

const T = { timeout: 20_000 };

/** One message through a relay with this Header and FilterCommand; resolves what the upstream got. */
async function throughHeader(header: string, filter: string | undefined, wire: string): Promise<string> {
  let got = '';
  await withFilter({ config: () => ({ Header: header, ...(filter === undefined ? {} : { FilterCommand: filter }) }) }, async ({ session, up }) => {
    const c = await session();
    assert.match(await sendMessage(c, 'a@example.org', ['b@example.net'], wire), /^250 /);
    got = up.messages[0]?.toString('latin1') ?? '';
  });
  return got;
}

for (const [name, wire, expected] of [
  ['a CRLF message', 'Subject: a\r\nFrom: x@example.org\r\n\r\nbody\r\n\r\nmore\r\n', 'Subject: a\r\nFrom: x@example.org\r\nX-Filtered: yes\r\n\r\nbody\r\n\r\nmore\r\n'],
  ['an LF message (the data still ends at CRLF.CRLF)', 'Subject: a\nFrom: x@example.org\n\nbody\nlast\r\n', 'Subject: a\r\nFrom: x@example.org\r\nX-Filtered: yes\r\n\r\nbody\r\nlast\r\n'],
  ['a whitespace-only line ends the header', 'Subject: ws\r\n \r\nbody\r\n', 'Subject: ws\r\nX-Filtered: yes\r\n \r\nbody\r\n'],
  ['a tab-only line ends the header', 'Subject: tab\r\n\t\r\nbody\r\n', 'Subject: tab\r\nX-Filtered: yes\r\n\t\r\nbody\r\n'],
  ['a message with no blank line gets it at its end (B9 fixed)', 'Subject: nobody\r\nX-Other: 1\r\n', 'Subject: nobody\r\nX-Other: 1\r\nX-Filtered: yes\r\n'],
  ['a message that starts with the blank line', '\r\nbody only\r\n', 'X-Filtered: yes\r\n\r\nbody only\r\n'],
] as const) {
  test(`Header: placed before the first blank line: ${name}`, T, async () => {
    assert.equal(await throughHeader('X-Filtered: yes', 'cat', wire), expected);
  });
}

test("Header's %d names the zone as strftime's %Z does (CET, IST), as proxsmtpd wrote it, not Intl's GMT+1", T, async () => {
  for (const tz of ['Europe/Berlin', 'Asia/Kolkata']) {
    const up = await RecordingUpstream.start();
    const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, Header: 'X-Date: %d' }, ['-d', '4'], { wrap: (argv) => ['env', `TZ=${tz}`, ...argv] });
    try {
      const c = await RawClient.connect(d.port);
      assert.match(await c.reply(), /^220 /);
      assert.match(await c.command('EHLO client.test'), /^250/);
      assert.match(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: z\r\n\r\nbody\r\n'), /^250 /);
      const zone = execFileSync('date', ['+%Z'], { env: { ...process.env, TZ: tz }, encoding: 'utf8' }).trim();
      assert.match(up.messages[0]?.toString('latin1') ?? '', new RegExp(`^Subject: z\r\nX-Date: .* [+-]\\d{4} \\(${zone}\\)\r\n`));
      c.close();
    } finally {
      await d.stop();
      await up.close();
    }
  }
});

test('Header: a Received: header goes first, with %i %l %d expanded', T, async () => {
  const got = await throughHeader('Received: from %i by %l; %d', 'cat', 'Subject: r\r\n\r\nbody\r\n');
  assert.match(
    got,
    /^Received: from 127\.0\.0\.1 by 127\.0\.0\.1; (Sun|Mon|Tue|Wed|Thu|Fri|Sat) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d \d{4} [+-]\d{4} \([^)]+\)\r\nSubject: r\r\n\r\nbody\r\n$/,
  );
});

test('Header: escapes \\r \\n \\t and %% make a multi-line header; an unknown %X is dropped', T, async () => {
  const got = await throughHeader('X-A: 1\\r\\nX-B: %%i %i\\tTAB%q\\nX-C: 3', 'cat', 'Subject: e\r\n\r\nbody\r\n');
  assert.equal(got, 'Subject: e\r\nX-A: 1\r\nX-B: %i 127.0.0.1\tTAB\r\nX-C: 3\r\n\r\nbody\r\n');
});

test('Header: applied to the filter\'s output, never seen by the filter', T, async () => {
  await withFilter(
    { config: (sc) => ({ Header: 'X-Filtered: yes', FilterCommand: `tee ${sc.path('seen')} > /dev/null; printf 'Subject: new\\nX-Out: 1\\n\\nnew body\\n'` }) },
    async ({ session, up }, sc) => {
      const c = await session();
      assert.match(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: old\r\n\r\nold body\r\n'), /^250 /);
      assert.equal(sc.read('seen'), 'Subject: old\r\n\r\nold body\r\n');
      assert.equal(up.messages[0]?.toString('latin1'), 'Subject: new\r\nX-Out: 1\r\nX-Filtered: yes\r\n\r\nnew body\r\n');
    },
  );
});

/** Filter output that would end or break DATA if sent raw (spec §13.3 B8, §14 B7). */
const TRICKY_OUTPUT = ".first\\nSubject: dots\\n\\nbefore\\n.\\nafter\\n..two\\r\\n.\\r\\nend\\n.";
const TRICKY_MEANT = '.first\r\nSubject: dots\r\n\r\nbefore\r\n.\r\nafter\r\n..two\r\n.\r\nend\r\n.\r\n';

test('filter output with lone-dot lines and no final newline reaches the upstream stuffed and CRLF-terminated', T, async () => {
  await withFilter({ config: () => ({ FilterCommand: `cat > /dev/null; printf '${TRICKY_OUTPUT}'` }) }, async ({ session, up }) => {
    const c = await session();
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: x\r\n\r\nx\r\n'), '250 2.0.0 Ok: queued as Q1\r\n');
    const wire = up.messages[0];
    assert.ok(wire);
    assert.equal(wire.toString('latin1'), '..first\r\nSubject: dots\r\n\r\nbefore\r\n..\r\nafter\r\n...two\r\n..\r\nend\r\n..\r\n');
    assert.equal(unstuff(wire).toString('latin1'), TRICKY_MEANT);
    // One message, and the session is in step: nothing of it was taken for a command.
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.deepEqual(verbs(up.commands), ['EHLO', 'MAIL', 'RCPT', 'DATA', 'NOOP']);
  });
});

test('the same output through a real SMTP server (smtp-server) un-stuffs to the exact content, with the Header', T, async () => {
  const received: string[] = [];
  const server = await startSmtpServer(async (stream: Readable) => {
    const parts: Buffer[] = [];
    for await (const chunk of stream) parts.push(chunk as Buffer);
    received.push(Buffer.concat(parts).toString('latin1'));
    return `R${received.length}`;
  });
  const t = tempDir('smtpsift-filter-');
  const d = await startDaemon({
    OutAddress: `127.0.0.1:${server.port}`,
    FilterCommand: `cat > /dev/null; printf '${TRICKY_OUTPUT}'`,
    Header: 'X-Filtered: yes',
  });
  const c = await RawClient.connect(d.port);
  try {
    assert.match(await c.reply(), /^220 /);
    assert.match(await c.command('EHLO client.test'), /^250[ -]/);
    assert.match(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: x\r\n\r\nx\r\n'), /^250 .*R1\r\n$/);
    assert.deepEqual(received, [TRICKY_MEANT.replace('Subject: dots\r\n\r\n', 'Subject: dots\r\nX-Filtered: yes\r\n\r\n')]);
  } finally {
    c.close();
    await d.stop();
    await server.close();
    t.remove();
  }
});

/** MAIL, RCPT, DATA, then the message in two halves `pauseMs` apart; resolves the final reply. */
async function slowClient(c: RawClient, pauseMs: number): Promise<string> {
  assert.equal(await c.command('MAIL FROM:<a@example.org>'), '250 2.0.0 Ok\r\n');
  assert.equal(await c.command('RCPT TO:<b@example.net>'), '250 2.1.5 Ok\r\n');
  assert.equal(await c.command('DATA'), '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
  c.send('Subject: slow\r\n\r\nfirst half\r\n');
  await sleep(pauseMs);
  c.send('second half\r\n.\r\n');
  return c.reply(10_000);
}

/** The upstream's verbs, checked to be EHLO MAIL RCPT, some NOOPs, DATA; resolves the number of NOOPs. */
function noopsBeforeData({ up }: Relay): number {
  const v = verbs(up.commands);
  assert.deepEqual(v.slice(0, 3), ['EHLO', 'MAIL', 'RCPT']);
  assert.equal(v.at(-1), 'DATA', JSON.stringify(v));
  assert.ok(v.slice(3, -1).every((x) => x === 'NOOP'), JSON.stringify(v));
  return v.length - 4;
}

test('KeepAlives 1: a client pausing 2.5 s mid-DATA makes the upstream see NOOPs before DATA; the client sees none of their replies', T, async () => {
  await withFilter({ config: () => ({ KeepAlives: '1', FilterCommand: 'cat' }) }, async (r) => {
    const c = await r.session();
    assert.equal(await slowClient(c, 2500), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.ok(noopsBeforeData(r) >= 2, JSON.stringify(r.up.commands));
    assert.equal(r.up.messages[0]?.toString('latin1'), 'Subject: slow\r\n\r\nfirst half\r\nsecond half\r\n');
    // -d 4 shows them as proxsmtpd did (audit D7): the NOOP sent, the reply received.
    assert.match(r.d.log(), /: SERVER > NOOP\n[^\n]*: SERVER < 250 2\.0\.0 Ok\n/);
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n', 'client and upstream still in step');
  });
});

test('KeepAlives 1: a filter that runs 3 s makes the upstream see NOOPs before DATA (B6 fixed)', T, async () => {
  await withFilter({ config: () => ({ KeepAlives: '1', FilterCommand: 'sleep 3; cat' }) }, async (r) => {
    const c = await r.session();
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: slow filter\r\n\r\nbody\r\n'), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.ok(noopsBeforeData(r) >= 2, JSON.stringify(r.up.commands));
    assert.equal(r.up.messages[0]?.toString('latin1'), 'Subject: slow filter\r\n\r\nbody\r\n');
  });
});

test('KeepAlives 1 and a slow filter that rejects: NOOPs, then RSET, and the session goes on', T, async () => {
  await withFilter({ config: () => ({ KeepAlives: '1', FilterCommand: "sleep 2.5; echo '554 5.7.1 no' >&2; exit 1" }) }, async ({ session, up }) => {
    const c = await session();
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: x\r\n\r\nx\r\n'), '554 5.7.1 no\r\n');
    const v = verbs(up.commands);
    assert.equal(v.at(-1), 'RSET', JSON.stringify(v));
    assert.ok(v.filter((x) => x === 'NOOP').length >= 2, JSON.stringify(v));
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
  });
});

test('no KeepAlives: neither a slow client nor a slow filter makes any NOOP', T, async () => {
  await withFilter({ config: () => ({ FilterCommand: 'sleep 2; cat' }) }, async (r) => {
    const c = await r.session();
    assert.equal(await slowClient(c, 2000), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(noopsBeforeData(r), 0);
  });
});

// AUTH as the upstream sees it: PLAIN with an initial response, LOGIN in three steps; the
// password "good" succeeds, anything else fails.
const PLAIN_GOOD = Buffer.from('\0user\0good').toString('base64');
const PLAIN_BAD = Buffer.from('\0user\0bad').toString('base64');
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const authUpstream = {
  respond(line: string): string | null {
    const t = line.trim();
    const plain = /^AUTH PLAIN (\S+)$/i.exec(t);
    if (plain) return plain[1] === PLAIN_GOOD ? '235 2.7.0 Authentication successful' : '535 5.7.8 Authentication failed';
    if (/^AUTH LOGIN$/i.test(t)) return '334 VXNlcm5hbWU6';
    if (t === b64('user')) return '334 UGFzc3dvcmQ6';
    if (t === b64('good')) return '235 2.7.0 Authentication successful';
    if (t === b64('bad')) return '535 5.7.8 Authentication failed';
    return null;
  },
};

/** Skip on or off; a filter that rejects everything and leaves a mark; a Header. */
function withAuthRelay(skip: boolean, fn: (r: Relay, ran: () => boolean) => Promise<void>, extra: Record<string, string> = {}): Promise<void> {
  return withFilter(
    {
      upstream: authUpstream,
      config: (sc) => ({
        ...(skip ? { Skip: 'authenticated' } : {}),
        FilterCommand: `touch ${sc.path('ran')}; cat > /dev/null; echo '554 5.7.1 filtered' >&2; exit 1`,
        Header: 'X-Filtered: yes',
        ...extra,
      }),
    },
    (r, sc) => fn(r, () => existsSync(sc.path('ran'))),
  );
}

const PLAIN_MSG = 'Subject: authenticated\r\n\r\n..dot\r\nbody\r\n';

test('Skip: authenticated: after AUTH PLAIN answered 235, the message passes with no filter run and no Header', T, async () => {
  await withAuthRelay(true, async ({ session, up }, ran) => {
    const c = await session();
    assert.equal(await c.command(`AUTH PLAIN ${PLAIN_GOOD}`), '235 2.7.0 Authentication successful\r\n');
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], PLAIN_MSG), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(up.messages[0]?.toString('latin1'), PLAIN_MSG);
    assert.equal(ran(), false, 'the filter did not run');
    // Authenticated for the rest of the connection (spec §11): the next message too.
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], PLAIN_MSG), '250 2.0.0 Ok: queued as Q2\r\n');
    assert.equal(ran(), false);
  });
});

test('Skip: authenticated: a three-step AUTH LOGIN answered 235 skips too', T, async () => {
  await withAuthRelay(true, async ({ session, up }, ran) => {
    const c = await session();
    assert.equal(await c.command('AUTH LOGIN'), '334 VXNlcm5hbWU6\r\n');
    assert.equal(await c.command(b64('user')), '334 UGFzc3dvcmQ6\r\n');
    assert.equal(await c.command(b64('good')), '235 2.7.0 Authentication successful\r\n');
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], PLAIN_MSG), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(up.messages[0]?.toString('latin1'), PLAIN_MSG);
    assert.equal(ran(), false);
  });
});

test('Skip: authenticated: a failed AUTH (535) does not skip: the filter runs and decides', T, async () => {
  await withAuthRelay(true, async ({ session, up }, ran) => {
    const c = await session();
    assert.equal(await c.command(`AUTH PLAIN ${PLAIN_BAD}`), '535 5.7.8 Authentication failed\r\n');
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], PLAIN_MSG), '554 5.7.1 filtered\r\n');
    assert.equal(ran(), true);
    assert.equal(up.messages.length, 0);
    // A failed LOGIN neither.
    assert.equal(await c.command('AUTH LOGIN'), '334 VXNlcm5hbWU6\r\n');
    assert.equal(await c.command(b64('user')), '334 UGFzc3dvcmQ6\r\n');
    assert.equal(await c.command(b64('bad')), '535 5.7.8 Authentication failed\r\n');
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], PLAIN_MSG), '554 5.7.1 filtered\r\n');
  });
});

test('without Skip, authenticated mail is filtered like any other', T, async () => {
  await withAuthRelay(false, async ({ session, up }, ran) => {
    const c = await session();
    assert.equal(await c.command(`AUTH PLAIN ${PLAIN_GOOD}`), '235 2.7.0 Authentication successful\r\n');
    assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], PLAIN_MSG), '554 5.7.1 filtered\r\n');
    assert.equal(ran(), true);
    assert.equal(up.messages.length, 0);
  });
});

test('Skip: authenticated with FilterType reject: the authenticated client is let through, others get FilterReject', T, async () => {
  await withAuthRelay(
    true,
    async ({ session, up }, ran) => {
      const other = await session();
      assert.equal(await other.command('MAIL FROM:<a@example.org>'), '530 Email Rejected\r\n');
      const c = await session();
      assert.equal(await c.command(`AUTH PLAIN ${PLAIN_GOOD}`), '235 2.7.0 Authentication successful\r\n');
      assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], PLAIN_MSG), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.deepEqual(up.messages.map((m) => m.toString('latin1')), [PLAIN_MSG]);
      assert.equal(ran(), false);
    },
    { FilterType: 'reject' },
  );
});

test('Skip: authenticated with CutThrough on: the authenticated client\'s mail is relayed as it arrives (the upstream\'s 354), unfiltered, no Header; others are filtered', T, async () => {
  await withAuthRelay(
    true,
    async ({ session, up }, ran) => {
      const other = await session();
      // Not authenticated: received whole for the filter (our 354), which refuses it.
      assert.equal(await sendMessage(other, 'a@example.org', ['b@example.net'], PLAIN_MSG), '554 5.7.1 filtered\r\n');
      assert.equal(ran(), true);
      const c = await session();
      assert.equal(await c.command(`AUTH PLAIN ${PLAIN_GOOD}`), '235 2.7.0 Authentication successful\r\n');
      assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
      assert.match(await c.command('RCPT TO:<b@example.net>'), /^250 /);
      assert.equal(await c.command('DATA'), '354 End data with <CR><LF>.<CR><LF>\r\n');
      c.send(`${PLAIN_MSG}.\r\n`);
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.deepEqual(up.messages.map((m) => m.toString('latin1')), [PLAIN_MSG]);
    },
    { CutThrough: 'on' },
  );
});

/** Stuffs CRLF lines as an upstream must receive them: a line starting with a dot gets one more. */
const stuff = (crlf: string): string => crlf.replace(/(^|\r\n)\./g, '$1..');

test('filter output read in large chunks: a blank line, a lone dot or a CRLF split across the read boundary (256 KiB, and around it) stays intact', { timeout: 30_000 }, async () => {
  const K = 256 * 1024;
  const cases: Array<[string, string, string]> = [];
  for (let s = -3; s <= 2; s++) {
    const pad = 'X-Pad: ' + 'p'.repeat(K + s - 9);
    cases.push([`hdr${s + 3}`, `${pad}\r\n\r\nbody\r\n`, `${pad}\r\nX-Filtered: yes\r\n\r\nbody\r\n`]);
    const q = 'q'.repeat(K + s - 16);
    cases.push([`dot${s + 3}`, `Subject: b\r\n\r\n${q}\r\n.\r\n.x\r\nend\r\n`, `Subject: b\r\nX-Filtered: yes\r\n\r\n${q}\r\n.\r\n.x\r\nend\r\n`]);
    cases.push([`lf${s + 3}`, `Subject: c\n\n${q}xx\n.\n.x\r\nend`, `Subject: c\r\nX-Filtered: yes\r\n\r\n${q}xx\r\n.\r\n.x\r\nend\r\n`]);
  }
  await withFilter(
    {
      config: (sc) => {
        for (const [name, output] of cases) writeFileSync(sc.path(`${name}.eml`), output, 'latin1');
        return { FilterCommand: `cat > /dev/null; cat ${sc.dir}/"\${SENDER%%@*}".eml`, Header: 'X-Filtered: yes' };
      },
    },
    async ({ session, up }) => {
      const c = await session();
      for (const [name, , expected] of cases) {
        assert.match(await sendMessage(c, `${name}@example.org`, ['b@example.net'], 'Subject: in\r\n\r\nx\r\n'), /^250 /, name);
        const wire = up.messages.at(-1)?.toString('latin1') ?? '';
        assert.ok(wire === stuff(expected), `${name}: the upstream got something else around byte ${K}`);
      }
    },
  );
});


test('Header in file mode: applied to the file as the filter left it', T, async () => {
  await withFilter(
    { config: () => ({ FilterType: 'file', Header: 'X-Filtered: yes', FilterCommand: `printf 'X-Edited: 1\\n' >> "$EMAIL"` }) },
    async ({ session, up }) => {
      const c = await session();
      // No blank line: the header and the filter's addition both go at the end.
      assert.match(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: f\r\n'), /^250 /);
      assert.equal(up.messages[0]?.toString('latin1'), 'Subject: f\r\nX-Edited: 1\r\nX-Filtered: yes\r\n');
    },
  );
});
