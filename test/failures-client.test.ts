// Client failures (issue #2 "Failures"): a client gone in the middle of DATA, an idle or
// silent client past TimeOut. Nothing is delivered, the spool is left empty, the daemon
// goes on serving.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startDaemon, type Daemon } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream } from './helpers/upstream.js';
import { SPILLED, spoolFiles, waitFor } from './helpers/process.js';

const IDLE = '421 4.4.2 Timeout exceeded, closing connection\r\n';

async function withDaemon(fn: (d: Daemon, up: RecordingUpstream) => Promise<void>): Promise<void> {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, TimeOut: '1' });
  try {
    await fn(d, up);
    // And the daemon still serves: one message, delivered once.
    const before = up.messages.length;
    const c = await RawClient.connect(d.port);
    try {
      assert.equal(await c.reply(), '220 smtp.passthru\r\n');
      await envelope(c);
      c.send('Subject: after\r\n\r\nafter\r\n.\r\n');
      assert.match(await c.reply(), /^250 /);
      assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    } finally {
      c.close();
    }
    assert.equal(up.messages.length, before + 1);
    assert.equal(up.messages.at(-1)?.toString('latin1'), 'Subject: after\r\n\r\nafter\r\n');
    assert.deepEqual(spoolFiles(d.spoolDir), []);
  } finally {
    await d.stop();
    await up.close();
  }
}

async function envelope(c: RawClient): Promise<void> {
  assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
  assert.match(await c.command('RCPT TO:<b@example.net>'), /^250 /);
  assert.equal(await c.command('DATA'), '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
}

/** Waits for the upstream connection of a session to be closed by the daemon. */
function upstreamClosed(up: RecordingUpstream, i: number): Promise<void> {
  const s = up.sessions[i];
  assert.ok(s);
  return new Promise((r) => (s.socket.closed ? r() : s.socket.once('close', () => r())));
}

test('client disconnects in the middle of DATA: nothing delivered, the spool file removed, the upstream never saw DATA', async () => {
  await withDaemon(async (d, up) => {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    await envelope(c);
    c.send(`Subject: half\r\n\r\n${SPILLED}only half of it\r\n`);
    // The message outgrew memory: it is in a spool file now.
    await waitFor(() => spoolFiles(d.spoolDir)[0], 'the spool file');
    c.close();
    await waitFor(() => spoolFiles(d.spoolDir).length === 0 || undefined, 'the spool file to be removed');
    await upstreamClosed(up, 0);
    assert.equal(up.messages.length, 0);
    assert.ok(!up.sessions[0]?.commands.includes('DATA\r\n'), 'DATA never went upstream');
  });
});

test('client disconnects in the middle of a large DATA (backpressure in play): same', async () => {
  await withDaemon(async (d, up) => {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    await envelope(c);
    c.send(`Subject: big\r\n\r\n${`${'y'.repeat(998)}\r\n`.repeat(3000)}`);
    await waitFor(() => {
      const f = spoolFiles(d.spoolDir)[0];
      return f !== undefined && readFileSync(f).length > 1_000_000;
    }, 'a megabyte in the spool');
    c.close();
    await waitFor(() => spoolFiles(d.spoolDir).length === 0 || undefined, 'the spool file to be removed');
    await upstreamClosed(up, 0);
    assert.equal(up.messages.length, 0);
    assert.ok(!up.sessions[0]?.commands.includes('DATA\r\n'));
  });
});

test('idle client past TimeOut: 421 4.4.2 and close, within about TimeOut; the upstream gets QUIT', async () => {
  await withDaemon(async (d, up) => {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    const t0 = Date.now();
    assert.equal(await c.reply(3000), IDLE);
    const ms = Date.now() - t0;
    assert.ok(ms >= 900 && ms < 2500, `${ms} ms`);
    assert.equal(await c.waitClosed(), '');
    await upstreamClosed(up, 0);
    assert.equal(up.sessions[0]?.commands.at(-1), 'QUIT\r\n');
  });
});

test('idle client past TimeOut in the middle of a transaction: 421 4.4.2 and close, nothing delivered', async () => {
  await withDaemon(async (d, up) => {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.match(await c.command('EHLO client.test'), /^250-/);
    assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
    assert.equal(await c.reply(3000), IDLE);
    assert.equal(await c.waitClosed(), '');
    assert.equal(up.messages.length, 0);
  });
});

test('client silent past TimeOut in the middle of DATA: 421 4.4.2 and close, nothing delivered, spool emptied', async () => {
  await withDaemon(async (d, up) => {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    await envelope(c);
    c.send(`Subject: stalled\r\n\r\n${SPILLED}and then nothing`);
    await waitFor(() => spoolFiles(d.spoolDir)[0], 'the spool file');
    const t0 = Date.now();
    assert.equal(await c.reply(3000), IDLE);
    const ms = Date.now() - t0;
    assert.ok(ms < 2500, `${ms} ms`);
    assert.equal(await c.waitClosed(), '');
    assert.deepEqual(spoolFiles(d.spoolDir), []);
    await upstreamClosed(up, 0);
    assert.equal(up.messages.length, 0);
    assert.ok(!up.sessions[0]?.commands.includes('DATA\r\n'));
  });
});

test('a client that trickles a command a byte at a time (slowloris) gets 421 4.4.2 at TimeOut from the line\'s start, not never', async () => {
  await withDaemon(async (d) => {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    const t0 = Date.now();
    // A byte every 200 ms, for at most 5 s (TimeOut is 1 s): the line never ends.
    const trickle = setInterval(() => {
      if (!c.socket.destroyed) c.socket.write('N');
    }, 200);
    try {
      assert.equal(await c.reply(5000), IDLE);
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= 900 && elapsed < 2500, `421 after ${elapsed} ms (TimeOut 1 s)`);
    } finally {
      clearInterval(trickle);
      c.close();
    }
  });
});
