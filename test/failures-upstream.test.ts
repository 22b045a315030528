// Upstream failures at every step (issue #2 "Failures", spec §15): what the client gets,
// that nothing is delivered twice or half, that the spool is left empty, and that the
// daemon goes on serving the next client. TimeOut is 1 s so that the silent cases are quick.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, type Daemon } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream, type UpstreamOptions, type UpstreamSession } from './helpers/upstream.js';
import { freePort, spoolFiles } from './helpers/process.js';

const GONE = '421 4.4.2 Upstream server closed the connection, try again later\r\n';
const TIMED_OUT = '421 4.4.2 Upstream server timed out, try again later\r\n';
const BODY = 'Subject: failure test\r\n\r\nline one\r\n..dotted\r\n';

interface Ctx {
  readonly up: RecordingUpstream;
  readonly d: Daemon;
  /** The first upstream connection, the one that fails. */
  readonly first: () => UpstreamSession;
}

/**
 * Runs `fn` against a daemon whose upstream fails as `opts` says; `isFirst` lets the hooks
 * fail only the first upstream connection. Afterwards: the spool is empty, and a new client
 * gets a message delivered exactly once.
 */
async function scenario(
  opts: (isFirst: (s: UpstreamSession) => boolean) => UpstreamOptions,
  fn: (c: RawClient, ctx: Ctx) => Promise<void>,
): Promise<void> {
  let up: RecordingUpstream | undefined;
  const isFirst = (s: UpstreamSession): boolean => up?.sessions[0] === s;
  up = await RecordingUpstream.start(opts(isFirst));
  const upstream = up;
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, TimeOut: '1' });
  const clients: RawClient[] = [];
  try {
    const c = await RawClient.connect(d.port);
    clients.push(c);
    const first = (): UpstreamSession => {
      const s = upstream.sessions[0];
      assert.ok(s, 'the upstream was dialled');
      return s;
    };
    await fn(c, { up: upstream, d, first });
    assert.deepEqual(spoolFiles(d.spoolDir), [], 'spool empty after the failure');

    // The daemon keeps serving: a new client, a new upstream connection, one delivery.
    const before = upstream.messages.length;
    const next = await RawClient.connect(d.port);
    clients.push(next);
    assert.equal(await next.reply(), '220 smtp.passthru\r\n');
    assert.match(await deliver(next, 'Subject: next\r\n\r\nnext\r\n'), /^250 2\.0\.0 Ok: queued as Q\d+\r\n$/);
    assert.equal(await next.command('QUIT'), '221 2.0.0 Bye\r\n');
    assert.equal(upstream.messages.length, before + 1);
    assert.equal(upstream.messages.at(-1)?.toString('latin1'), 'Subject: next\r\n\r\nnext\r\n');
    assert.deepEqual(spoolFiles(d.spoolDir), []);
  } finally {
    for (const c of clients) c.close();
    await d.stop();
    await up.close();
  }
}

