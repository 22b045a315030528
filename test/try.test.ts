// Issue 3: `smtpsift try` runs the configured filter on a message exactly as the daemon
// would. Every test here runs both, the real daemon (with a recording upstream) and `smtpsift
// try -f` on the daemon's own config file, with the same filter and the same message, and
// checks that they agree: the environment the filter saw, the verdict, the client's reply,
// the message the upstream would get (Header included), and try's exit status.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SMTPSIFT, startDaemon, tempDir, type Daemon } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream } from './helpers/upstream.js';
import { unstuff, verbs } from './helpers/relay.js';
import { configFile, spoolFiles } from './helpers/process.js';

const T = { timeout: 60_000 };
const FILTER_TIMEOUT = 2;

/**
 * The test filter. It records its environment (NUL-separated, as `env -0` prints it) in the
 * file named by its first argument, then does what the message's `X-Verdict:` header says.
 * It works in both modes: the message on stdin (pipe) or in $EMAIL (file).
 */
const JUDGE = `#!/bin/sh
env -0 > "$1"
if [ -n "\${EMAIL+set}" ]; then
    stat -c %a "$EMAIL" > "$1.mode"
    msg=$EMAIL
else
    msg=$(mktemp) || exit 75
    trap 'rm -f "$msg"' EXIT
    cat > "$msg"
fi
verdict=$(sed -n 's/^X-Verdict: *\\([a-z]*\\).*/\\1/p' "$msg" | head -n 1)
case $verdict in
    accept)
        if [ -n "\${EMAIL+set}" ]; then
            { printf 'X-Judged: yes\\r\\n'; cat "$EMAIL"; } > "$EMAIL.new" && mv "$EMAIL.new" "$EMAIL"
        else
            printf 'X-Judged: yes\\r\\n'; cat "$msg"
        fi ;;
    code) echo '554 5.7.1 Refused by judge' >&2; exit 1 ;;
    text) echo 'first line' >&2; echo '   looks like spam   ' >&2; echo '' >&2; exit 1 ;;
    silent) exit 1 ;;
    drop) echo '250 2.0.0 Dropped' >&2; exit 1 ;;
    tempfail) echo '451 4.7.1 Try again later' >&2; exit 1 ;;
    info) echo '354 go on' >&2; exit 1 ;;
    notfound) /nonexistent/scanner; exit $? ;;
    signal) kill -9 $$ ;;
    sleep) sleep 29.7 ;;
esac
`;

/** A message for the judge: CRLF lines, a lone dot line and a dot-led line in the body. */
const message = (verdict: string): string =>
  `From: alice@example.org\r\nTo: bob@example.net\r\nSubject: try ${verdict}\r\nX-Verdict: ${verdict}\r\n\r\n` +
  `Hello.\r\n.\r\n..two dots\r\nBye.\r\n`;

/** The SMTP dot-stuffing a client adds. */
const stuff = (m: string): string => m.replace(/^\./gm, '..');

interface TryResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The `name: value` lines of stdout. */
  readonly fields: Map<string, string>;
}

