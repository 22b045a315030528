// Configuration errors (issue #2): `smtpsiftd: FILE:LINE: <what is wrong, and what is
// allowed>` on stderr, exit status 2, every problem of the file at once, each naming the
// option. Also how `smtpsift check` reports the same file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../src/config/load.js';
import { configFile, runDaemonCli, runSift, type RunResult } from './helpers/process.js';

const OUT = 'OutAddress: 127.0.0.1:2525';

/** Runs `smtpsiftd -d 0 -f FILE` on this text; asserts exit 2; returns the stderr lines. */
async function daemonErrors(text: string, args: string[] = ['-d', '0']): Promise<{ lines: string[]; file: string; r: RunResult }> {
  const conf = configFile(text);
  try {
    const r = await runDaemonCli([...args, '-f', conf.file]);
    assert.equal(r.status, 2, `exit status; stderr:\n${r.stderr}`);
    assert.equal(r.stdout, '');
    return { lines: r.stderr.trimEnd().split('\n'), file: conf.file, r };
  } finally {
    conf.remove();
  }
}

/** One error at LINE that names the option and says what is allowed (matched by `allowed`). */
async function oneError(text: string, line: number, option: string, allowed: RegExp): Promise<void> {
  const { lines, file } = await daemonErrors(text);
  assert.equal(lines.length, 1, lines.join('\n'));
  const prefix = `smtpsiftd: ${file}:${line}: `;
  const msg = lines[0] ?? '';
  assert.ok(msg.startsWith(prefix), `expected ${prefix}..., got ${msg}`);
  assert.ok(msg.includes(option), `the message names ${option}: ${msg}`);
  assert.match(msg, allowed);
}

test('unknown option: FILE:LINE, the name, where to look', async () => {
  await oneError(`${OUT}\n# fine\nDebugFiles: yes\n`, 3, "'DebugFiles'", /unknown option 'DebugFiles'; see smtpsiftd\.conf\(5\)/);
});

test('a line without a colon', async () => {
  await oneError(`${OUT}\nMaxConnections 10\n`, 2, 'MaxConnections 10', /invalid line 'MaxConnections 10': expected 'Name: value'/);
});

test('bad numbers: MaxConnections 0, TimeOut x, KeepAlives -1, FilterTimeout 0', async () => {
  await oneError(`${OUT}\nMaxConnections: 0\n`, 2, 'MaxConnections:', /0 is out of range; .*between 1 and 100000/);
  await oneError(`${OUT}\nMaxConnections: 100001\n`, 2, 'MaxConnections:', /between 1 and 100000/);
  await oneError(`TimeOut: x\n${OUT}\n`, 1, 'TimeOut:', /'x' is not a whole number/);
  await oneError(`${OUT}\nKeepAlives: -1\n`, 2, 'KeepAlives:', /-1 is out of range; .*\b0\b/);
  await oneError(`${OUT}\nFilterTimeout: 0\n`, 2, 'FilterTimeout:', /out of range/);
});

test('bad booleans: XClient, Pipelining, CutThrough', async () => {
  await oneError(`${OUT}\nXClient: maybe\n`, 2, 'XClient:', /'maybe' is not a boolean; use on\/off, yes\/no, true\/false or 1\/0/);
  await oneError(`${OUT}\n\nPipelining: enabled\n`, 3, 'Pipelining:', /not a boolean/);
  await oneError(`${OUT}\nCutThrough: fast\n`, 2, 'CutThrough:', /'fast' is not a boolean/);
});

test('bad enumerations: TransparentProxy, FilterType, Skip', async () => {
  await oneError(`${OUT}\nTransparentProxy: half\n`, 2, 'TransparentProxy:', /use off, client or full/);
  await oneError(`${OUT}\nFilterType: smtp\n`, 2, 'FilterType:', /use pipe, file or reject/);
  await oneError(`${OUT}\nSkip: everyone\n`, 2, 'Skip:', /the only value is 'authenticated'/);
});

test('bad Listen', async () => {
  for (const bad of ['1.2.3.4.5', '1.2.3:25', '127.0.0.1:99999', 'localhost:99999', '[::1', 'bad host!:25']) {
    await oneError(`${OUT}\nListen: ${bad}\n`, 2, 'Listen:', /is not a listen address; use port, ip, ip:port, \[ipv6\]:port, host:port or \/path\/to\/socket/);
  }
});