/** MAIL, RCPT, DATA and the body; returns the final reply. */
async function deliver(c: RawClient, body = BODY): Promise<string> {
  assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
  assert.match(await c.command('RCPT TO:<b@example.net>'), /^250 /);
  assert.equal(await c.command('DATA'), '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
  c.send(`${body}.\r\n`);
  return c.reply();
}

/** Asserts the reply, then that the connection closes with nothing more. */
async function expectClose(c: RawClient, reply: string): Promise<void> {
  assert.equal(await c.reply(), reply);
  assert.equal(await c.waitClosed(), '');
}

/** The reply to `line`, and how long it took, in ms. */
async function timed(c: RawClient, line: string | undefined): Promise<[string, number]> {
  const t0 = Date.now();
  if (line !== undefined) c.send(line);
  const r = await c.reply();
  return [r, Date.now() - t0];
}

test('upstream refuses the connection: 421 4.4.1 and close; the daemon goes on', async () => {
  const port = await freePort();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${port}`, TimeOut: '1' });
  try {
    for (let i = 0; i < 2; i++) {
      const c = await RawClient.connect(d.port);
      await expectClose(c, '421 4.4.1 Upstream server unavailable, try again later\r\n');
    }
    await d.waitForLog(/cannot connect to 127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    assert.deepEqual(spoolFiles(d.spoolDir), []);
  } finally {
    await d.stop();
  }
});

test('upstream closes at its greeting: 421 and close', async () => {
  await scenario(
    (first) => ({ greeting: (s) => (first(s) ? 'close' : '220 upstream.test ESMTP') }),
    async (c) => {
      await expectClose(c, GONE);
    },
  );
});

test('upstream closes at EHLO: 421 and close', async () => {
  await scenario(
    (first) => ({ respond: (l, s) => (first(s) && /^EHLO/i.test(l) ? 'close' : null) }),
    async (c, { first }) => {
      assert.equal(await c.reply(), '220 smtp.passthru\r\n');
      c.send('EHLO client.test\r\n');
      await expectClose(c, GONE);
      assert.deepEqual(first().commands, ['EHLO client.test\r\n']);
    },
  );
});

test('upstream closes after answering EHLO: the next command gets 421 and close', async () => {
  await scenario(
    (first) => ({
      respond: (l, s) => {
        if (first(s) && /^EHLO/i.test(l)) setImmediate(() => s.socket.end());
        return null;
      },
    }),
    async (c, { first }) => {
      assert.equal(await c.reply(), '220 smtp.passthru\r\n');
      assert.match(await c.command('EHLO client.test'), /^250-smtp\.passthru\r\n/);
      await new Promise<void>((r) => (first().socket.closed ? r() : first().socket.once('close', () => r())));
      c.send('MAIL FROM:<a@example.org>\r\n');
      await expectClose(c, GONE);
      assert.ok(!first().commands.some((l) => l.startsWith('DATA')));
    },
  );
});

for (const [verb, cmd] of [
  ['MAIL', 'MAIL FROM:<a@example.org>'],
  ['RCPT', 'RCPT TO:<b@example.net>'],
] as const) {
  test(`upstream closes at ${verb}: 421 and close, nothing delivered`, async () => {
    await scenario(
      (first) => ({ respond: (l, s) => (first(s) && l.toUpperCase().startsWith(verb) ? 'close' : null) }),
      async (c, { up, first }) => {
        assert.equal(await c.reply(), '220 smtp.passthru\r\n');
        assert.match(await c.command('EHLO client.test'), /^250-/);
        if (verb === 'RCPT') assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
        c.send(`${cmd}\r\n`);
        await expectClose(c, GONE);
        assert.equal(first().commands.at(-1), `${cmd}\r\n`);
        assert.equal(up.messages.length, 0);
      },
    );
  });
}

test('upstream closes at DATA (before its 354): the client, after its data, gets 421 and close; nothing delivered', async () => {
  await scenario(
    (first) => ({ respond: (l, s) => (first(s) && /^DATA/i.test(l) ? 'close' : null) }),
    async (c, { up, first }) => {
      assert.equal(await c.reply(), '220 smtp.passthru\r\n');
      assert.match(await c.command('EHLO client.test'), /^250-/);
      // 354 is ours: the upstream sees DATA only once the whole message is spooled.
      assert.equal(await deliver(c), GONE);
      assert.equal(await c.waitClosed(), '');
      assert.equal(first().commands.at(-1), 'DATA\r\n');
      assert.equal(up.messages.length, 0);
    },
  );
});

test('upstream closes during the data: 421 and close; the upstream never saw the end of data', async () => {
  // Large enough that the daemon is still writing when the upstream goes away.
  const big = `Subject: big\r\n\r\n${'x'.repeat(998)}\r\n`.repeat(2000);
  await scenario(
    (first) => ({
      respond: (l, s) => {
        if (first(s) && /^DATA/i.test(l)) s.socket.once('data', () => s.socket.destroy());
        return null;
      },
    }),
    async (c, { up, first }) => {
      assert.equal(await c.reply(), '220 smtp.passthru\r\n');
      assert.equal(await deliver(c, big), GONE);
      assert.equal(await c.waitClosed(), '');
      assert.equal(first().commands.filter((l) => l === 'DATA\r\n').length, 1);
      assert.equal(up.messages.length, 0);
    },
  );
});

test('upstream closes after the final dot without a reply: 421 and close; the daemon does not send it again', async () => {
  await scenario(
    (first) => ({ afterData: (_m, s) => (first(s) ? 'close' : '250 2.0.0 Ok: queued as Q2') }),
    async (c, { up, first }) => {
      assert.equal(await c.reply(), '220 smtp.passthru\r\n');
      assert.equal(await deliver(c), GONE);
      assert.equal(await c.waitClosed(), '');
      // The upstream had the whole message once, and acknowledged nothing.
      assert.equal(first().messages.length, 1);
      assert.equal(first().messages[0]?.toString('latin1'), 'Subject: failure test\r\n\r\nline one\r\n..dotted\r\n');
      assert.equal(up.sessions.length, 1, 'no second attempt');
    },
  );
});

test('upstream silent past TimeOut at its greeting: 421 within about TimeOut, and close', async () => {
  await scenario(
    (first) => ({ greeting: (s) => (first(s) ? 'silent' : '220 upstream.test ESMTP') }),
    async (c) => {
      const [r, ms] = await timed(c, undefined);
      assert.equal(r, TIMED_OUT);
      assert.ok(ms >= 900 && ms < 2500, `${ms} ms`);
      assert.equal(await c.waitClosed(), '');
    },
  );
});

test('upstream silent past TimeOut at RCPT: 421 within about TimeOut, and close', async () => {
  await scenario(
    (first) => ({ respond: (l, s) => (first(s) && /^RCPT/i.test(l) ? 'silent' : null) }),
    async (c, { up }) => {
      assert.equal(await c.reply(), '220 smtp.passthru\r\n');
      assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
      const [r, ms] = await timed(c, 'RCPT TO:<b@example.net>\r\n');
      assert.equal(r, TIMED_OUT);
      assert.ok(ms >= 900 && ms < 2500, `${ms} ms`);
      assert.equal(await c.waitClosed(), '');
      assert.equal(up.messages.length, 0);
    },
  );
});

test('upstream silent past TimeOut after the final dot: 421 within about TimeOut, and close', async () => {
  await scenario(
    (first) => ({ afterData: (_m, s) => (first(s) ? 'silent' : '250 2.0.0 Ok: queued as Q2') }),
    async (c, { first }) => {
      assert.equal(await c.reply(), '220 smtp.passthru\r\n');
      assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
      assert.match(await c.command('RCPT TO:<b@example.net>'), /^250 /);
      assert.match(await c.command('DATA'), /^354 /);
      const [r, ms] = await timed(c, `${BODY}.\r\n`);
      assert.equal(r, TIMED_OUT);
      assert.ok(ms >= 900 && ms < 2500, `${ms} ms`);
      assert.equal(await c.waitClosed(), '');
      assert.equal(first().messages.length, 1);
      assert.equal(first().commands.filter((l) => l === 'DATA\r\n').length, 1, 'no second attempt');
    },
  );
});

test('upstream rejects DATA (554): that reply is the final reply after the data, the upstream gets RSET, the session goes on', async () => {
  let rejected = 0;
  await scenario(
    () => ({ respond: (l) => (/^DATA/i.test(l) && rejected++ === 0 ? '554 5.5.1 Error: no valid recipients' : null) }),
    async (c, { up, first }) => {
      assert.equal(await c.reply(), '220 smtp.passthru\r\n');
      assert.equal(await deliver(c), '554 5.5.1 Error: no valid recipients\r\n');
      assert.deepEqual(first().commands.slice(-2), ['DATA\r\n', 'RSET\r\n']);
      assert.equal(up.messages.length, 0);
      // Same connection: the next transaction is clean and goes through.
      assert.equal(await deliver(c), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.equal(up.messages.length, 1);
      assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    },
  );
});

test('upstream rejects at the end of data: its reply verbatim (multi-line), the session goes on', async () => {
  let n = 0;
  const rejection = '550-5.7.1 Message rejected\r\n550 5.7.1 see https://example.org/policy';
  await scenario(
    () => ({ afterData: () => (n++ === 0 ? rejection : `250 2.0.0 Ok: queued as Q${n}`) }),
    async (c, { up }) => {
      assert.equal(await c.reply(), '220 smtp.passthru\r\n');
      assert.equal(await deliver(c), `${rejection}\r\n`);
      assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
      assert.equal(await deliver(c, 'Subject: again\r\n\r\nagain\r\n'), '250 2.0.0 Ok: queued as Q2\r\n');
      assert.equal(up.messages.length, 2);
      assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    },
  );
});
