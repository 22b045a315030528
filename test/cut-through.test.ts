// `CutThrough: on` (issue 7): mail that no filter reads is relayed as it arrives. The client
// gets the upstream's own 354, the data streams upstream before the client has finished,
// and nothing is spooled. A message the client or the upstream leaves unfinished is never
// ended upstream; after an upstream failure the client's data is still read to its end, so
// that no body line is taken for a command. The data path itself (dot-stuffing, bare LF,
// smuggling, byte-identity) is tested in both modes by relay-data.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { startDaemon, type Daemon } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream, type UpstreamOptions, type UpstreamSession } from './helpers/upstream.js';
import { spoolFiles, waitFor } from './helpers/process.js';

const UPSTREAM_354 = '354 End data with <CR><LF>.<CR><LF>\r\n';
const OUR_354 = '354 Start mail input; end with <CRLF>.<CRLF>\r\n';
const GONE = '421 4.4.2 Upstream server closed the connection, try again later\r\n';
const IDLE = '421 4.4.2 Timeout exceeded, closing connection\r\n';
/** About 1.2 MB of 80-byte lines, some starting with a dot (stuffed here, as a client sends them). */
const BIG_STUFFED = `Subject: big\r\n\r\n${Array.from({ length: 15000 }, (_, i) => `${i % 9 === 0 ? '..' : ''}line ${i} ${'z'.repeat(70)}\r\n`).join('')}`;

interface Ctx {
  readonly d: Daemon;
  readonly up: RecordingUpstream;
  readonly c: RawClient;
  /** The first upstream connection. */
  readonly first: () => UpstreamSession;
}

/**
 * A daemon with CutThrough on and a client past EHLO. Afterwards the spool is empty (if it
 * is still there), and a new client gets one message delivered exactly once.
 */
async function withCut(
  fn: (ctx: Ctx) => Promise<void>,
  opts: { upstream?: (first: (s: UpstreamSession) => boolean) => UpstreamOptions; config?: Record<string, string> } = {},
): Promise<void> {
  let up: RecordingUpstream | undefined;
  const isFirst = (s: UpstreamSession): boolean => up?.sessions[0] === s;
  up = await RecordingUpstream.start(opts.upstream?.(isFirst));
  const upstream = up;
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, TimeOut: '1', CutThrough: 'on', ...opts.config });
  const clients: RawClient[] = [];
  try {
    const c = await RawClient.connect(d.port);
    clients.push(c);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.match(await c.command('EHLO client.test'), /^250-/);
    const first = (): UpstreamSession => {
      const s = upstream.sessions[0];
      assert.ok(s, 'the upstream was dialled');
      return s;
    };
    await fn({ d, up: upstream, c, first });
    if (existsSync(d.spoolDir)) assert.deepEqual(spoolFiles(d.spoolDir), []);

    const before = upstream.messages.length;
    const next = await RawClient.connect(d.port);
    clients.push(next);
    assert.equal(await next.reply(), '220 smtp.passthru\r\n');
    await envelope(next);
    assert.equal(await next.command('DATA'), opts.config?.FilterCommand === undefined ? UPSTREAM_354 : OUR_354);
    next.send('Subject: next\r\n\r\nnext\r\n.\r\n');
    assert.match(await next.reply(), /^250 2\.0\.0 Ok: queued as Q\d+\r\n$/);
    assert.equal(await next.command('QUIT'), '221 2.0.0 Bye\r\n');
    assert.equal(upstream.messages.length, before + 1);
    // (With the Header option, its line is there too.)
    assert.match(upstream.messages.at(-1)?.toString('latin1') ?? '', /^Subject: next\r\n(?:X-Sift: .*\r\n)?\r\nnext\r\n$/);
  } finally {
    for (const c of clients) c.close();
    await d.stop();
    await upstream.close();
  }
}

async function envelope(c: RawClient): Promise<void> {
  assert.equal(await c.command('MAIL FROM:<a@example.org>'), '250 2.0.0 Ok\r\n');
  assert.equal(await c.command('RCPT TO:<b@example.net>'), '250 2.1.5 Ok\r\n');
}

/** Resolves once the upstream has read more than `bytes` on this connection. */
function upstreamRead(s: UpstreamSession, bytes: number): Promise<void> {
  return waitFor(() => s.socket.bytesRead > bytes || undefined, `the upstream to read ${bytes} bytes`).then(() => undefined);
}

function upstreamClosed(s: UpstreamSession): Promise<void> {
  return new Promise((r) => (s.socket.closed ? r() : s.socket.once('close', () => r())));
}

