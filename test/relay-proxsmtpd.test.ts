// Issue 2: conversations where smtpsiftd must behave exactly as the real proxsmtpd 1.10
// (/usr/sbin/proxsmtpd, Debian package proxsmtp). Both are run against the same scripted
// upstream; the client's transcript and the upstream's commands must be equal. A missing
// proxsmtpd fails these tests (CI installs it).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream, DEFAULT_EHLO, type UpstreamOptions, SPEC_EHLO } from './helpers/upstream.js';
import { startProxsmtpd } from './helpers/proxsmtpd.js';

const T = { timeout: 20_000 };

type Script = (c: RawClient) => Promise<string[]>;

interface Seen {
  /** Every reply the client got, in order. */
  readonly transcript: string[];
  /** What the upstream received, by connection. */
  readonly commands: string[][];
  /** The DATA bytes the upstream received, as on the wire. */
  readonly messages: string[];
  /** The daemon's `-d 4` log. */
  readonly log: string;
}

/** Waits until the daemon has logged `re` (its stderr arrives on its own schedule). */
async function logged(log: () => string, re: RegExp, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!re.test(log())) {
    if (Date.now() > deadline) throw new Error(`the log never matched ${re}:\n${log()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * `until`: a log line to wait for before stopping the daemon, when the test reads the log.
 */
async function run(
  which: 'proxsmtpd' | 'smtpsiftd',
  upstream: UpstreamOptions,
  config: Record<string, string>,
  script: Script,
  until?: RegExp,
): Promise<Seen> {
  const up = await RecordingUpstream.start(upstream);
  const options = { OutAddress: `127.0.0.1:${up.port}`, ...config };
  const server = which === 'proxsmtpd' ? await startProxsmtpd(options) : await startDaemon(options);
  let c: RawClient | undefined;
  try {
    c = await RawClient.connect(server.port);
    const transcript = await script(c);
    if (until !== undefined) await logged(() => server.log(), until);
    return {
      transcript,
      commands: up.sessions.map((s) => [...s.commands]),
      messages: up.messages.map((m) => m.toString('latin1')),
      log: server.log(),
    };
  } finally {
    c?.close();
    await server.stop();
    await up.close();
  }
}

/**
 * Runs the script against both and asserts they were seen alike; returns smtpsiftd's.
 * smtpsiftd runs with `Pipelining: off`, proxsmtpd's behaviour (keeping PIPELINING is a
 * deliberate difference, design.md).
 */
async function compare(script: Script, upstream: UpstreamOptions = {}, siftOnly: Record<string, string> = { Pipelining: 'off' }): Promise<Seen> {
  const theirs = await run('proxsmtpd', upstream, {}, script);
  const ours = await run('smtpsiftd', upstream, siftOnly, script);
  assert.deepEqual(ours.transcript, theirs.transcript, 'the client saw something else than with proxsmtpd');
  assert.deepEqual(ours.commands, theirs.commands, 'the upstream got something else than with proxsmtpd');
  assert.deepEqual(ours.messages, theirs.messages, 'the upstream got another message than with proxsmtpd');
  return ours;
}

/** The greeting, then each command's reply; a final NOOP round trip proves the upstream saw everything. */
function conversation(...commands: string[]): Script {
  return async (c) => {
    const out = [await c.reply()];
    for (const cmd of [...commands, 'NOOP\r\n']) {
      c.send(cmd);
      out.push(await c.reply());
    }
    return out;
  };
}

test('proxsmtpd equality: the greeting rewrite (single-line, multi-line, non-220)', T, async () => {
  for (const greeting of ['220 upstream.test ESMTP secret-banner', '220-upstream.test ESMTP\r\n220 second line', '554 5.3.2 upstream.test busy']) {
    const seen = await compare(conversation(), { greeting });
    assert.equal(seen.transcript[0], greeting.startsWith('220 ') ? '220 smtp.passthru\r\n' : `${greeting}\r\n`);
  }
});

test('proxsmtpd equality: the EHLO rewrite of the same upstream list (PIPELINING hidden with Pipelining: off)', T, async () => {
  const ehlo = SPEC_EHLO;
  const seen = await compare(conversation('EHLO client.test\r\n', 'HELO client.test\r\n'), { ehlo });
  assert.equal(
    seen.transcript[1],
    '250-smtp.passthru\r\n250-SIZE 104857600\r\n250-VRFY\r\n250-ETRN\r\n250-AUTH PLAIN LOGIN\r\n' +
      '250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n' +
      '250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n',
  );
  // A removed last line, and a rejected EHLO.
  await compare(conversation('EHLO client.test\r\n'), { ehlo: DEFAULT_EHLO.slice(0, -1).concat('250 CHUNKING') });
  const respond = (line: string): string | null => (line.startsWith('EHLO') ? '501-5.5.4 no\r\n501 5.5.4 not you' : null);
  await compare(conversation('EHLO client.test\r\n'), { respond });
});

test('proxsmtpd equality: VRFY, unknown verbs and multi-line replies relayed byte for byte', T, async () => {
  const respond = (line: string): string | null => {
    if (line.startsWith('vrfy')) return '252 2.1.5 upstream-vrfy-text';
    if (line.startsWith('XYZZY')) return '500 Error: command "XYZZY" not recognized';
    if (line.startsWith('HELP')) return '214-2.0.0 first\r\n214 2.0.0 last';
    return null;
  };
  await compare(
    conversation('EHLO client.test\r\n', 'vrfy Joe.User\r\n', 'XYZZY some args\r\n', 'HELP\r\n', 'mail from:<Odd.Case@Example.ORG>\r\n', 'STARTTLS\r\n', 'XCLIENT ADDR=1.2.3.4\r\n'),
    { respond },
  );
});

test('proxsmtpd equality: a rejected RCPT', T, async () => {
  const respond = (line: string): string | null =>
    /nobody/.test(line) ? '550-5.1.1 <nobody@example.net>: Recipient address rejected\r\n550 5.1.1 User unknown' : null;
  const seen = await compare(
    conversation(
      'EHLO client.test\r\n',
      'MAIL FROM:<a@example.org>\r\n',
      'RCPT TO:<b@example.net>\r\n',
      'RCPT TO:<nobody@example.net>\r\n',
      'RCPT TO:<reject@example.net>\r\n',
      'RSET\r\n',
    ),
    { respond },
  );
  assert.equal(seen.transcript[4], '550-5.1.1 <nobody@example.net>: Recipient address rejected\r\n550 5.1.1 User unknown\r\n');
});

test('proxsmtpd equality: a command line of 4222 bytes gets 500 Line too long, 4221 bytes is forwarded', T, async () => {
  await compare(conversation(`NOOP ${'a'.repeat(4221 - 7)}\r\n`, `NOOP ${'b'.repeat(4222 - 7)}\r\n`));
});

test('proxsmtpd equality: a CRLF message with dot-stuffed lines, its 354 and final reply', T, async () => {
  const body = 'Subject: dots\r\n\r\n..leading\r\n..\r\n8bit \xe9\0\r\n';
  const seen = await compare(
    conversation('EHLO client.test\r\n', 'MAIL FROM:<a@example.org>\r\n', 'RCPT TO:<b@example.net>\r\n', 'DATA\r\n', `${body}.\r\n`),
  );
  assert.deepEqual(seen.messages, [body]);
  assert.equal(seen.transcript[4], '354 Start mail input; end with <CRLF>.<CRLF>\r\n');
});

test('proxsmtpd equality: a TAB after the reply code is a last line: the greeting is rewritten, other replies relayed as they came (audit D6)', T, async () => {
  const respond = (line: string): string | null => {
    if (line.startsWith('MAIL')) return '250\t2.1.0 tab ok';
    if (line.startsWith('HELP')) return '214-2.0.0 first\r\n214\t2.0.0 last, after a TAB';
    if (line.startsWith('NOOP')) return '250\tok tab';
    return null;
  };
  const seen = await compare(
    conversation('EHLO client.test\r\n', 'MAIL FROM:<a@example.org>\r\n', 'HELP\r\n', 'RCPT TO:<b@example.net>\r\n'),
    { greeting: '220\tupstream.test tab', respond },
  );
  assert.deepEqual(seen.transcript, [
    '220 smtp.passthru\r\n',
    '250-smtp.passthru\r\n250-SIZE 104857600\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n',
    '250\t2.1.0 tab ok\r\n',
    '214-2.0.0 first\r\n214\t2.0.0 last, after a TAB\r\n',
    '250 2.1.5 Ok\r\n',
    '250\tok tab\r\n',
  ]);
});

/** The `-d 4` dialogue lines of a log, by direction (`CLIENT <` ...), in order. */
function dialogue(log: string): Map<string, string[]> {
  const byDirection = new Map<string, string[]>();
  for (const m of log.matchAll(/^\w+: [0-9A-F]{6}: ((?:CLIENT|SERVER) [<>]) (.*)$/gm)) {
    const [, direction = '', line = ''] = m;
    byDirection.set(direction, [...(byDirection.get(direction) ?? []), line]);
  }
  return byDirection;
}

test('proxsmtpd equality: the -d 4 dialogue: CLIENT < received, CLIENT > sent, SERVER > sent, SERVER < each reply line, cut at 79 (audit D7)', T, async () => {
  const respond = (line: string): string | null => (line.startsWith('HELP') ? '214-2.0.0 first\r\n214 2.0.0 last' : null);
  const script = conversation(
    'EHLO client.test\r\n',
    'MAIL FROM:<a@example.org>\r\n',
    'RCPT TO:<b@example.net>\r\n',
    'DATA\r\n',
    'Subject: logged?\r\n\r\nthe body is never logged\r\n.\r\n',
    'HELP\r\n',
    `NOOP ${'x'.repeat(100)}\r\n`,
    'QUIT\r\n',
  );
  // Ends with the QUIT's 221 (the conversation's own NOOP then finds the connection closed).
  const quiet: Script = async (c) => script(c).catch(() => []);
  const theirs = await run('proxsmtpd', { respond }, {}, quiet, /CLIENT > 221 /);
  const ours = await run('smtpsiftd', { respond }, { Pipelining: 'off' }, quiet, /CLIENT > 221 /);
  const expected = dialogue(theirs.log);
  assert.deepEqual(dialogue(ours.log), expected, `smtpsiftd's dialogue:\n${ours.log}\nproxsmtpd's:\n${theirs.log}`);
  // What the test is about, spelled out.
  assert.deepEqual(expected.get('CLIENT <')?.slice(0, 2), ['EHLO client.test', 'MAIL FROM:<a@example.org>']);
  assert.deepEqual(expected.get('SERVER <')?.slice(0, 3), ['220 upstream.test ESMTP recording', '250-upstream.test Hello', '250-PIPELINING']);
  assert.deepEqual(expected.get('CLIENT >')?.slice(0, 2), ['220 smtp.passthru', '250-smtp.passthru']);
  assert.ok(expected.get('SERVER >')?.includes('.'), 'the end of data is logged');
  assert.ok(expected.get('SERVER <')?.includes('214-2.0.0 first'), 'every line of a multi-line reply is logged');
  assert.ok(expected.get('CLIENT <')?.includes(`NOOP ${'x'.repeat(74)}`), 'a line is cut at 79 characters');
  assert.doesNotMatch(ours.log, /body is never logged/);
});
