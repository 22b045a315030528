// smtpsiftd's command line (issue #2, spec §1): `[-d level] [-f configfile] [-p pidfile]`,
// `-v`, parsed getopt-style; the pid file; and `smtpsift check`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, tempDir } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream } from './helpers/upstream.js';
import { configFile, runDaemonCli, runSift } from './helpers/process.js';

const USAGE = 'usage: smtpsiftd [-d debuglevel] [-f configfile] [-p pidfile]\n       smtpsiftd -v\n';

test('-v prints the version and the default config path, exit 0', async () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  const r = await runDaemonCli(['-v']);
  assert.equal(r.status, 0);
  assert.equal(r.stderr, '');
  assert.equal(r.stdout, `smtpsiftd (version ${pkg.version})\n          (config: /etc/smtpsiftd.conf)\n`);
});

test('an unknown flag, a flag without its value, or an extra argument: usage on stderr, exit 2', async () => {
  for (const args of [['-x'], ['-d'], ['-f'], ['-d', '1', 'extra'], ['--help']]) {
    const r = await runDaemonCli(args);
    assert.equal(r.status, 2, args.join(' '));
    assert.equal(r.stdout, '', args.join(' '));
    assert.ok(r.stderr.startsWith('smtpsiftd: '), r.stderr);
    assert.ok(r.stderr.endsWith(USAGE), `${args.join(' ')}: ${r.stderr}`);
  }
});

test('-d 9 and -d x are refused with the allowed range, exit 2', async () => {
  const conf = configFile('OutAddress: 127.0.0.1:2525\n');
  try {
    for (const level of ['9', '5', 'x', '']) {
      const r = await runDaemonCli(['-d', level, '-f', conf.file]);
      assert.equal(r.status, 2, `-d '${level}': ${r.stderr}`);
      assert.equal(r.stderr, `smtpsiftd: invalid debug log level '${level}' (must be between 0 and 4)\n`);
    }
  } finally {
    conf.remove();
  }
});

test('getopt forms: -d4 and -ffile work (level 4 logs the dialogue)', async () => {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}` }, ['-d4'], { fileArgs: (f) => [`-f${f}`] });
  try {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    await d.waitForLog(/CLIENT < NOOP/);
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
  } finally {
    await d.stop();
    await up.close();
  }
});

test("-d 4 writes the dialogue as proxsmtpd did: CLIENT < what the client sent, CLIENT > what it got, SERVER > / SERVER < likewise, each reply line on its own (audit D7)", async () => {
  const ehlo = ['250-upstream.test Hello', '250-STARTTLS', '250 8BITMIME'];
  const up = await RecordingUpstream.start({ ehlo, greeting: '220 upstream.test ESMTP' });
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}` });
  try {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.equal(await c.command('EHLO client.test'), '250-smtp.passthru\r\n250 8BITMIME\r\n');
    assert.equal(await c.command('MAIL FROM:<a@example.org>'), '250 2.0.0 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<b@example.net>'), '250 2.1.5 Ok\r\n');
    assert.match(await c.command('DATA'), /^354 /);
    assert.match(await c.command('Subject: s\r\n\r\nsecret body\r\n.'), /^250 2\.0\.0 Ok: queued as Q1\r\n$/);
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    await d.waitForLog(/CLIENT > 221 2\.0\.0 Bye\n/);
    const dialogue = d.log().split('\n').flatMap((l) => /^smtpsiftd: 100000: ((?:CLIENT|SERVER) [<>] .*)$/.exec(l)?.slice(1) ?? []);
    assert.deepEqual(dialogue, [
      'SERVER < 220 upstream.test ESMTP',
      'CLIENT > 220 smtp.passthru',
      'CLIENT < EHLO client.test',
      'SERVER > EHLO client.test',
      'SERVER < 250-upstream.test Hello',
      'SERVER < 250-STARTTLS',
      'SERVER < 250 8BITMIME',
      'CLIENT > 250-smtp.passthru',
      'CLIENT > 250 8BITMIME',
      'CLIENT < MAIL FROM:<a@example.org>',
      'SERVER > MAIL FROM:<a@example.org>',
      'SERVER < 250 2.0.0 Ok',
      'CLIENT > 250 2.0.0 Ok',
      'CLIENT < RCPT TO:<b@example.net>',
      'SERVER > RCPT TO:<b@example.net>',
      'SERVER < 250 2.1.5 Ok',
      'CLIENT > 250 2.1.5 Ok',
      'CLIENT < DATA',
      'CLIENT > 354 Start mail input; end with <CRLF>.<CRLF>',
      'SERVER > DATA',
      'SERVER < 354 End data with <CR><LF>.<CR><LF>',
      'SERVER > .',
      'SERVER < 250 2.0.0 Ok: queued as Q1',
      'CLIENT > 250 2.0.0 Ok: queued as Q1',
      'CLIENT < QUIT',
      'SERVER > QUIT',
      'SERVER < 221 2.0.0 Bye',
      'CLIENT > 221 2.0.0 Bye',
    ]);
    assert.doesNotMatch(d.log(), /secret body/);
  } finally {
    await d.stop();
    await up.close();
  }
});