test('the upstream gets DATA and the data while the client is still sending; the client gets its 354 and 250; nothing is spooled, even with TempDirectory gone', async () => {
  await withCut(async ({ d, up, c, first }) => {
    rmSync(d.spoolDir, { recursive: true, force: true });
    await envelope(c);
    assert.equal(await c.command('DATA'), UPSTREAM_354);
    const half = BIG_STUFFED.length >> 1;
    c.send(BIG_STUFFED.slice(0, half));
    // Before the client is done, most of what it sent is upstream already; no message yet.
    await upstreamRead(first(), half - 128 * 1024);
    assert.equal(up.messages.length, 0);
    c.send(`${BIG_STUFFED.slice(half)}.\r\n`);
    assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(up.messages[0]?.toString('latin1'), BIG_STUFFED);
    assert.deepEqual(first().commands, ['EHLO client.test\r\n', 'MAIL FROM:<a@example.org>\r\n', 'RCPT TO:<b@example.net>\r\n', 'DATA\r\n']);
    assert.equal(existsSync(d.spoolDir), false);
    await d.waitForLog(/status=DELIVERED/);
  });
});

test('commands pipelined after a large message\'s end are answered after its 250, in order; the log line counts the message', async () => {
  await withCut(async ({ d, up, c, first }) => {
    await envelope(c);
    assert.equal(await c.command('DATA'), UPSTREAM_354);
    // Over 64 KiB: the end and the commands after it reach the relay thread, not the loop.
    c.send(`${BIG_STUFFED}.\r\nNOOP\r\nMAIL FROM:<second@example.org>\r\n`);
    assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok\r\n');
    assert.equal(await c.command('RSET'), '250 2.0.0 Ok\r\n');
    assert.equal(up.messages[0]?.toString('latin1'), BIG_STUFFED);
    assert.deepEqual(first().commands.slice(-4), ['DATA\r\n', 'NOOP\r\n', 'MAIL FROM:<second@example.org>\r\n', 'RSET\r\n']);
    const unstuffed = BIG_STUFFED.replaceAll('\r\n..', '\r\n.').length;
    await d.waitForLog(new RegExp(`size=${unstuffed}\\b.*status=DELIVERED|status=DELIVERED.*size=${unstuffed}\\b`));
  });
});

test('client disconnects in the middle of DATA: the upstream connection is dropped before any end of data; nothing delivered', async () => {
  await withCut(async ({ up, c, first }) => {
    await envelope(c);
    assert.equal(await c.command('DATA'), UPSTREAM_354);
    c.send(BIG_STUFFED.slice(0, 300_000));
    await upstreamRead(first(), 200_000);
    c.close();
    await upstreamClosed(first());
    assert.equal(up.messages.length, 0);
  });
});

test('client silent past TimeOut in the middle of DATA: 421 4.4.2 and close; the upstream connection is dropped; nothing delivered', async () => {
  await withCut(async ({ up, c, first }) => {
    await envelope(c);
    assert.equal(await c.command('DATA'), UPSTREAM_354);
    c.send('Subject: stalled\r\n\r\nand then nothing');
    assert.equal(await c.reply(3000), IDLE);
    assert.equal(await c.waitClosed(), '');
    await upstreamClosed(first());
    assert.equal(up.messages.length, 0);
  });
});

test('upstream closes during the data: the client\'s data is read to its end and never run as commands, then 421 and close; nothing delivered', async () => {
  const smuggle = 'RSET\r\nMAIL FROM:<smuggled@x>\r\nRCPT TO:<smuggled@y>\r\nDATA\r\nQUIT\r\n';
  const body = `Subject: cut\r\n\r\n${`${'w'.repeat(200)}\r\n${smuggle}`.repeat(4000)}`;
  await withCut(
    async ({ up, c, first }) => {
      await envelope(c);
      assert.equal(await c.command('DATA'), UPSTREAM_354);
      await new Promise<void>((r) => c.socket.write(body, 'latin1', () => r()));
      // All of it is data: no reply until the end of data.
      const early = await c.reply(300).catch((e: Error) => e);
      assert.ok(early instanceof Error && /^timeout/.test(early.message), `a reply before the end of data: ${String(early)}`);
      c.send('.\r\n');
      assert.equal(await c.reply(), GONE);
      assert.equal(await c.waitClosed(), '');
      assert.equal(up.messages.length, 0);
      assert.equal(up.sessions.length, 1, 'no second upstream connection');
      assert.ok(!first().commands.some((l) => l.includes('smuggled')), first().commands.join(''));
    },
    {
      upstream: (first) => ({
        respond: (l, s) => {
          if (first(s) && /^DATA/i.test(l)) s.socket.once('data', () => s.socket.destroy());
          return null;
        },
      }),
    },
  );
});

