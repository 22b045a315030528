// Accounting wired into the daemon (issue 6): real smtpsiftd processes, real SMTP sessions,
// real sinks. The file log with a custom LogFormat, syslog lines on a test socket
// (SyslogSocket), the counters read back with `smtpsift stats --json`; what counts and what
// does not; %msize as the upstream received it; reopen on SIGHUP/SIGUSR1; two daemons on
// one counters database; the start-up checks of the config rows.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { syslogCollector } from './helpers/syslog.js';
import { join } from 'node:path';
import { ConfigError } from '../src/config/errors.js';
import { parseConfig } from '../src/config/load.js';
import { RawClient } from './helpers/client.js';
import { startDaemon, tempDir, type Daemon } from './helpers/daemon.js';
import { scripts } from './helpers/filter.js';
import { configFile, runDaemonCli, runSift, waitFor } from './helpers/process.js';
import { RecordingUpstream } from './helpers/upstream.js';


/** The upstream's copy of a message as its own content: dot-unstuffed (it keeps its final CRLF). */
function unstuffed(raw: Buffer): number {
  return Buffer.from(raw.toString('latin1').replace(/(^|\r\n)\.\./g, '$1.'), 'latin1').length;
}

function lines(path: string): string[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').split('\n').filter((l) => l !== '');
}

async function connect(d: Daemon): Promise<RawClient> {
  const c = await RawClient.connect(d.port);
  assert.match(await c.reply(), /^220 /);
  assert.match(await c.command('EHLO client.test'), /^250[ -]/);
  return c;
}

/** MAIL, RCPTs (accepted or refused), DATA; then the (dot-stuffed) body; the final reply. */
async function send(c: RawClient, from: string, to: readonly string[], body: string): Promise<string> {
  assert.match(await c.command(`MAIL FROM:<${from}>`), /^250 /);
  for (const r of to) assert.match(await c.command(`RCPT TO:<${r}>`), /^(250|550) /);
  assert.match(await c.command('DATA'), /^354 /);
  c.send(`${body}.\r\n`);
  return c.reply(10_000);
}

async function stats(db: string, by: string): Promise<{ by: string; rows: { key: string; bytes: number; messages: number }[]; total: { bytes: number; messages: number } }> {
  const r = await runSift(['stats', '--db', db, '--by', by, '--json']);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as never;
}

const FILTER = [
  'f="$TMPDIR/in.$$"; cat > "$f"',
  'if grep -q DROPME "$f"; then rm -f "$f"; echo "250 2.0.0 dropped" >&2; exit 1; fi',
  'if grep -q REJECTME "$f"; then rm -f "$f"; echo "550 5.7.1 rejected by filter" >&2; exit 1; fi',
  'if grep -q TEMPME "$f"; then rm -f "$f"; echo "451 4.7.1 try later" >&2; exit 1; fi',
  "sed 's/hello/HELLO, WORLD/' \"$f\"; rm -f \"$f\"",
].join('\n');

