// Spool failures (issue #2 "Failures", design invariants 4 and 6): the TempDirectory or
// the private spool directory removed while running, and a disk that fills up in the
// middle of a message. The client's data is always read to its end (no body line is ever
// taken for a command), the client gets 451, the session goes on, the spool is left empty.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { startDaemon, type Daemon } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream } from './helpers/upstream.js';
import { owner, privateSpoolDirs, spoolFiles } from './helpers/process.js';
import { IN_MEMORY_MAX } from '../src/spool/message.js';

const SPOOL_FAILED = '451 4.3.0 Local Error: cannot spool the message, try again later\r\n';
const isRoot = process.getuid?.() === 0;
/** Options that make every message go through a filter, hence through a spool file. */
const FILTERED = { FilterCommand: 'cat', FilterType: 'pipe' };
/** A message over what a message may hold in memory (64 KiB). */
const BIG = `Subject: big\r\n\r\n${`${'b'.repeat(78)}\r\n`.repeat(Math.ceil(IN_MEMORY_MAX / 80) + 100)}`;

async function envelope(c: RawClient): Promise<void> {
  assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
  assert.match(await c.command('RCPT TO:<b@example.net>'), /^250 /);
}

async function message(c: RawClient, body: string): Promise<string> {
  await envelope(c);
  assert.equal(await c.command('DATA'), '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
  c.send(`${body}.\r\n`);
  return c.reply();
}

async function withDaemon(
  fn: (d: Daemon, up: RecordingUpstream, c: RawClient) => Promise<void>,
  start?: Parameters<typeof startDaemon>[2],
  options: Record<string, string> = {},
): Promise<void> {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, TimeOut: '5', ...options }, ['-d', '4'], start);
  const c = await RawClient.connect(d.port);
  try {
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.match(await c.command('EHLO client.test'), /^250-/);
    await fn(d, up, c);
  } finally {
    c.close();
    await d.stop();
    await up.close();
  }
}