test('upstream silent after the end of data past TimeOut: 421 and close', async () => {
  await withCut(
    async ({ c }) => {
      await envelope(c);
      assert.equal(await c.command('DATA'), UPSTREAM_354);
      c.send('Subject: s\r\n\r\nbody\r\n.\r\n');
      assert.equal(await c.reply(3000), '421 4.4.2 Upstream server timed out, try again later\r\n');
      assert.equal(await c.waitClosed(), '');
    },
    { upstream: (first) => ({ afterData: (_m, s) => (first(s) ? 'silent' : '250 2.0.0 Ok: queued as Q9') }) },
  );
});

test('the Header goes in as the message streams past, even when the client sends it a byte at a time', async () => {
  await withCut(
    async ({ up, c }) => {
      await envelope(c);
      assert.equal(await c.command('DATA'), UPSTREAM_354);
      for (const b of 'From: a@example.org\r\nSubject: h\r\n\r\nbody\r\n') c.send(b);
      c.send('.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.equal(up.messages[0]?.toString('latin1'), 'From: a@example.org\r\nSubject: h\r\nX-Sift: 127.0.0.1\r\n\r\nbody\r\n');
    },
    { config: { Header: 'X-Sift: %i' } },
  );
});

test('a message for a filter is still received whole first: our 354, the filter\'s output upstream', async () => {
  await withCut(
    async ({ up, c, first }) => {
      await envelope(c);
      assert.equal(await c.command('DATA'), OUR_354);
      c.send('Subject: f\r\n\r\nfoo\r\n');
      // The whole message goes to the filter first: no DATA upstream before its end.
      const early = await c.reply(200).catch((e: Error) => e);
      assert.ok(early instanceof Error);
      assert.ok(!first().commands.includes('DATA\r\n'));
      c.send('.\r\n');
      assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.equal(up.messages[0]?.toString('latin1'), 'Subject: f\r\n\r\nbar\r\n');
    },
    { config: { FilterCommand: 'sed s/foo/bar/' } },
  );
});

test('SIGTERM while a message streams: it is still delivered once, then 421; the pipelined command after its end is not run; exit 0', async () => {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, CutThrough: 'on' });
  try {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.match(await c.command('EHLO client.test'), /^250-/);
    await envelope(c);
    assert.equal(await c.command('DATA'), UPSTREAM_354);
    c.send(BIG_STUFFED);
    const s = up.sessions[0];
    assert.ok(s);
    await upstreamRead(s, 1_000_000);
    d.proc.kill('SIGTERM');
    await d.waitForLog(/stopping: no new connections/);
    c.send('.\r\nRSET\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(await c.reply(), '421 4.3.2 Service shutting down, closing connection\r\n');
    await c.waitClosed();
    assert.equal(up.messages.length, 1);
    assert.equal(up.messages[0]?.toString('latin1'), BIG_STUFFED);
    assert.ok(!s.commands.includes('RSET\r\n'), s.commands.join(''));
    assert.equal(await d.exited, 0);
  } finally {
    await d.stop();
    await up.close();
  }
});

test('the drain deadline cuts a message still moving on the relay thread, from a client that never hangs up: 421, its upstream connection dropped with no end of data, nothing delivered, exit 0', { timeout: 60_000 }, async () => {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, CutThrough: 'on', TimeOut: '120' });
  try {
    const c = await RawClient.connect(d.port, '127.0.0.1', true);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.match(await c.command('EHLO client.test'), /^250-/);
    await envelope(c);
    assert.equal(await c.command('DATA'), UPSTREAM_354);
    // Past the first 64 KiB, so on the thread; then the client stalls without an end.
    c.send(BIG_STUFFED.slice(0, 300_000));
    const s = up.sessions[0];
    assert.ok(s);
    await upstreamRead(s, 250_000);
    const signalled = Date.now();
    d.proc.kill('SIGTERM');
    assert.equal(await c.reply(45_000), '421 4.3.2 Service shutting down, closing connection\r\n');
    assert.ok(Date.now() - signalled > 25_000, 'cut at the drain deadline, not before');
    // Then all of it ends within seconds, though the client is still there (TimeOut is 120 s).
    const soon = <T>(p: Promise<T>, what: string): Promise<T> =>
      Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} not within 5 s`)), 5000).unref())]);
    await soon(upstreamClosed(s), 'the upstream connection closed');
    assert.equal(up.messages.length, 0);
    assert.equal(await soon(d.exited, 'the daemon exited'), 0);
    c.close();
  } finally {
    await d.stop();
    await up.close();
  }
});