/** `smtpsift try ARGS < input`. */
function runTry(args: readonly string[], input: string, timeoutMs = 15_000): Promise<TryResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [SMTPSIFT, 'try', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString('latin1')));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString('latin1')));
    proc.stdin.on('error', () => undefined);
    proc.stdin.end(Buffer.from(input, 'latin1'));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`smtpsift try did not exit in ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    proc.on('close', (status) => {
      clearTimeout(timer);
      const fields = new Map<string, string>();
      for (const line of stdout.split('\n')) {
        const m = /^(\w+): (.*)$/.exec(line);
        if (m?.[1] !== undefined && m[2] !== undefined) fields.set(m[1], m[2]);
      }
      resolve({ status, stdout, stderr, fields });
    });
  });
}

const OURS = ['SENDER', 'RECIPIENTS', 'CLIENT', 'SERVER', 'REMOTE', 'REMOTE_HELO', 'EMAIL', 'TMPDIR'];

/** The variables of ours that the filter recorded (absent ones are absent from the map). */
function recordedEnv(file: string): Map<string, string> {
  const env = new Map<string, string>();
  for (const entry of readFileSync(file, 'latin1').split('\0')) {
    const eq = entry.indexOf('=');
    const name = entry.slice(0, eq);
    if (eq > 0 && OURS.includes(name)) env.set(name, entry.slice(eq + 1));
  }
  rmSync(file);
  return env;
}

interface Bench {
  readonly up: RecordingUpstream;
  readonly d: Daemon;
  /** The judge's environment record. */
  readonly record: string;
  readonly client: RawClient;
}

/** A recording upstream, the daemon running the judge with `config`, and a client past EHLO. */
async function withBench(config: Record<string, string>, fn: (b: Bench) => Promise<void>): Promise<void> {
  const t = tempDir('smtpsift-try-judge-');
  const judge = join(t.dir, 'judge.sh');
  writeFileSync(judge, JUDGE);
  chmodSync(judge, 0o755);
  const record = join(t.dir, 'env');
  const up = await RecordingUpstream.start();
  let d: Daemon | undefined;
  let client: RawClient | undefined;
  try {
    d = await startDaemon({
      OutAddress: `127.0.0.1:${up.port}`,
      FilterCommand: `${judge} ${record}`,
      FilterTimeout: String(FILTER_TIMEOUT),
      ...config,
    });
    client = await RawClient.connect(d.port);
    assert.match(await client.reply(), /^220 /);
    assert.match(await client.command('EHLO client.test'), /^250[ -]/);
    await fn({ up, d, record, client });
  } finally {
    client?.close();
    await d?.stop();
    await up.close();
    t.remove();
  }
}

/** One message through the daemon: XFORWARD (if given), MAIL, RCPTs, DATA; the final reply. */
async function sendThrough(
  c: RawClient,
  msg: string,
  env: { sender: string; rcpts: string[]; xforward?: string },
): Promise<string> {
  if (env.xforward !== undefined) assert.match(await c.command(`XFORWARD ${env.xforward}`), /^250 /);
  assert.match(await c.command(`MAIL FROM:<${env.sender === '<>' ? '' : env.sender}>`), /^250 /);
  for (const r of env.rcpts) assert.match(await c.command(`RCPT TO:<${r}>`), /^250 /);
  assert.match(await c.command('DATA'), /^354 /);
  c.send(`${stuff(msg)}.\r\n`);
  return c.reply(10_000);
}

const ENVELOPE = { sender: 'alice@example.org', rcpts: ['bob@example.net', 'carol@example.net'] };
const TRY_ENVELOPE = ['--sender', 'alice@example.org', '--rcpt', 'bob@example.net', '--rcpt', 'carol@example.net', '--client', '127.0.0.1'];

for (const mode of ['pipe', 'file'] as const) {
  test(`FilterType ${mode}: the filter's environment under try is the daemon's`, T, async () => {
    await withBench({ FilterType: mode }, async ({ d, record, client }) => {
      // With XFORWARD data: REMOTE and REMOTE_HELO are set.
      const r = await runTry(
        ['-f', d.configFile, ...TRY_ENVELOPE, '--remote', '192.0.2.7', '--helo', 'mx.example.org'],
        message('accept'),
      );
      assert.equal(r.status, 0, r.stderr);
      const viaTry = recordedEnv(record);
      const tryMode = mode === 'file' ? readFileSync(`${record}.mode`, 'utf8') : undefined;
      assert.match(
        await sendThrough(client, message('accept'), { ...ENVELOPE, xforward: 'NAME=mx.example.org ADDR=192.0.2.7 HELO=mx.example.org' }),
        /^250 2\.0\.0 Ok: queued/,
      );
      const viaDaemon = recordedEnv(record);

      const expected = {
        SENDER: 'alice@example.org',
        RECIPIENTS: 'bob@example.net\ncarol@example.net',
        CLIENT: '127.0.0.1',
        SERVER: '127.0.0.1',
        REMOTE: '192.0.2.7',
        REMOTE_HELO: 'mx.example.org',
        TMPDIR: d.spoolDir,
      };
      for (const [source, env] of [['daemon', viaDaemon], ['try', viaTry]] as const) {
        for (const [name, value] of Object.entries(expected)) assert.equal(env.get(name), value, `${source}: ${name}`);
        if (mode === 'pipe') {
          assert.equal(env.has('EMAIL'), false, `${source}: EMAIL is set in pipe mode`);
        } else {
          // A private 0600 file under TempDirectory (in a directory of its own).
          const email = env.get('EMAIL') ?? '';
          assert.ok(email.startsWith(`${d.spoolDir}/`), `${source}: EMAIL=${email}`);
        }
      }
      if (mode === 'file') {
        assert.equal(tryMode?.trim(), '600');
        assert.equal(readFileSync(`${record}.mode`, 'utf8').trim(), '600');
      }
    });
  });
}

test('unknown values are absent under both, and the null sender is <>', T, async () => {
  await withBench({}, async ({ d, record, client }) => {
    const r = await runTry(['-f', d.configFile, '--sender', '<>', '--rcpt', '<bob@example.net>', '--client', '127.0.0.1'], message('accept'));
    assert.equal(r.status, 0, r.stderr);
    const viaTry = recordedEnv(record);
    assert.match(await sendThrough(client, message('accept'), { sender: '<>', rcpts: ['bob@example.net'] }), /^250 /);
    const viaDaemon = recordedEnv(record);
    assert.deepEqual(viaTry, viaDaemon);
    for (const env of [viaTry, viaDaemon]) {
      assert.equal(env.get('SENDER'), '<>');
      assert.equal(env.get('RECIPIENTS'), 'bob@example.net');
      // No XFORWARD: not empty, absent.
      assert.equal(env.has('REMOTE'), false);
      assert.equal(env.has('REMOTE_HELO'), false);
      assert.equal(env.has('EMAIL'), false);
    }
  });
});

/** Each verdict: the client's reply from the daemon, and try's exit status. */
const VERDICTS: { verdict: string; reply: string | RegExp; action: string; status: number }[] = [
  { verdict: 'accept', reply: /^250 2\.0\.0 Ok: queued as Q\d+$/, action: 'accept', status: 0 },
  { verdict: 'code', reply: '554 5.7.1 Refused by judge', action: 'reject', status: 1 },
  { verdict: 'text', reply: '550 Content Rejected; looks like spam', action: 'reject', status: 1 },
  { verdict: 'silent', reply: '550 Content Rejected; Content Rejected', action: 'reject', status: 1 },
  { verdict: 'info', reply: '550 Content Rejected; 354 go on', action: 'reject', status: 1 },
  { verdict: 'drop', reply: '250 2.0.0 Dropped', action: 'drop', status: 3 },
  { verdict: 'tempfail', reply: '451 4.7.1 Try again later', action: 'tempfail', status: 4 },
  { verdict: 'notfound', reply: '451 Local Error', action: 'tempfail', status: 4 },
  { verdict: 'signal', reply: '451 Local Error', action: 'tempfail', status: 4 },
  { verdict: 'sleep', reply: '451 Local Error', action: 'tempfail', status: 4 },
];

/** Processes still running `sleep 29.7` (the judge's grandchild in the timeout case). */
function sleepers(): number[] {
  const found: number[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'latin1') === 'sleep\u000029.7\u0000') found.push(Number(pid));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

for (const mode of ['pipe', 'file'] as const) {
  test(`FilterType ${mode}: every verdict, reply and message under try is the daemon's`, T, async () => {
    await withBench({ FilterType: mode, Header: 'X-Sift: client=%i local=%l' }, async ({ up, d, record, client }) => {
      for (const v of VERDICTS) {
        const msg = message(v.verdict);
        const started = Date.now();
        const r = await runTry(['-f', d.configFile, ...TRY_ENVELOPE], msg);
        if (v.verdict === 'sleep') {
          // FilterTimeout bounds the whole run, and the process group dies with it.
          assert.ok(Date.now() - started < (FILTER_TIMEOUT + 3) * 1000, 'try took too long');
        }
        assert.equal(r.status, v.status, `try ${v.verdict}: ${r.stdout}${r.stderr}`);
        assert.equal(r.fields.get('verdict'), v.action, v.verdict);
        const messagesBefore = up.messages.length;
        const commandsBefore = up.commands.length;
        const daemonReply = await sendThrough(client, msg, ENVELOPE);
        assert.ok(daemonReply.endsWith('\r\n') && !daemonReply.slice(0, -2).includes('\n'), daemonReply);
        const line = daemonReply.slice(0, -2);
        if (typeof v.reply === 'string') assert.equal(line, v.reply, `daemon ${v.verdict}`);
        else assert.match(line, v.reply, `daemon ${v.verdict}`);
        const upstreamVerbs = verbs(up.commands.slice(commandsBefore));
        if (v.action === 'accept') {
          // try names the file the upstream would get (before dot-stuffing): the very bytes.
          assert.equal(r.fields.get('reply'), "the upstream's own reply to the message");
          const file = r.fields.get('message') ?? '';
          const tried = readFileSync(file, 'latin1');
          const delivered = up.messages[messagesBefore];
          assert.ok(delivered, 'nothing delivered');
          assert.equal(unstuff(delivered).toString('latin1'), tried);
          // The filter's edit, the Header before the blank line, the dot lines intact.
          assert.equal(
            tried,
            'X-Judged: yes\r\nFrom: alice@example.org\r\nTo: bob@example.net\r\nSubject: try accept\r\nX-Verdict: accept\r\n' +
              'X-Sift: client=127.0.0.1 local=127.0.0.1\r\n\r\nHello.\r\n.\r\n..two dots\r\nBye.\r\n',
          );
          assert.deepEqual(readdirSync(join(file, '..')), ['outgoing.eml'], 'try left its work files');
          rmSync(join(file, '..'), { recursive: true });
          assert.ok(upstreamVerbs.includes('DATA'));
        } else {
          assert.equal(r.fields.get('reply'), line, `try and the daemon disagree on ${v.verdict}`);
          assert.equal(up.messages.length, messagesBefore, `${v.verdict} delivered something`);
          assert.ok(!upstreamVerbs.includes('DATA'), `${v.verdict}: DATA went upstream`);
          assert.equal(upstreamVerbs.at(-1), 'RSET', `${v.verdict}: no RSET upstream`);
          assert.equal(r.fields.has('message'), false);
        }
        if (v.verdict === 'sleep') assert.deepEqual(sleepers(), [], "the filter's grandchild outlived FilterTimeout");
        rmSync(record, { force: true });
        rmSync(`${record}.mode`, { force: true });
      }
      // try left nothing behind in TempDirectory, the daemon nothing in its spool.
      assert.deepEqual(readdirSync(d.spoolDir).filter((n) => n.startsWith('smtpsift-try-')), []);
      assert.deepEqual(spoolFiles(d.spoolDir), []);
      // The session went on after every verdict.
      assert.match(await client.command('NOOP'), /^250 /);
    });
  });
}