test('Listen: a host name that does not resolve is a configuration error naming FILE:LINE, for the daemon and for check', async () => {
  // .invalid never resolves (RFC 6761 §6.4).
  for (const name of ['relay.invalid:2525', 'relay.invalid']) {
    await oneError(`${OUT}\nListen: ${name}\n`, 2, 'Listen:', /Listen: cannot resolve the host name 'relay\.invalid': \S/);
  }
  const conf = configFile(`${OUT}\nListen: relay.invalid:2525\n`);
  try {
    const r = await runSift(['check', '-f', conf.file]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, new RegExp(`^smtpsift: ${conf.file}:2: Listen: cannot resolve the host name 'relay\\.invalid'`));
  } finally {
    conf.remove();
  }
});

test('bad OutAddress', async () => {
  for (const bad of ['127.0.0.1:99999', 'bad host!', '127.0.0.1:0', 'mx.example:x']) {
    await oneError(`OutAddress: ${bad}\n`, 1, 'OutAddress:', /is not an upstream address; use ip\[:port\]/);
  }
});

test('empty values where one is required: TempDirectory, User, FilterReject', async () => {
  await oneError(`${OUT}\nTempDirectory:\n`, 2, 'TempDirectory:', /must not be empty/);
  await oneError(`${OUT}\nUser:   \n`, 2, 'User:', /must not be empty/);
  await oneError(`${OUT}\nFilterReject:\n`, 2, 'FilterReject:', /must not be empty/);
});

test('missing OutAddress: FILE (no line), names the option and how to set it', async () => {
  const { lines, file } = await daemonErrors('# no upstream\nMaxConnections: 5\n');
  assert.deepEqual(lines, [`smtpsiftd: ${file}: no OutAddress specified; set 'OutAddress: host:port' to the upstream SMTP server`]);
});

test('TransparentProxy (issue 4): no OutAddress needed; a unix Listen is refused, naming both', async () => {
  for (const [line, mode] of [['client', 'client'], ['yes', 'client'], ['full', 'full'], ['off', 'off']] as const) {
    const config = parseConfig(`# no upstream\nTransparentProxy: ${line}\n${mode === 'off' ? OUT : ''}\n`, 'x.conf');
    assert.equal(config.transparentProxy, mode);
  }
  await oneError('Listen: /run/sift.sock\nTransparentProxy: client\n', 2, 'TransparentProxy:', /needs a TCP Listen address, not a unix socket/);
});

test('several errors are reported together, each with its own line, exit 2', async () => {
  const { lines, file } = await daemonErrors(
    [OUT, 'Bogus: 1', 'TimeOut: soon', 'no colon here', 'Listen: nowhere:99999', 'TransparentProxy: half', 'XClient: perhaps', ''].join('\n'),
  );
  const expect: Array<[number, RegExp]> = [
    [2, /unknown option 'Bogus'/],
    [3, /TimeOut: 'soon' is not a whole number/],
    [4, /invalid line 'no colon here'/],
    [5, /Listen: 'nowhere:99999' is not a listen address/],
    [6, /TransparentProxy: 'half' is not allowed/],
    [7, /XClient: 'perhaps' is not a boolean/],
  ];
  assert.equal(lines.length, expect.length, lines.join('\n'));
  for (const [line, re] of expect) {
    const found = lines.find((l) => l.startsWith(`smtpsiftd: ${file}:${line}: `));
    assert.ok(found, `no error for line ${line} in:\n${lines.join('\n')}`);
    assert.match(found, re);
  }
});

test('a missing OutAddress is reported together with the other errors', async () => {
  const { lines, file } = await daemonErrors('Bogus: 1\nTimeOut: 0\n');
  assert.equal(lines.length, 3, lines.join('\n'));
  assert.match(lines[0] ?? '', new RegExp(`^smtpsiftd: ${file}:1: unknown option 'Bogus'`));
  assert.match(lines[1] ?? '', new RegExp(`^smtpsiftd: ${file}:2: TimeOut: 0 is out of range`));
  assert.match(lines[2] ?? '', new RegExp(`^smtpsiftd: ${file}: no OutAddress specified`));
});

