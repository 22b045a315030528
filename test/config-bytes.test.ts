// What the values of proxsmtpd.conf turn into, seen where a user sees them: a host name in
// Listen is resolved at start-up (proxsmtpd called getaddrinfo; a name that does not
// resolve is in config-errors.test.ts), and a value's bytes reach
// their destination unchanged whatever the file's encoding (proxsmtpd never decoded the
// file): Header in the message, FilterReject on the wire, FilterCommand to /bin/sh.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RawClient } from './helpers/client.js';
import { SMTPSIFT, startDaemon, tempDir } from './helpers/daemon.js';
import { sendMessage } from './helpers/filter.js';
import { runDaemonCli } from './helpers/process.js';
import { withRelay } from './helpers/relay.js';
import { RecordingUpstream } from './helpers/upstream.js';

const T = { timeout: 20_000 };

/** A string's UTF-8 bytes as latin1, the way RawClient and the upstream record the wire. */
const utf8Wire = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

/**
 * A daemon started on a configuration file of these exact bytes (plus Listen, OutAddress
 * and TempDirectory lines in ASCII), one message sent through it; resolves what the
 * upstream received.
 */
async function relayWithFile(bytes: Buffer): Promise<string> {
  const up = await RecordingUpstream.start();
  const t = tempDir('smtpsift-bytes-');
  const file = join(t.dir, 'latin1.conf');
  try {
    const d = await startDaemon({}, ['-d', '4'], {
      fileArgs: (generated) => {
        const head = `Listen: 127.0.0.1:0\nOutAddress: 127.0.0.1:${up.port}\nTempDirectory: ${join(generated, '..', 'spool')}\n`;
        writeFileSync(file, Buffer.concat([Buffer.from(head), bytes]));
        return ['-f', file];
      },
    });
    try {
      const c = await (await RawClient.connect(d.port)).greet();
      assert.match(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: s\r\n\r\nbody\r\n'), /^250 /);
      c.close();
      return up.messages[0]?.toString('latin1') ?? '';
    } finally {
      await d.stop();
    }
  } finally {
    t.remove();
    await up.close();
  }
}

test('Listen: a host name is resolved at start-up: localhost:0 listens on 127.0.0.1 and relays', T, async () => {
  await withRelay({ config: { Listen: 'localhost:0' } }, async ({ d, session }) => {
    assert.match(d.log(), /listening on 127\.0\.0\.1:\d+;/);
    const c = await session();
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
  });
});

test('UTF-8 file: Header reaches the message as the same UTF-8 bytes', T, async () => {
  await withRelay({ config: { Header: 'X-U: été €' } }, async ({ session, up }) => {
    const c = await session();
    assert.match(await sendMessage(c, 'a@example.org', ['b@example.net'], 'Subject: s\r\n\r\nbody\r\n'), /^250 /);
    assert.equal(up.messages[0]?.toString('latin1'), `Subject: s\r\n${utf8Wire('X-U: été €')}\r\n\r\nbody\r\n`);
  });
});

test('UTF-8 file: FilterReject reaches the client as the same UTF-8 bytes', T, async () => {
  await withRelay({ config: { FilterType: 'reject', FilterReject: '554 réfus €' } }, async ({ session }) => {
    const c = await session();
    assert.equal(await c.command('MAIL FROM:<a@example.org>'), `${utf8Wire('554 réfus €')}\r\n`);
  });
});

test('Latin-1 file: Header and FilterCommand keep their bytes (into the message, to /bin/sh -c)', T, async () => {
  const conf = Buffer.from("Header: X-L: \xe9t\xe9 %i\nFilterCommand: cat; printf 'X-F: \xe9\\r\\n'\n", 'latin1');
  const got = await relayWithFile(conf);
  assert.equal(got, 'Subject: s\r\nX-L: \xe9t\xe9 127.0.0.1\r\n\r\nbody\r\nX-F: \xe9\r\n');
});

test('Latin-1 file: smtpsift check prints those values as the file has them', T, () => {
  const t = tempDir('smtpsift-bytes-');
  try {
    const file = join(t.dir, 'x.conf');
    writeFileSync(file, Buffer.from(`OutAddress: 127.0.0.1:2525\nTempDirectory: ${t.dir}\nHeader: X-L: \xe9t\xe9\nFilterReject: 554 r\xe9fus\n`, 'latin1'));
    const out = execFileSync(process.execPath, [SMTPSIFT, 'check', '-f', file], { stdio: ['ignore', 'pipe', 'ignore'] }).toString('latin1');
    assert.ok(out.includes('\nHeader: X-L: \xe9t\xe9\n'), out);
    assert.ok(out.includes('\nFilterReject: 554 r\xe9fus\n'), out);
  } finally {
    t.remove();
  }
});

test('a path that is not UTF-8 is refused by name, not changed into another path', T, async () => {
  const t = tempDir('smtpsift-bytes-');
  try {
    const file = join(t.dir, 'x.conf');
    writeFileSync(file, Buffer.from('OutAddress: 127.0.0.1:2525\nTempDirectory: /tmp/\xe9\n', 'latin1'));
    const r = await runDaemonCli(['-d', '0', '-f', file]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, new RegExp(`^smtpsiftd: ${file}:2: TempDirectory: '/tmp/\uFFFD' is not valid UTF-8;`));
  } finally {
    t.remove();
  }
});