test('no FilterCommand: try and the daemon pass the message with the Header', T, async () => {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, Header: 'Received: from %i by smtpsift' });
  const c = await RawClient.connect(d.port);
  try {
    const msg = 'Subject: no filter\r\n\r\nbody\r\n';
    const r = await runTry(['-f', d.configFile, '--client', '127.0.0.1'], msg);
    assert.equal(r.status, 0, r.stderr);
    const tried = readFileSync(r.fields.get('message') ?? '', 'latin1');
    assert.equal(tried, `Received: from 127.0.0.1 by smtpsift\r\n${msg}`);
    assert.match(await c.reply(), /^220 /);
    assert.match(await c.command('HELO client.test'), /^250 /);
    assert.match(await sendThrough(c, msg, { sender: 'a@example.org', rcpts: ['b@example.net'] }), /^250 /);
    assert.equal(unstuff(up.messages[0] ?? Buffer.alloc(0)).toString('latin1'), tried);
  } finally {
    c.close();
    await d.stop();
    await up.close();
  }
});

test('FilterType reject: try answers FilterReject, as the daemon answers MAIL', T, async () => {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, FilterType: 'reject', FilterReject: 'No mail accepted here' });
  const c = await RawClient.connect(d.port);
  try {
    const r = await runTry(['-f', d.configFile], 'Subject: x\r\n\r\nx\r\n');
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.fields.get('verdict'), 'reject');
    assert.equal(r.fields.get('reply'), '550 Content Rejected; No mail accepted here');
    assert.match(await c.reply(), /^220 /);
    assert.match(await c.command('HELO client.test'), /^250 /);
    assert.equal(await c.command('MAIL FROM:<a@example.org>'), `${r.fields.get('reply')}\r\n`);
  } finally {
    c.close();
    await d.stop();
    await up.close();
  }
});

