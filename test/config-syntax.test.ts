// The proxsmtpd.conf syntax, unchanged (issue #2, spec §2): `Name: value`, names in any
// case, `#` lines, split at the first colon, last value wins, every option accepted with its
// default. Seen the way a user sees it: through the running daemon and `smtpsift check`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream } from './helpers/upstream.js';
import { configFile, runSift, spoolFiles } from './helpers/process.js';

/** stderr without `smtpsift: warning: ...` lines (running as root is worth one). */
function withoutWarnings(stderr: string): string {
  return stderr.replace(/^smtpsift: warning: .*\n/gm, '');
}

/** Sends one message and returns the final reply. */
async function sendMessage(c: RawClient, body = 'Subject: t\r\n\r\nhello\r\n'): Promise<string> {
  assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
  assert.match(await c.command('RCPT TO:<b@example.net>'), /^250 /);
  assert.match(await c.command('DATA'), /^354 /);
  c.send(`${body}.\r\n`);
  return c.reply();
}

test('names in any case, # lines, blank lines, indentation, CRLF lines, split at the first colon, last value wins', async () => {
  const up = await RecordingUpstream.start();
  const d = await startDaemon(
    {},
    ['-d', '4'],
    {
      extraConfig: [
        '# a comment line: with a colon',
        '',
        '   # an indented comment',
        `outaddress:   127.0.0.1:${up.port}   `,
        'SERVERNAME: first.example',
        '\t sErVeRnAmE:   relay:2.example  \r',
        'pipelining: OFF',
        '',
      ].join('\n'),
    },
  );
  try {
    const c = await RawClient.connect(d.port);
    // The value after the first colon, trimmed; the second ServerName won.
    assert.equal(await c.reply(), '220 relay:2.example\r\n');
    const ehlo = await c.command('EHLO client.test');
    assert.match(ehlo, /^250-relay:2\.example\r\n/);
    // `pipelining: OFF`: the booleans are case-insensitive too.
    assert.doesNotMatch(ehlo, /PIPELINING/);
    assert.equal(await sendMessage(c), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(up.messages.length, 1);
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    assert.deepEqual(spoolFiles(d.spoolDir), []);
  } finally {
    await d.stop();
    await up.close();
  }
});

test('a value keeps its inner colons and runs of spaces (smtpsift check shows it)', async () => {
  const conf = configFile(
    [
      'OutAddress: 127.0.0.1:2525',
      'FilterReject:  554 5.7.1 Rejected:  policy: no  ',
      'FilterReject: 550 5.7.1 Refused: really:  yes',
      'ServerName: a:b:c',
      '',
    ].join('\n'),
  );
  try {
    const r = await runSift(['check', '-f', conf.file]);
    assert.equal(withoutWarnings(r.stderr), '');
    assert.equal(r.status, 0);
    const lines = r.stdout.split('\n');
    assert.ok(lines.includes('FilterReject: 550 5.7.1 Refused: really:  yes'), r.stdout);
    assert.ok(lines.includes('ServerName: a:b:c'), r.stdout);
  } finally {
    conf.remove();
  }
});

/** Every proxsmtpd option written out with its documented default (spec §2). */
const PROXSMTPD_DEFAULTS = [
  'Listen: 0.0.0.0:10025',
  'MaxConnections: 64',
  'TimeOut: 180',
  'KeepAlives: 0',
  'XClient: off',
  'TransparentProxy: off',
  'TempDirectory: /tmp/',
  'PidFile:',
  'FilterType: pipe',
  'FilterReject: 530 Email Rejected',
  'FilterTimeout: 30',
  'Header:',
];

test('smtpsift check: every option with its default (proxsmtpd defaults, ServerName, Pipelining)', async () => {
  const conf = configFile('OutAddress: 127.0.0.1:2525\n');
  try {
    const r = await runSift(['check', '-f', conf.file]);
    assert.equal(withoutWarnings(r.stderr), '');
    assert.equal(r.status, 0);
    const shown = new Map(
      r.stdout
        .trimEnd()
        .split('\n')
        .map((l) => {
          // An unset option is shown commented out: `#User:`.
          const colon = l.indexOf(':');
          assert.ok(colon > 0, `not 'Name: value': ${JSON.stringify(l)}`);
          return [l.slice(0, colon).replace(/^#/, ''), l.slice(colon + 1).trim()] as const;
        }),
    );
    assert.deepEqual(
      [...shown.keys()].sort(),
      [
        'FilterCommand', 'FilterReject', 'FilterTimeout', 'FilterType', 'Header', 'KeepAlives', 'Listen',
        'MaxConnections', 'OutAddress', 'PidFile', 'Pipelining', 'ServerName', 'Skip', 'TempDirectory',
        'TimeOut', 'TransparentProxy', 'User', 'XClient',
        // Workers and CutThrough (issue 7).
        'Workers', 'CutThrough',
        // Accounting (issue 6).
        'LogType', 'LogFile', 'CounterDatabase', 'SyslogSocket', 'LogFormat', 'LogDateFormat',
      ].sort(),
    );
    for (const line of PROXSMTPD_DEFAULTS) {
      const colon = line.indexOf(':');
      assert.equal(shown.get(line.slice(0, colon)), line.slice(colon + 1).trim(), line);
    }
    assert.equal(shown.get('OutAddress'), '127.0.0.1:2525');
    assert.equal(shown.get('ServerName'), 'smtp.passthru');
    assert.equal(shown.get('Pipelining'), 'on');
    assert.equal(shown.get('CutThrough'), 'off');
    for (const unset of ['User', 'Skip', 'FilterCommand', 'PidFile', 'Header']) assert.equal(shown.get(unset), '', unset);
  } finally {
    conf.remove();
  }
});

test('the daemon accepts every proxsmtpd option written with its default value, and relays', async () => {
  const up = await RecordingUpstream.start();
  // Listen and TempDirectory are the helper's (a free port, a private spool): they come
  // last in the file, so they win over the defaults written here.
  const defaults = PROXSMTPD_DEFAULTS.filter((l) => !/^(Listen|TempDirectory):/.test(l));
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}` }, ['-d', '4'], {
    extraConfig: [...defaults, 'ServerName: smtp.passthru', 'Pipelining: on', ''].join('\n'),
  });
  try {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.match(await c.command('EHLO client.test'), /^250-smtp\.passthru\r\n/);
    assert.equal(await sendMessage(c), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    // Nothing about the file was worth a warning, except running as root without User.
    assert.doesNotMatch(d.log().replace(/running as root is NOT recommended[^\n]*\n/, ''), /warn|error|invalid/i);
  } finally {
    await d.stop();
    await up.close();
  }
});

test('booleans: 0 no false f off / 1 yes true t on, in any case', async () => {
  for (const [text, shown] of [
    ['0', 'off'], ['No', 'off'], ['FALSE', 'off'], ['f', 'off'], ['Off', 'off'],
    ['1', 'on'], ['YES', 'on'], ['true', 'on'], ['T', 'on'], ['oN', 'on'],
  ] as const) {
    const conf = configFile(`OutAddress: 127.0.0.1:2525\nXClient: ${text}\nPipelining: ${text}\n`);
    try {
      const r = await runSift(['check', '-f', conf.file]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^XClient: ${shown}$`, 'm'), text);
      assert.match(r.stdout, new RegExp(`^Pipelining: ${shown}$`, 'm'), text);
    } finally {
      conf.remove();
    }
  }
});