test('a bad OutAddress is not also reported as missing', async () => {
  const { lines, file } = await daemonErrors('OutAddress: 127.0.0.1:0\n');
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0] ?? '', new RegExp(`^smtpsiftd: ${file}:1: OutAddress: `));
});

test('a missing config file is a clear error, exit 2', async () => {
  const r = await runDaemonCli(['-d', '0', '-f', '/nonexistent/smtpsiftd.conf']);
  assert.equal(r.status, 2);
  assert.equal(r.stderr, 'smtpsiftd: /nonexistent/smtpsiftd.conf: cannot read the configuration file: no such file\n');
});

test('a directory given as the config file is a clear error, exit 2', async () => {
  const r = await runDaemonCli(['-d', '0', '-f', '/tmp']);
  assert.equal(r.status, 2);
  assert.equal(r.stderr, 'smtpsiftd: /tmp: cannot read the configuration file: is a directory\n');
});

test('an unknown User is a FILE:LINE error, exit 2', async () => {
  const { lines, file } = await daemonErrors(`${OUT}\n# the account\nUser: no-such-user-smtpsift\n`);
  assert.deepEqual(lines, [`smtpsiftd: ${file}:3: User: no such user 'no-such-user-smtpsift'`]);
});

test('a TempDirectory that does not exist is a FILE:LINE error, exit 2', async () => {
  const { lines, file } = await daemonErrors(`${OUT}\nTempDirectory: /nonexistent/spool\n`);
  assert.deepEqual(lines, [`smtpsiftd: ${file}:2: TempDirectory: /nonexistent/spool: no such directory`]);
});

test('config errors reach stderr with exit 2 without -d too (checked before detaching)', async () => {
  const { lines, file } = await daemonErrors(`${OUT}\nMaxConnections: 0\n`, []);
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0] ?? '', new RegExp(`^smtpsiftd: ${file}:2: MaxConnections: 0 is out of range`));
  const user = await daemonErrors(`${OUT}\nUser: no-such-user-smtpsift\n`, []);
  assert.deepEqual(user.lines, [`smtpsiftd: ${user.file}:2: User: no such user 'no-such-user-smtpsift'`]);
});

test('smtpsift check prints the same errors (as smtpsift:) and exits 2', async () => {
  const conf = configFile('Bogus: 1\nOutAddress: 127.0.0.1:2525\nMaxConnections: many\n');
  try {
    const r = await runSift(['check', '-f', conf.file]);
    assert.equal(r.status, 2);
    assert.equal(r.stdout, '');
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 2, r.stderr);
    assert.match(lines[0] ?? '', new RegExp(`^smtpsift: ${conf.file}:1: unknown option 'Bogus'`));
    assert.match(lines[1] ?? '', new RegExp(`^smtpsift: ${conf.file}:3: MaxConnections: 'many' is not a whole number`));
  } finally {
    conf.remove();
  }
});

test('smtpsift check refuses what the daemon would refuse at start-up: User, TempDirectory', async () => {
  const conf = configFile(`${OUT}\nUser: no-such-user-smtpsift\nTempDirectory: /nonexistent/spool\n`);
  try {
    const r = await runSift(['check', '-f', conf.file]);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, new RegExp(`^smtpsift: ${conf.file}:(2: User|3: TempDirectory): `, 'm'));
  } finally {
    conf.remove();
  }
});

test('smtpsift check on a missing file: the error, exit 2', async () => {
  const r = await runSift(['check', '-f', '/nonexistent/smtpsiftd.conf']);
  assert.equal(r.status, 2);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, 'smtpsift: /nonexistent/smtpsiftd.conf: cannot read the configuration file: no such file\n');
});

test('a NUL byte in a value is an error (C would cut the value there), and control characters of a garbled file are not written to the terminal', async () => {
  const t = configFile('Listen: 127.0.0.1:0\nOutAddress: 127.0.0.1:25\nFilterCommand: /bin/cat\0-x\n\x1b[31mgarbage\x07\n');
  try {
    const r = await runDaemonCli(['-d', '0', '-f', t.file]);
    assert.equal(r.status, 2);
    assert.equal(
      r.stderr,
      `smtpsiftd: ${t.file}:3: FilterCommand: a NUL byte in the value\nsmtpsiftd: ${t.file}:4: invalid line '?[31mgarbage?': expected 'Name: value'\n`,
    );
  } finally {
    t.remove();
  }
});
