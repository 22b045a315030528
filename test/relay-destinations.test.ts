// Issue 2, the relay: where a session goes. Loopback mode (`OutAddress: port`), a host name,
// and unix sockets on either side (spec §4.3; proxsmtpd's unix sockets were never exercised).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tempDir } from './helpers/daemon.js';
import { withRelay } from './helpers/relay.js';
import type { RawClient } from './helpers/client.js';
import type { RecordingUpstream } from './helpers/upstream.js';

const T = { timeout: 15_000 };

/** One whole message through the session; checks what the upstream got. */
async function oneMessage(c: RawClient, up: RecordingUpstream): Promise<void> {
  assert.equal(await c.command('MAIL FROM:<a@example.org>'), '250 2.0.0 Ok\r\n');
  assert.equal(await c.command('RCPT TO:<b@example.net>'), '250 2.1.5 Ok\r\n');
  assert.match(await c.command('DATA'), /^354 /);
  c.send('Subject: where\r\n\r\nbody\r\n.\r\n');
  assert.match(await c.reply(), /^250 2\.0\.0 Ok: queued as Q\d+\r\n$/);
  assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
  await c.waitClosed();
  assert.equal(up.messages.at(-1)?.toString(), 'Subject: where\r\n\r\nbody\r\n');
}

test("loopback mode (OutAddress: port alone) relays to the client's own IP at that port", T, async () => {
  await withRelay({ config: (up) => ({ OutAddress: String(up.port) }) }, async ({ up, d, session }) => {
    await d.waitForLog(new RegExp(`upstream ${up.port}\\b`));
    const c = await session();
    assert.equal(up.sessions.length, 1);
    // The daemon dialled the client's address (127.0.0.1) at the upstream's port.
    assert.equal(up.sessions[0]?.socket.localAddress, '127.0.0.1');
    assert.equal(up.sessions[0]?.socket.localPort, up.port);
    await oneMessage(c, up);
    assert.equal(up.sessions[0]?.commands[0], 'EHLO client.test\r\n');
  });
});

test('OutAddress: localhost:port (a host name) is resolved and relayed to', T, async () => {
  await withRelay({ config: (up) => ({ OutAddress: `localhost:${up.port}` }) }, async ({ up, session }) => {
    const c = await session();
    await oneMessage(c, up);
    // Resolved again for every connection: a second one works as well.
    const c2 = await session();
    await oneMessage(c2, up);
    assert.equal(up.sessions.length, 2);
  });
});

test('a unix socket Listen serves clients and relays over TCP', T, async () => {
  const tmp = tempDir('smtpsift-unix-');
  try {
    const path = join(tmp.dir, 'listen.sock');
    await withRelay({ config: { Listen: path } }, async ({ up, d, session }) => {
      assert.equal(d.socketPath, path);
      const c = await session();
      await oneMessage(c, up);
      await d.waitForLog(/client=unix from=<a@example\.org> rcpts=1 /);
    });
  } finally {
    tmp.remove();
  }
});

test('a unix socket OutAddress is relayed to, from a TCP or a unix socket client', T, async () => {
  const tmp = tempDir('smtpsift-unix-');
  try {
    const out = join(tmp.dir, 'upstream.sock');
    await withRelay({ upstream: { path: out }, config: { OutAddress: out } }, async ({ up, session }) => {
      const c = await session();
      assert.equal(up.sessions.length, 1);
      await oneMessage(c, up);
    });
    const listen = join(tmp.dir, 'listen.sock');
    await withRelay({ upstream: { path: out }, config: { OutAddress: out, Listen: listen } }, async ({ up, session }) => {
      const c = await session();
      await oneMessage(c, up);
    });
  } finally {
    tmp.remove();
  }
});

test('loopback mode with a unix socket client has no IP to go back to: 421 and close', T, async () => {
  const tmp = tempDir('smtpsift-unix-');
  try {
    const listen = join(tmp.dir, 'listen.sock');
    await withRelay({ config: (up) => ({ OutAddress: String(up.port), Listen: listen }) }, async ({ up, connect }) => {
      const c = await connect();
      assert.match(await c.reply(), /^421 4\.4\.1 /);
      await c.waitClosed();
      assert.equal(up.sessions.length, 0);
    });
  } finally {
    tmp.remove();
  }
});