test('usage and configuration errors exit with 2', T, async () => {
  const good = configFile('OutAddress: 127.0.0.1:2525\nFilterCommand: cat\n');
  const bad = configFile('OutAddress: 127.0.0.1:2525\nFilterType: sideways\nno colon here\n');
  try {
    writeFileSync(good.file, `OutAddress: 127.0.0.1:2525\nTempDirectory: ${good.spool}\nFilterCommand: cat\n`);
    const ok = await runTry(['-f', good.file], 'Subject: x\r\n\r\nx\r\n');
    assert.equal(ok.status, 0, ok.stderr);

    const unknownFlag = await runTry(['-f', good.file, '--bogus'], '');
    assert.equal(unknownFlag.status, 2);
    assert.match(unknownFlag.stderr, /usage: smtpsift/);

    const missing = await runTry(['-f', join(good.dir, 'nonexistent.conf')], '');
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /nonexistent\.conf/);

    const invalid = await runTry(['-f', bad.file], '');
    assert.equal(invalid.status, 2);
    assert.match(invalid.stderr, /:2: .*FilterType/);
    assert.match(invalid.stderr, /:3: /);
    // --client and --server are IP addresses (smtpsift(1)): anything else is a usage error,
    // before the filter runs.
    const notIp = await runTry(['-f', good.file, '--client', 'notanip'], 'Subject: x\r\n\r\nx\r\n');
    assert.equal(notIp.status, 2);
    assert.match(notIp.stderr, /--client: 'notanip' is not an IP address/);
    const notIpServer = await runTry(['-f', good.file, '--server', '127.0.0.1:25'], 'Subject: x\r\n\r\nx\r\n');
    assert.equal(notIpServer.status, 2);
    assert.match(notIpServer.stderr, /--server: '127\.0\.0\.1:25' is not an IP address/);
    const v6 = await runTry(['-f', good.file, '--client', '2001:db8::7'], 'Subject: x\r\n\r\nx\r\n');
    assert.equal(v6.status, 0, v6.stderr);
    for (const r of [unknownFlag, missing, invalid, notIp, notIpServer]) assert.equal(r.stdout, '');
  } finally {
    good.remove();
    bad.remove();
  }
  assert.equal(existsSync(good.dir), false);
});

test('run as root with a User, try runs the filter as that user, as the daemon does', { ...T, skip: process.getuid?.() !== 0 && 'needs root' }, async () => {
  const conf = configFile('');
  try {
    chmodSync(conf.dir, 0o755);
    chmodSync(conf.spool, 0o1777);
    writeFileSync(conf.file, `OutAddress: 127.0.0.1:2525\nTempDirectory: ${conf.spool}\nUser: nobody\nFilterCommand: echo "554 5.7.1 uid $(id -u)" >&2; exit 1\n`);
    const r = await runTry(['-f', conf.file], 'Subject: x\r\n\r\nx\r\n');
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.fields.get('reply'), '554 5.7.1 uid 65534');
  } finally {
    conf.remove();
  }
});
