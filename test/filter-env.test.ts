// Issue 3, "The filter run": the filter's environment and descriptors, as proxsmtpd(8)
// FILTER SCRIPTS and spec §13.2 say. Each test runs the real daemon with a real /bin/sh
// filter that records what it was given; unknown values must be absent, not empty, and
// client-supplied values must reach the filter only as data.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './helpers/daemon.js';
import { parseEnv0, sendMessage, withFilter } from './helpers/filter.js';
import type { RawClient } from './helpers/client.js';

const T = { timeout: 20_000 };
const BODY = 'Subject: env\r\n\r\nbody\r\n';
/** Variables of ours that the daemon's own environment has here: the filter must not see them when unknown. */
const STALE = { SENDER: 'stale-sender', RECIPIENTS: 'stale', REMOTE: 'stale-remote', REMOTE_HELO: 'stale-helo', EMAIL: 'stale-email' };
const INHERITED = 'SMTPSIFT_TEST_INHERITED';

/** Runs `fn` with the daemon started under an environment that has INHERITED and the STALE values. */
async function withDaemonEnv(fn: () => Promise<void>): Promise<void> {
  const saved = new Map<string, string | undefined>();
  const extra: Record<string, string> = { ...STALE, [INHERITED]: 'from the daemon, with spaces; and $dollar' };
  for (const [k, v] of Object.entries(extra)) {
    saved.set(k, process.env[k]);
    process.env[k] = v;
  }
  try {
    await fn();
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** The environment the filter of the last message saw (it writes `env -0` to `env`). */
function lastEnv(read: (n: string) => string | undefined): Map<string, string> {
  const text = read('env');
  assert.ok(text !== undefined, 'the filter ran');
  return parseEnv0(text);
}

test('SENDER, RECIPIENTS (accepted only, one per line, no trailing newline), CLIENT, SERVER, TMPDIR; the daemon environment is inherited; unknowns absent', T, async () => {
  await withDaemonEnv(() =>
    withFilter({ config: (sc) => ({ FilterCommand: `env -0 > ${sc.path('env')}; cat` }) }, async ({ session, d, up }, sc) => {
      const c = await session();
      const r = await sendMessage(c, 'alice@example.org', ['bob@example.net', 'reject-me@example.net', 'carol@example.net'], BODY);
      assert.equal(r, '250 2.0.0 Ok: queued as Q1\r\n');
      const env = lastEnv(sc.read);
      assert.equal(env.get('SENDER'), 'alice@example.org');
      assert.equal(env.get('RECIPIENTS'), 'bob@example.net\ncarol@example.net');
      assert.equal(env.get('CLIENT'), '127.0.0.1');
      assert.equal(env.get('SERVER'), '127.0.0.1');
      assert.equal(env.get('TMPDIR'), d.spoolDir, 'TMPDIR is TempDirectory as configured');
      assert.equal(env.get(INHERITED), 'from the daemon, with spaces; and $dollar');
      for (const name of ['REMOTE', 'REMOTE_HELO', 'EMAIL']) assert.equal(env.has(name), false, `${name} must be absent`);
      assert.equal(up.messages.length, 1);

      // The next message of the session: the null sender, one recipient.
      const r2 = await sendMessage(c, '', ['dave@example.net'], BODY);
      assert.equal(r2, '250 2.0.0 Ok: queued as Q2\r\n');
      const env2 = lastEnv(sc.read);
      assert.equal(env2.get('SENDER'), '<>');
      assert.equal(env2.get('RECIPIENTS'), 'dave@example.net');
    }),
  );
});

test('a sender the upstream refused is not SENDER; the upstream refusing MAIL leaves SENDER absent even though the daemon had one', T, async () => {
  await withDaemonEnv(() =>
    withFilter(
      {
        upstream: { respond: (line) => (/^MAIL FROM:<refused@/i.test(line) ? '550 5.7.1 no' : null) },
        config: (sc) => ({ FilterCommand: `env -0 > ${sc.path('env')}; cat` }),
      },
      async ({ session }, sc) => {
        const c = await session();
        assert.match(await c.command('MAIL FROM:<refused@example.org>'), /^550 /);
        // A DATA without MAIL is the upstream's business: the relay forwards RCPT and it is refused or not.
        assert.equal(await c.command('RCPT TO:<x@example.net>'), '250 2.1.5 Ok\r\n');
        assert.equal(await c.command('DATA'), '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
        c.send(`${BODY}.\r\n`);
        assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
        const env = lastEnv(sc.read);
        assert.equal(env.has('SENDER'), false, 'SENDER absent');
        assert.equal(env.get('RECIPIENTS'), 'x@example.net');
      },
    ),
  );
});

/** Sends the XFORWARD commands (each must get the upstream's reply), then one message; resolves the filter's env. */
async function afterXforward(c: RawClient, commands: readonly string[], expect: RegExp, read: (n: string) => string | undefined): Promise<Map<string, string>> {
  for (const x of commands) assert.match(await c.command(x), expect);
  assert.match(await sendMessage(c, 'a@example.org', ['b@example.net'], BODY), /^250 /);
  return lastEnv(read);
}

for (const [name, commands] of [
  ['two commands, Postfix order', ['XFORWARD NAME=mx.example.org ADDR=192.0.2.7 PORT=25', 'XFORWARD PROTO=ESMTP HELO=client.example.org SOURCE=REMOTE']],
  ['two commands, HELO first', ['XFORWARD HELO=client.example.org PROTO=ESMTP', 'XFORWARD ADDR=192.0.2.7 NAME=mx.example.org']],
  ['one command, ADDR then HELO (proxsmtpd lost HELO: B3)', ['XFORWARD ADDR=192.0.2.7 HELO=client.example.org']],
  ['one command, HELO then ADDR last (proxsmtpd kept the CRLF: B4)', ['XFORWARD HELO=client.example.org ADDR=192.0.2.7']],
] as const) {
  test(`REMOTE and REMOTE_HELO from an accepted XFORWARD: ${name}`, T, async () => {
    await withFilter({ config: (sc) => ({ FilterCommand: `env -0 > ${sc.path('env')}; cat` }) }, async ({ session, up }, sc) => {
      const c = await session();
      const env = await afterXforward(c, commands, /^250 /, sc.read);
      assert.equal(env.get('REMOTE'), '192.0.2.7');
      assert.equal(env.get('REMOTE_HELO'), 'client.example.org');
      assert.deepEqual(
        up.commands.filter((l) => /^XFORWARD/i.test(l)),
        commands.map((x) => `${x}\r\n`),
        'XFORWARD relayed verbatim',
      );
      // Cleared with the envelope (spec §10.2): the next message without XFORWARD has neither.
      assert.match(await sendMessage(c, 'a@example.org', ['b@example.net'], BODY), /^250 /);
      const next = lastEnv(sc.read);
      assert.equal(next.has('REMOTE'), false);
      assert.equal(next.has('REMOTE_HELO'), false);
    });
  });
}

test('REMOTE and REMOTE_HELO absent when the upstream refuses XFORWARD (even with the daemon having them)', T, async () => {
  await withDaemonEnv(() =>
    withFilter(
      {
        upstream: { respond: (line) => (/^XFORWARD/i.test(line) ? '550 5.5.1 XFORWARD not allowed' : null) },
        config: (sc) => ({ FilterCommand: `env -0 > ${sc.path('env')}; cat` }),
      },
      async ({ session }, sc) => {
        const c = await session();
        const env = await afterXforward(c, ['XFORWARD ADDR=192.0.2.7 HELO=client.example.org'], /^550 5\.5\.1 /, sc.read);
        assert.equal(env.has('REMOTE'), false);
        assert.equal(env.has('REMOTE_HELO'), false);
      },
    ),
  );
});

test('file mode: EMAIL names the message, inside TempDirectory; pipe mode has none (above)', T, async () => {
  await withFilter(
    { config: (sc) => ({ FilterType: 'file', FilterCommand: `env -0 > ${sc.path('env')}; cp "$EMAIL" ${sc.path('copy')}` }) },
    async ({ session, d }, sc) => {
      const c = await session();
      assert.match(await sendMessage(c, 'a@example.org', ['b@example.net'], BODY), /^250 /);
      const env = lastEnv(sc.read);
      const email = env.get('EMAIL');
      assert.ok(email !== undefined, 'EMAIL set');
      assert.ok(email.startsWith(`${d.spoolDir}/`), `EMAIL ${email} is under TempDirectory`);
      assert.equal(sc.read('copy'), BODY);
      assert.equal(existsSync(email), false, 'the message file is removed afterwards');
    },
  );
});

test('descriptors 3 and up are closed in the filter', T, async () => {
  // The filter's shell becomes ls, so /proc/self is the very process the daemon started;
  // its listing is the message. The only descriptor above 2 allowed is ls's own handle
  // on the directory it lists.
  await withFilter({ config: () => ({ FilterCommand: 'exec ls -l /proc/self/fd' }) }, async ({ session, up }) => {
    const c = await session();
    assert.match(await sendMessage(c, 'a@example.org', ['b@example.net'], BODY), /^250 /);
    const listing = up.messages[0]?.toString('latin1') ?? '';
    const fds = listing
      .split('\r\n')
      .map((l) => /\s(\d+) -> (.*)$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m): [number, string] => [Number(m[1]), m[2] ?? '']);
    assert.deepEqual(
      fds.filter(([n]) => n <= 2).map(([n]) => n),
      [0, 1, 2],
      listing,
    );
    for (const [n, target] of fds.filter(([fd]) => fd > 2)) {
      assert.match(target, /^\/proc\/\d+\/fd$/, `descriptor ${n} -> ${target} leaked into the filter`);
    }
  });
});

test('a hostile sender, recipient and XFORWARD HELO the upstream accepted are passed only as data: nothing is executed', T, async () => {
  await withFilter({ config: (sc) => ({ FilterCommand: `env -0 > ${sc.path('env')}; cat` }) }, async ({ session }, sc) => {
    const pwned = sc.path('pwned');
    const sender = `$(touch\${IFS}${pwned})@evil`;
    const rcpt = `\`touch\${IFS}${pwned}2\`;x@evil`;
    const helo = `a;touch\${IFS}${pwned}3`;
    const c = await session();
    assert.equal(await c.command(`XFORWARD ADDR=192.0.2.9 HELO=${helo}`), '250 2.0.0 Ok\r\n');
    assert.equal(await sendMessage(c, sender, [rcpt], BODY), '250 2.0.0 Ok: queued as Q1\r\n');
    const env = lastEnv(sc.read);
    assert.equal(env.get('SENDER'), sender);
    assert.equal(env.get('RECIPIENTS'), rcpt);
    assert.equal(env.get('REMOTE_HELO'), helo);
    for (const p of [pwned, `${pwned}2`, `${pwned}3`]) assert.equal(existsSync(p), false, `${p} was created: client data was executed`);
  });
});


test('an internationalised (UTF-8) sender and recipient reach the filter as the same UTF-8 bytes', T, async () => {
  await withFilter({ config: (sc) => ({ FilterCommand: `env -0 > ${sc.path('env')}; cat` }) }, async ({ session }, sc) => {
    const c = await session();
    // The wire carries UTF-8 bytes; RawClient writes strings as latin1, so encode first.
    const from = Buffer.from('jösé@exämple.org', 'utf8').toString('latin1');
    const to = Buffer.from('пользователь@пример.рф', 'utf8').toString('latin1');
    assert.equal(await sendMessage(c, from, [to], BODY), '250 2.0.0 Ok: queued as Q1\r\n');
    const env = parseEnv0(Buffer.from(sc.read('env') ?? '', 'latin1').toString('utf8'));
    assert.equal(env.get('SENDER'), 'jösé@exämple.org');
    assert.equal(env.get('RECIPIENTS'), 'пользователь@пример.рф');
  });
});

test('a sender and recipient in bytes that are not UTF-8 (Latin-1) reach the filter as the same bytes', T, async () => {
  await withFilter({ config: (sc) => ({ FilterCommand: `env -0 > ${sc.path('env')}; cat` }) }, async ({ session }, sc) => {
    const c = await session();
    // RawClient writes strings as latin1: these are the bytes E9 and FC on the wire.
    assert.equal(await sendMessage(c, 'jos\xe9@example.org', ['m\xfcller@example.net'], BODY), '250 2.0.0 Ok: queued as Q1\r\n');
    const env = lastEnv((n) => sc.read(n));
    assert.equal(env.get('SENDER'), 'jos\xe9@example.org');
    assert.equal(env.get('RECIPIENTS'), 'm\xfcller@example.net');
  });
});

// Unix sockets, as proxsmtpd 1.10 was seen to do it (audit D10, checked against
// /usr/sbin/proxsmtpd): a client on a unix socket Listen gets CLIENT set but empty and the
// Header's %l is the socket's path (%i empty); a unix socket OutAddress is SERVER.
test('a client on a unix socket Listen: CLIENT is set and empty; Header %i is empty and %l the socket path', T, async () => {
  const t = tempDir('smtpsift-unix-');
  try {
    const listen = join(t.dir, 'listen.sock');
    await withFilter(
      { config: (sc) => ({ Listen: listen, FilterCommand: `env -0 > ${sc.path('env')}; cat`, Header: 'X-Where: [%i] [%l]' }) },
      async ({ session, up }, sc) => {
        const c = await session();
        assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], BODY), '250 2.0.0 Ok: queued as Q1\r\n');
        const env = lastEnv(sc.read);
        assert.equal(env.get('CLIENT'), '', 'CLIENT is set, empty');
        assert.equal(env.get('SERVER'), '127.0.0.1');
        assert.equal(up.messages[0]?.toString('latin1'), `Subject: env\r\nX-Where: [] [${listen}]\r\n\r\nbody\r\n`);
      },
    );
  } finally {
    t.remove();
  }
});

test('a unix socket OutAddress: SERVER is its path', T, async () => {
  const t = tempDir('smtpsift-unix-');
  try {
    const out = join(t.dir, 'upstream.sock');
    await withFilter(
      { upstream: { path: out }, config: (sc) => ({ OutAddress: out, FilterCommand: `env -0 > ${sc.path('env')}; cat` }) },
      async ({ session, up }, sc) => {
        const c = await session();
        assert.equal(await sendMessage(c, 'a@example.org', ['b@example.net'], BODY), '250 2.0.0 Ok: queued as Q1\r\n');
        const env = lastEnv(sc.read);
        assert.equal(env.get('SERVER'), out);
        assert.equal(env.get('CLIENT'), '127.0.0.1');
        assert.equal(up.messages.length, 1);
      },
    );
  } finally {
    t.remove();
  }
});