test('filelog+counters through real sessions: custom LogFormat, every status, what counts, %msize as the upstream got it', async () => {
  const t = tempDir('smtpsift-acct-');
  const sc = scripts(t.dir);
  const up = await RecordingUpstream.start();
  const logFile = join(t.dir, 'mail.log');
  const db = join(t.dir, 'counters');
  const d = await startDaemon({
    OutAddress: `127.0.0.1:${up.port}`,
    FilterCommand: sc.script('filter.sh', FILTER),
    Header: 'X-Sift: checked %i',
    LogType: 'filelog+counters',
    LogFile: logFile,
    CounterDatabase: db,
    log_format: '"%status|%msize|<%sender>|[%shost]|%dhost|%rcpts|%nrcpts|%helo|%reply|%id|%duration|100%%"',
  });
  try {
    const c = await connect(d);
    // Two recipients of a.example, one of b.example, one refused (c.example): counted once
    // per domain, once for the destination. A stuffed dot line and a line to rewrite.
    const body = 'Subject: one\r\n\r\nhello\r\n..dot line\r\nend\r\n';
    assert.match(await send(c, 's@x.example', ['a1@a.example', 'a2@A.example', 'b1@b.example', 'reject@c.example'], body), /^250 /);
    assert.match(await send(c, '', ['a1@a.example'], 'Subject: two\r\n\r\nREJECTME\r\n'), /^550 5\.7\.1 rejected by filter/);
    assert.match(await send(c, 's@x.example', ['a1@a.example'], 'Subject: three\r\n\r\nDROPME\r\n'), /^250 2\.0\.0 dropped/);
    assert.match(await send(c, 's@x.example', ['b1@b.example'], 'Subject: four\r\n\r\nTEMPME\r\n'), /^451 4\.7\.1/);
    assert.match(await c.command('QUIT'), /^221 /);
    c.close();
    const l = await waitFor(() => lines(logFile).length === 4 && lines(logFile), 'four log lines');
    assert.equal(up.messages.length, 1);
    const delivered = up.messages[0] ?? Buffer.alloc(0);
    assert.match(delivered.toString('latin1'), /X-Sift: checked 127\.0\.0\.1/);
    assert.match(delivered.toString('latin1'), /HELLO, WORLD\r\n\.\.dot line\r\n/);
    const size = unstuffed(delivered);
    const dhost = `127.0.0.1:${up.port}`;
    const f = l.map((x) => x.split('|'));
    assert.deepEqual(f[0]?.slice(0, 9), ['delivered', String(size), '<s@x.example>', '[127.0.0.1]', dhost, 'a1@a.example,a2@A.example,b1@b.example', '3', 'client.test', f[0]?.[8]]);
    assert.match(f[0]?.[8] ?? '', /^250 2\.0\.0 Ok: queued as Q\d+$/);
    // Not delivered: the size as received (unstuffed, CRLF, no final dot line).
    assert.deepEqual(f[1]?.slice(0, 9), ['rejected', String('Subject: two\r\n\r\nREJECTME\r\n'.length), '<>', '[127.0.0.1]', dhost, 'a1@a.example', '1', 'client.test', '550 5.7.1 rejected by filter']);
    assert.deepEqual(f[2]?.slice(0, 2), ['dropped', String('Subject: three\r\n\r\nDROPME\r\n'.length)]);
    assert.deepEqual(f[3]?.slice(0, 2), ['tempfail', String('Subject: four\r\n\r\nTEMPME\r\n'.length)]);
    const ids = new Set(f.map((x) => x[9]));
    assert.equal(ids.size, 4, 'a unique %id per message');
    for (const x of f) {
      assert.match(x[10] ?? '', /^\d+$/);
      assert.equal(x[11], '100%');
    }
    // Shutdown commits the counters.
    assert.equal(await d.stop(), 0);
    const byDomain = await stats(db, 'domain');
    assert.deepEqual(
      byDomain.rows.sort((a, b) => a.key.localeCompare(b.key)),
      [
        { key: 'a.example', bytes: size, messages: 1 },
        { key: 'b.example', bytes: size, messages: 1 },
      ],
    );
    assert.deepEqual((await stats(db, 'dest')).rows, [{ key: dhost, bytes: size, messages: 1 }]);
    assert.deepEqual((await stats(db, 'day')).rows, [{ key: new Date().toISOString().slice(0, 10), bytes: size, messages: 1 }]);
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('the default LogFormat (no %status): lines of delivered mail only, so logalyze -f CONF gives the counters\' totals', async () => {
  const t = tempDir('smtpsift-acct-');
  const sc = scripts(t.dir);
  const up = await RecordingUpstream.start();
  const logFile = join(t.dir, 'mail.log');
  const db = join(t.dir, 'counters');
  const d = await startDaemon({
    OutAddress: `127.0.0.1:${up.port}`,
    FilterCommand: sc.script('filter.sh', FILTER),
    LogType: 'filelog+counters',
    LogFile: logFile,
    CounterDatabase: db,
  });
  try {
    const c = await connect(d);
    const one = 'Subject: one\r\n\r\nfine\r\n';
    const two = 'Subject: two\r\n\r\nalso fine, a little longer\r\n';
    assert.match(await send(c, 's@x.example', ['a@a.example', 'b@b.example'], one), /^250 /);
    assert.match(await send(c, 's@x.example', ['a@a.example'], 'Subject: r\r\n\r\nREJECTME\r\n'), /^550 /);
    assert.match(await send(c, 's@x.example', ['a@a.example'], 'Subject: t\r\n\r\nTEMPME\r\n'), /^451 /);
    assert.match(await send(c, 's@x.example', ['a@a.example'], 'Subject: d\r\n\r\nDROPME\r\n'), /^250 2\.0\.0 dropped/);
    assert.match(await send(c, 's@x.example', ['a@a.example'], two), /^250 /);
    c.close();
    // A line for a rejected, temp-failed or dropped message would read as traffic: none.
    const l = await waitFor(() => lines(logFile).length >= 2 && lines(logFile), 'two log lines');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(lines(logFile).length, 2, lines(logFile).join('\n'));
    assert.match(l[0] ?? '', new RegExp(`^.+: ${one.length} bytes from <s@x\\.example> \\[127\\.0\\.0\\.1\\] to \\[127\\.0\\.0\\.1:${up.port}\\] for 'a@a\\.example,b@b\\.example'$`));
    // -f CONF: the daemon's own config file, so its (default) LogFormat.
    const fromLog = await runSift(['logalyze', '-f', d.configFile, '--json', logFile]);
    assert.equal(fromLog.status, 0, fromLog.stderr);
    assert.equal(await d.stop(), 0); // commits the counters
    const expected = { bytes: one.length + two.length, messages: 2 };
    assert.deepEqual((JSON.parse(fromLog.stdout) as { total: unknown }).total, expected);
    assert.deepEqual((await stats(db, 'domain')).total, expected);
    assert.deepEqual((await stats(db, 'dest')).total, expected);
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('SMTPUTF8 addresses: the accounting line has the bytes the client sent, counters the decoded domain', async () => {
  const t = tempDir('smtpsift-acct-');
  const up = await RecordingUpstream.start();
  const logFile = join(t.dir, 'mail.log');
  const db = join(t.dir, 'counters');
  const d = await startDaemon({
    OutAddress: `127.0.0.1:${up.port}`,
    LogType: 'filelog+counters',
    LogFile: logFile,
    CounterDatabase: db,
    LogFormat: '%status|%sender|%rcpts|%helo',
  });
  try {
    const c = await RawClient.connect(d.port);
    assert.match(await c.reply(), /^220 /);
    // RawClient sends a string's characters as bytes: these are the UTF-8 bytes.
    const utf8 = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');
    assert.match(await c.command(utf8('EHLO hôte.example')), /^250[ -]/);
    assert.match(await send(c, utf8('sénder@e2e.test'), [utf8('jürgen@Bücher.example'), 'x@plain.example'], 'Subject: u\r\n\r\nbody\r\n'), /^250 /);
    // Not UTF-8 (a lone latin1 byte): '?' in the line, which stays valid UTF-8.
    assert.match(await send(c, 'l\xe4tin@e2e.test', ['y@plain.example'], 'Subject: l\r\n\r\nbody\r\n'), /^250 /);
    c.close();
    await waitFor(() => lines(logFile).length === 2, 'two log lines');
    // Bytes in = bytes out, upstream and log alike.
    assert.equal(up.commands.find((x) => x.startsWith('MAIL')), `MAIL FROM:<${utf8('sénder@e2e.test')}>\r\n`);
    const raw = readFileSync(logFile);
    assert.equal(raw.toString('utf8'), 'delivered|sénder@e2e.test|jürgen@Bücher.example,x@plain.example|hôte.example\ndelivered|l?tin@e2e.test|y@plain.example|hôte.example\n');
    assert.equal(await d.stop(), 0);
    const r = await runSift(['stats', '--db', db, '--json', '--domain', 'BÜCHER.example']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as { rows: unknown }).rows, [{ key: 'bücher.example', bytes: 'Subject: u\r\n\r\nbody\r\n'.length, messages: 1 }]);
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('LogType syslog in routed mode: lines on SyslogSocket, %dhost the host used', async () => {
  const t = tempDir('smtpsift-acct-');
  const sock = join(t.dir, 'log.sock');
  const collector = syslogCollector(sock);
  const up = await RecordingUpstream.start();
  const d = await startDaemon({
    RouteType: 'nodb',
    RouteDefault: `127.0.0.1:${up.port}`,
    LogType: 'syslog',
    SyslogSocket: sock,
    LogFormat: '%status %msize <%sender> [%shost] to [%dhost] for %rcpts',
  });
  try {
    const c = await connect(d);
    const body = 'Subject: routed\r\n\r\nbody\r\n';
    assert.match(await send(c, 'r@x.example', ['u@d.example', 'reject@d.example'], body), /^250 /);
    c.close();
    await waitFor(() => collector.lines.length === 1, 'one syslog line');
    assert.match(collector.lines[0] ?? '', new RegExp(`^<22>\\w{3} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d smtpsiftd\\[${d.proc.pid}\\]: delivered ${body.length} <r@x\\.example> \\[127\\.0\\.0\\.1\\] to \\[127\\.0\\.0\\.1:${up.port}\\] for u@d\\.example$`));
  } finally {
    await d.stop();
    await up.close();
    collector.close();
    t.remove();
  }
});

test('the file log is reopened on SIGHUP and SIGUSR1 (logrotate)', async () => {
  const t = tempDir('smtpsift-acct-');
  const up = await RecordingUpstream.start();
  const logFile = join(t.dir, 'mail.log');
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, LogType: 'filelog', LogFile: logFile, LogFormat: '%status %rcpts' });
  try {
    const c = await connect(d);
    assert.match(await send(c, 's@x', ['one@d.example'], 'x\r\n'), /^250 /);
    await waitFor(() => lines(logFile).length === 1, 'first line');
    renameSync(logFile, `${logFile}.1`);
    d.proc.kill('SIGHUP');
    await d.waitForLog(/SIGHUP received; log file reopened/);
    assert.match(await send(c, 's@x', ['two@d.example'], 'x\r\n'), /^250 /);
    await waitFor(() => lines(logFile).length === 1, 'a line in the new file');
    renameSync(logFile, `${logFile}.2`);
    d.proc.kill('SIGUSR1');
    await d.waitForLog(/SIGUSR1 received; log file reopened/);
    assert.match(await send(c, 's@x', ['three@d.example'], 'x\r\n'), /^250 /);
    await waitFor(() => lines(logFile).length === 1, 'a line in the newest file');
    c.close();
    assert.deepEqual(lines(`${logFile}.1`), ['delivered one@d.example']);
    assert.deepEqual(lines(`${logFile}.2`), ['delivered two@d.example']);
    assert.deepEqual(lines(logFile), ['delivered three@d.example']);
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test("two daemons on one counters database (Moxy's gdbmlog + logfile_name), 1000 messages each: totals exact", async () => {
  const t = tempDir('smtpsift-acct-');
  const up = await RecordingUpstream.start();
  const db = join(t.dir, 'counters');
  const body = 'Subject: n\r\n\r\nbody\r\n';
  const N = 1000;
  const daemons = await Promise.all(
    [0, 1].map(() => startDaemon({ OutAddress: `127.0.0.1:${up.port}`, logtype: 'gdbmlog', logfile_name: db }, ['-d', '2'])),
  );
  try {
    await Promise.all(
      daemons.map(async (d) => {
        const c = await connect(d);
        for (let i = 0; i < N; i++) {
          c.send(`MAIL FROM:<s@x.example>\r\nRCPT TO:<r${i}@d.example>\r\nRCPT TO:<q@e.example>\r\nDATA\r\n`);
          for (const code of ['250', '250', '250', '354']) assert.equal((await c.reply()).slice(0, 3), code);
          c.send(`${body}.\r\n`);
          assert.match(await c.reply(), /^250 /);
        }
        c.close();
      }),
    );
    for (const d of daemons) assert.equal(await d.stop(), 0);
    const r = await stats(db, 'domain');
    assert.deepEqual(
      r.rows.sort((a, b) => a.key.localeCompare(b.key)),
      [
        { key: 'd.example', bytes: 2 * N * body.length, messages: 2 * N },
        { key: 'e.example', bytes: 2 * N * body.length, messages: 2 * N },
      ],
    );
    assert.deepEqual((await stats(db, 'dest')).rows, [{ key: `127.0.0.1:${up.port}`, bytes: 2 * N * body.length, messages: 2 * N }]);
  } finally {
    for (const d of daemons) await d.stop();
    await up.close();
    t.remove();
  }
});

test('config rows: Moxy names and quotes, FILE:LINE problems, an unknown token is exit 2 naming it', async () => {
  const c = parseConfig('OutAddress: 127.0.0.1:25\nlogtype: sys_and_gdbmlog\ncounterdatabase: /tmp/x\nlog_format: "<%sender> %msize"\nlog_dateformat: "%F %T"\n', 'f.conf');
  assert.equal(c.logType, 'syslog+counters');
  assert.equal(c.logFormat, '<%sender> %msize');
  assert.equal(c.logDateFormat, '%F %T');
  assert.equal(c.syslogSocket, '/dev/log');
  assert.equal(parseConfig('OutAddress: 127.0.0.1:25\n', 'f').logType, 'nolog');
  const problems = (text: string): string[] => {
    try {
      parseConfig(text, 'f.conf');
    } catch (e) {
      if (e instanceof ConfigError) return [...e.problems];
      throw e;
    }
    return [];
  };
  assert.deepEqual(problems('OutAddress: 127.0.0.1:25\nLogType: filelog\n'), ['f.conf:2: LogType: filelog needs LogFile']);
  assert.deepEqual(problems('OutAddress: 127.0.0.1:25\nLogType: filelog+counters\nLogFile: /tmp/l\n'), ['f.conf:2: LogType: filelog+counters needs CounterDatabase']);
  assert.match(problems('OutAddress: 127.0.0.1:25\nLogType: mysql\n')[0] ?? '', /^f\.conf:2: LogType: 'mysql' is not one of/);
  assert.match(problems('OutAddress: 127.0.0.1:25\nLogDateFormat: %Q\n')[0] ?? '', /^f\.conf:2: LogDateFormat: unknown conversion %Q/);
  const conf = configFile('OutAddress: 127.0.0.1:25\nLogType: syslog\nLogFormat: %date %bogus\n');
  try {
    const r = await runDaemonCli(['-d', '2', '-f', conf.file]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, new RegExp(`${conf.file.replace(/[.]/g, '\\.')}:3: LogFormat: unknown token %bogus`));
  } finally {
    conf.remove();
  }
});