// A message for a filter is spooled from its first byte (the filter reads a file), so a
// spool that cannot be used is known before any data is sent.
test('TempDirectory removed while running, with a filter: DATA gets 451 (before any data), the upstream gets RSET, the session goes on', async () => {
  await withDaemon(async (d, up, c) => {
    rmSync(d.spoolDir, { recursive: true, force: true });
    await envelope(c);
    assert.equal(await c.command('DATA'), SPOOL_FAILED);
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    // The session is sequential: the NOOP went up after the RSET's round trip.
    assert.deepEqual(up.sessions[0]?.commands.slice(-2), ['RSET\r\n', 'NOOP\r\n']);
    assert.ok(!up.sessions[0]?.commands.includes('DATA\r\n'));
    // Again, while it is still missing: the same 451, no crash.
    await envelope(c);
    assert.equal(await c.command('DATA'), SPOOL_FAILED);
    await d.waitForLog(/cannot create .*ENOENT/);

    // Once the TempDirectory is back, the daemon makes its private directory again.
    mkdirSync(d.spoolDir);
    assert.equal(await message(c, 'Subject: back\r\n\r\nback\r\n'), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(up.messages.length, 1);
    const dirs = privateSpoolDirs(d.spoolDir);
    assert.equal(dirs.length, 1);
    assert.equal(owner(dirs[0] ?? '').mode, 0o700);
    assert.deepEqual(spoolFiles(d.spoolDir), []);
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
  }, undefined, FILTERED);
});

test('only the private spool directory removed (a tmp cleaner): made again (0700) and a message too big for memory is delivered', async () => {
  await withDaemon(async (d, up, c) => {
    const [dir] = privateSpoolDirs(d.spoolDir);
    assert.ok(dir);
    rmSync(dir, { recursive: true });
    assert.equal(await message(c, BIG), '250 2.0.0 Ok: queued as Q1\r\n');
    await d.waitForLog(/the spool directory .* was removed; made it again/);
    assert.ok(existsSync(dir));
    assert.equal(owner(dir).mode, 0o700);
    assert.equal(up.messages.length, 1);
    assert.equal(up.messages[0]?.toString("latin1"), BIG);
    assert.deepEqual(spoolFiles(d.spoolDir), []);
  });
});

// Without a filter, a message of up to 64 KiB is kept in memory and never touches the disk
// (issue 7); one that outgrows that bound is moved to a spool file as it arrives.
test('no filter, TempDirectory removed: a small message is still delivered; one over 64 KiB is read to its end, then 451; the session goes on', async () => {
  await withDaemon(async (d, up, c) => {
    rmSync(d.spoolDir, { recursive: true, force: true });
    assert.equal(await message(c, 'Subject: small\r\n\r\nsmall\r\n'), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(up.messages.length, 1);
    await envelope(c);
    assert.equal(await c.command('DATA'), '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
    c.send(BIG.replace('\r\n\r\n', '\r\n\r\nNOOP\r\nRSET\r\n'));
    // All of it is data: no reply until the end of data.
    const early = await c.reply(300).catch((e: Error) => e);
    assert.ok(early instanceof Error && /^timeout/.test(early.message), `a reply before the end of data: ${String(early)}`);
    c.send('.\r\n');
    assert.equal(await c.reply(), SPOOL_FAILED);
    await d.waitForLog(/cannot create .*ENOENT/);
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.deepEqual(up.sessions[0]?.commands.slice(-2), ['RSET\r\n', 'NOOP\r\n']);
    assert.equal(up.messages.length, 1);
  });
});


/**
 * Runs the daemon in a private mount namespace with a 256 KiB tmpfs as its TempDirectory
 * (the helper's `spool` directory beside the config file). Nothing outside changes; the
 * test sees the tmpfs through /proc/PID/root.
 */
function tinyTmpfs(argv: string[]): string[] {
  const file = argv[argv.indexOf('-f') + 1] ?? '';
  const spool = join(dirname(file), 'spool');
  return ['unshare', '-m', 'sh', '-c', 'mount -t tmpfs -o size=256k tmpfs "$0" && exec "$@"', spool, ...argv];
}

test('disk full in the middle of a 1 MB message: the data is read to its end, 451, body lines never run as commands; the session goes on', { skip: !isRoot && 'needs root (mount namespace)' }, async () => {
  await withDaemon(
    async (d, up, c) => {
      const pid = d.proc.pid ?? 0;
      const inside = `/proc/${pid}/root${d.spoolDir}`;
      // The daemon's TempDirectory really is the small tmpfs.
      const mounts = readFileSync(`/proc/${pid}/mounts`, 'utf8');
      assert.match(mounts, new RegExp(`^tmpfs ${d.spoolDir} tmpfs .*size=256k`, 'm'));

      // Lines an attacker would like to see executed if the rest of the body were taken
      // as commands once the spool failed.
      const smuggle = 'RSET\r\nMAIL FROM:<smuggled@x>\r\nRCPT TO:<smuggled@y>\r\nDATA\r\nQUIT\r\n';
      let body = 'Subject: too big for the disk\r\n\r\n';
      while (body.length < 1024 * 1024) body += `${'z'.repeat(200)}\r\n${smuggle}`;
      await envelope(c);
      assert.equal(await c.command('DATA'), '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
      await new Promise<void>((r) => c.socket.write(Buffer.from(body, 'latin1'), () => r()));
      // All of it is data: no reply until the end of data.
      const early = await c.reply(300).catch((e: Error) => e);
      assert.ok(early instanceof Error && /^timeout/.test(early.message), `a reply before the end of data: ${String(early)}\n${d.log().slice(-3000)}`);
      c.send('.\r\n');
      assert.equal(await c.reply(), SPOOL_FAILED);
      // The next reply is the NOOP's own: nothing of the body was answered as a command.
      assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
      await d.waitForLog(/ENOSPC|no space left/i);
      const cmds = up.sessions[0]?.commands ?? [];
      assert.ok(!cmds.some((l) => l.includes('smuggled')), cmds.join(''));
      assert.deepEqual(cmds, [
        'EHLO client.test\r\n',
        'MAIL FROM:<a@example.org>\r\n',
        'RCPT TO:<b@example.net>\r\n',
        'RSET\r\n',
        'NOOP\r\n',
      ]);
      assert.equal(up.messages.length, 0);
      // The partial spool file is gone, so the disk has room again.
      assert.deepEqual(
        readdirSync(inside).flatMap((n) => readdirSync(join(inside, n))),
        [],
      );

      // A small message now goes through on the same connection.
      assert.equal(await message(c, 'Subject: small\r\n\r\nsmall\r\n'), '250 2.0.0 Ok: queued as Q1\r\n');
      assert.equal(up.messages.length, 1);
      assert.equal(up.messages[0]?.toString('latin1'), 'Subject: small\r\n\r\nsmall\r\n');
      assert.deepEqual(
        readdirSync(inside).flatMap((n) => readdirSync(join(inside, n))),
        [],
      );
      assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    },
    { wrap: tinyTmpfs },
  );
});