test('-d 2 logs notices but not the dialogue', async () => {
  const up = await RecordingUpstream.start();
  // The helper waits for the "listening on" notice, so level 2 is the lowest it can start;
  // level 2 must not show debug or info lines either.
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}` }, ['-d2']);
  try {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.equal(await c.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    await c.waitClosed();
    assert.doesNotMatch(d.log(), /CLIENT [<>]|SERVER [<>]|accepted connection/);
  } finally {
    await d.stop();
    await up.close();
  }
});

test('-p pidfile: written after bind, removed at exit (status 0)', async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const pidFile = join(t.dir, 'smtpsiftd.pid');
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}` }, ['-d', '2', '-p', pidFile]);
  try {
    // The daemon says it listens only after writing the pid file.
    assert.equal(readFileSync(pidFile, 'utf8'), `${d.proc.pid}\n`);
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    c.close();
    assert.equal(await d.stop(), 0);
    assert.equal(existsSync(pidFile), false, 'pid file removed at exit');
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('a PidFile: in the config overrides -p, with a warning', async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const cliPid = join(t.dir, 'cli.pid');
  const confPid = join(t.dir, 'conf.pid');
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, PidFile: confPid }, ['-d', '2', '-p', cliPid]);
  try {
    assert.match(d.log(), /^smtpsiftd: ignoring pid file specified on the command line/m);
    assert.equal(readFileSync(confPid, 'utf8'), `${d.proc.pid}\n`);
    assert.equal(existsSync(cliPid), false);
    assert.equal(await d.stop(), 0);
    assert.equal(existsSync(confPid), false);
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('smtpsift check -f FILE prints the effective configuration, exit 0', async () => {
  const conf = configFile(
    ['# test', 'outaddress: 127.0.0.1:2525', 'LISTEN: 127.0.0.1:2626', 'TimeOut: 5', 'timeout: 7', 'XClient: yes', 'ServerName: mx.example', ''].join('\n'),
  );
  try {
    const r = await runSift(['check', '-f', conf.file]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      r.stdout,
      [
        'Listen: 127.0.0.1:2626',
        'OutAddress: 127.0.0.1:2525',
        'MaxConnections: 64',
        'Workers: 1',
        'TimeOut: 7',
        'KeepAlives: 0',
        'XClient: on',
        'TransparentProxy: off',
        'TempDirectory: /tmp/',
        '#User:',
        '#PidFile:',
        '#Skip:',
        '#FilterCommand:',
        'FilterType: pipe',
        'FilterReject: 530 Email Rejected',
        'FilterTimeout: 30',
        '#Header:',
        'ServerName: mx.example',
        'Pipelining: on',
        'CutThrough: off',
        'LogType: nolog',
        '#LogFile:',
        '#CounterDatabase:',
        'SyslogSocket: /dev/log',
        "LogFormat: %date: %msize bytes from <%sender> [%shost] to [%dhost] for '%rcpts'",
        'LogDateFormat: %d/%m/%y %T %z',
        '',
      ].join('\n'),
    );
    // The output is itself a configuration that reads back the same.
    const again = configFile(r.stdout);
    try {
      const r2 = await runSift(['check', '-f', again.file]);
      assert.equal(r2.status, 0, r2.stderr);
      assert.equal(r2.stdout, r.stdout);
    } finally {
      again.remove();
    }
  } finally {
    conf.remove();
  }
});

test('smtpsift with no or an unknown subcommand: usage, exit 2', async () => {
  for (const args of [[], ['frobnicate'], ['check', '--bogus']]) {
    const r = await runSift(args);
    assert.equal(r.status, 2, args.join(' '));
    assert.match(r.stderr, /usage: smtpsift check/);
  }
});
