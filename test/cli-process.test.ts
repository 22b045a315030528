// The daemon as a process (issue #2 "Command line and process"): detaching without -d and
// logging to syslog, SIGTERM/SIGINT draining, MaxConnections, and User (bind, then drop).
// These run as root, as in CI: User and the private mount namespace need it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { SMTPSIFTD, startDaemon, tempDir, type Daemon } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream } from './helpers/upstream.js';
import { alive, freePort, owner, privateSpoolDirs, procSession, procStatus, run, SPILLED, spoolFiles, waitFor } from './helpers/process.js';

const SHUTDOWN = '421 4.3.2 Service shutting down, closing connection\r\n';
const isRoot = process.getuid?.() === 0;

/** Waits for the exit without removing the daemon's directory (stop() would), so it can be inspected. */
async function signalAndWait(d: Daemon, signal: NodeJS.Signals): Promise<number | null> {
  d.proc.kill(signal);
  return d.exited;
}

async function connectRefused(port: number): Promise<boolean> {
  const s = connect({ port, host: '127.0.0.1' });
  try {
    await once(s, 'connect');
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ECONNREFUSED';
  } finally {
    s.destroy();
  }
}

/** A TempDirectory like /tmp (world-writable, sticky) in a traversable private directory, for tests with User. */
function worldSpool(): { t: ReturnType<typeof tempDir>; spool: string } {
  const t = tempDir();
  chmodSync(t.dir, 0o755);
  const spool = join(t.dir, 'spool');
  mkdirSync(spool);
  chmodSync(spool, 0o1777);
  return { t, spool };
}

test('SIGTERM: an idle session gets 421 at once, a message in DATA is delivered once then 421; pid file and spool removed, exit 0', async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const pidFile = join(t.dir, 'smtpsiftd.pid');
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, PidFile: pidFile });
  try {
    const idle = await RawClient.connect(d.port);
    assert.equal(await idle.reply(), '220 smtp.passthru\r\n');
    const busy = await RawClient.connect(d.port);
    assert.equal(await busy.reply(), '220 smtp.passthru\r\n');
    assert.match(await busy.command('EHLO client.test'), /^250-smtp\.passthru/);
    assert.match(await busy.command('MAIL FROM:<a@example.org>'), /^250 /);
    assert.match(await busy.command('RCPT TO:<b@example.net>'), /^250 /);
    assert.match(await busy.command('DATA'), /^354 /);
    busy.send(`Subject: drain\r\n\r\n${SPILLED}first half\r\n`);
    // The first half is read before the signal: too big to be held in memory, it made a spool file.
    await waitFor(() => spoolFiles(d.spoolDir).length === 1, 'the spool file');
    assert.equal(privateSpoolDirs(d.spoolDir).length, 1);

    const signalled = Date.now();
    d.proc.kill('SIGTERM');
    assert.equal(await idle.reply(2000), SHUTDOWN);
    assert.equal(await idle.waitClosed(2000), '');
    assert.ok(Date.now() - signalled < 1500, 'the idle session is told at once');
    await d.waitForLog(/stopping: no new connections/);
    assert.ok(await connectRefused(d.port), 'no new connections after SIGTERM');

    // The busy session finishes its message: delivered once, its 250, then the 421.
    busy.send('second half\r\n.\r\n');
    assert.equal(await busy.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(await busy.reply(), SHUTDOWN);
    await busy.waitClosed();
    assert.equal(up.messages.length, 1);
    assert.equal(up.messages[0]?.toString('latin1'), `Subject: drain\r\n\r\n${SPILLED}first half\r\nsecond half\r\n`);

    assert.equal(await d.exited, 0);
    assert.equal(existsSync(pidFile), false, 'pid file removed');
    assert.deepEqual(privateSpoolDirs(d.spoolDir), [], 'private spool directory removed');
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('SIGINT: the same drain; an idle session gets 421 and the exit status is 0', async () => {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}` });
  try {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.match(await c.command('EHLO client.test'), /^250-/);
    assert.equal(await signalAndWait(d, 'SIGINT'), 0);
    assert.equal(await c.reply(), SHUTDOWN);
    await c.waitClosed();
    assert.deepEqual(privateSpoolDirs(d.spoolDir), []);
    // The upstream was told goodbye, not cut.
    assert.equal(up.commands.at(-1), 'QUIT\r\n');
  } finally {
    await d.stop();
    await up.close();
  }
});

test('MaxConnections: 2 -> the third client gets exactly the busy 421 and no upstream connection; a freed slot serves again', async () => {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, MaxConnections: '2' });
  try {
    const c1 = await RawClient.connect(d.port);
    const c2 = await RawClient.connect(d.port);
    assert.equal(await c1.reply(), '220 smtp.passthru\r\n');
    assert.equal(await c2.reply(), '220 smtp.passthru\r\n');
    const c3 = await RawClient.connect(d.port);
    assert.equal(await c3.waitClosed(), '421 Server busy, too many connections\r\n');
    await d.waitForLog(/too many connections open \(max 2\)\. sent busy response/);
    assert.equal(up.sessions.length, 2, 'no upstream connection for the refused client');
    // The two served clients are unaffected.
    assert.equal(await c2.command('NOOP'), '250 2.0.0 Ok\r\n');

    assert.equal(await c1.command('QUIT'), '221 2.0.0 Bye\r\n');
    await c1.waitClosed();
    // The slot is freed when the session has finished closing (its upstream QUIT done),
    // which the client cannot observe exactly: try again until served, for at most 2 s.
    let served: RawClient | undefined;
    const deadline = Date.now() + 2000;
    while (served === undefined && Date.now() < deadline) {
      const c = await RawClient.connect(d.port);
      const first = await c.reply();
      if (first === '220 smtp.passthru\r\n') served = c;
      else {
        assert.equal(first, '421 Server busy, too many connections\r\n');
        c.close();
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    assert.ok(served, 'a new client is served after one quit');
    assert.equal(await served.command('NOOP'), '250 2.0.0 Ok\r\n');
    assert.equal(up.sessions.length, 3, 'busy clients never reached the upstream');
    served.close();
    c2.close();
  } finally {
    await d.stop();
    await up.close();
  }
});

test('User: nobody, Listen below 1024: bound as root, then uid 65534; the spool belongs to nobody (0700, files 0600)', { skip: !isRoot && 'needs root' }, async () => {
  const up = await RecordingUpstream.start();
  const port = await freePort(900, 1000);
  const { t, spool } = worldSpool();
  // The pid file is written as root before the drop and removed as nobody at exit, so it
  // lives in a directory that belongs to nobody (as /run/smtpsiftd/ would be set up).
  const runDir = join(t.dir, 'run');
  mkdirSync(runDir, { mode: 0o755 });
  chownSync(runDir, 65534, 65534);
  const pidFile = join(runDir, 'smtpsiftd.pid');
  const d = await startDaemon({
    OutAddress: `127.0.0.1:${up.port}`,
    Listen: `127.0.0.1:${port}`,
    User: 'nobody',
    TempDirectory: spool,
    PidFile: pidFile,
  });
  try {
    assert.equal(d.port, port);
    assert.equal(readFileSync(pidFile, 'utf8'), `${d.proc.pid}\n`);
    const pid = d.proc.pid ?? 0;
    const status = procStatus(pid);
    assert.equal(status.get('Uid'), '65534\t65534\t65534\t65534');
    assert.equal(status.get('Gid'), '65534\t65534\t65534\t65534');
    assert.equal(status.get('Groups'), '65534');
    await d.waitForLog(/switched to user nobody \(uid 65534, gid 65534\)/);

    const dirs = privateSpoolDirs(spool);
    assert.equal(dirs.length, 1);
    assert.deepEqual(owner(dirs[0] ?? ''), { uid: 65534, mode: 0o700 });

    const c = await RawClient.connect(port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
    assert.match(await c.command('RCPT TO:<b@example.net>'), /^250 /);
    assert.match(await c.command('DATA'), /^354 /);
    c.send(`Subject: as nobody\r\n\r\n${SPILLED}`);
    const file = await waitFor(() => spoolFiles(spool)[0], 'the spool file');
    assert.deepEqual(owner(file), { uid: 65534, mode: 0o600 });
    c.send('body\r\n.\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.deepEqual(spoolFiles(spool), []);
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');

    assert.equal(await signalAndWait(d, 'SIGTERM'), 0);
    assert.deepEqual(privateSpoolDirs(spool), [], 'the private spool is removed by nobody at exit');
    assert.equal(existsSync(pidFile), false, 'pid file removed');
    assert.doesNotMatch(d.log(), /cannot remove/);
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('User: a numeric uid works too', { skip: !isRoot && 'needs root' }, async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  chmodSync(t.dir, 0o755);
  const spool = join(t.dir, 'spool');
  mkdirSync(spool);
  chmodSync(spool, 0o1777);
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, User: '65534', TempDirectory: spool });
  try {
    assert.equal(procStatus(d.proc.pid ?? 0).get('Uid'), '65534\t65534\t65534\t65534');
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    c.close();
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

// ---- Detaching (no -d) and syslog --------------------------------------------------------

interface DgramSocket {
  bind(path: string): void;
  on(event: 'error', cb: (e: Error) => void): void;
  close(): void;
}

/**
 * A syslog socket of the test's own. smtpsiftd has no option for the syslog path (the
 * logger takes one, the CLI always uses /dev/log), so the daemon runs in a private mount
 * namespace whose /dev is a small tmpfs with null/zero/random/urandom bound in and `log`
 * a symlink to this socket. Nothing outside the namespace changes.
 */
function syslogCollector(path: string): { lines: string[]; close: () => void } {
  const require = createRequire(import.meta.url);
  const { createSocket } = require('unix-dgram') as { createSocket(type: 'unix_dgram', cb: (msg: Buffer) => void): DgramSocket };
  const lines: string[] = [];
  const socket = createSocket('unix_dgram', (msg) => lines.push(msg.toString('latin1')));
  socket.on('error', () => undefined);
  socket.bind(path);
  return { lines, close: () => socket.close() };
}

function inPrivateDev(dir: string, syslogPath: string, argv: string[]): string[] {
  const dev = join(dir, 'dev');
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const script = [
    `mkdir ${q(dev)}`,
    `mount -t tmpfs -o size=64k tmpfs ${q(dev)}`,
    `for n in null zero random urandom; do touch ${q(dev)}/$n && mount --bind /dev/$n ${q(dev)}/$n; done`,
    `ln -s ${q(syslogPath)} ${q(dev)}/log`,
    `mount --move ${q(dev)} /dev`,
    `exec ${argv.map(q).join(' ')}`,
  ].join(' && ');
  return ['unshare', '-m', 'sh', '-c', script];
}

test('without -d: detaches once it listens (exit 0), new session, no terminal, cwd /; logs to syslog (mail, ident smtpsiftd); SIGTERM cleans up', { skip: !isRoot && 'needs root' }, async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const socketPath = join(t.dir, 'smtpsiftd.sock');
  const pidFile = join(t.dir, 'smtpsiftd.pid');
  const spool = join(t.dir, 'spool');
  mkdirSync(spool);
  const conf = join(t.dir, 'smtpsiftd.conf');
  writeFileSync(conf, `Listen: ${socketPath}\nOutAddress: 127.0.0.1:${up.port}\nTempDirectory: ${spool}\nPidFile: ${pidFile}\n`);
  const syslog = syslogCollector(join(t.dir, 'log.sock'));
  let pid = 0;
  try {
    const [cmd = '', ...args] = inPrivateDev(t.dir, join(t.dir, 'log.sock'), [process.execPath, SMTPSIFTD, '-f', conf]);
    const launched = await run(cmd, args);
    assert.equal(launched.stderr, '');
    assert.equal(launched.status, 0, 'the launching command returns 0 once the daemon listens');
    // It listens and wrote its pid file before the launcher returned.
    pid = Number(readFileSync(pidFile, 'utf8'));
    assert.ok(pid > 0 && alive(pid), `daemon ${pid} runs`);
    const s = procSession(pid);
    assert.equal(s.sid, pid, 'the daemon leads a new session');
    assert.equal(s.tty, 0, 'no controlling terminal');
    assert.equal(readlinkSync(`/proc/${pid}/cwd`), '/');
    for (const fd of ['0', '1', '2']) assert.equal(readlinkSync(`/proc/${pid}/fd/${fd}`), '/dev/null', `fd ${fd}`);

    // It serves.
    const c = await RawClient.connectPath(socketPath);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.match(await c.command('EHLO client.test'), /^250-smtp\.passthru/);
    assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
    assert.match(await c.command('RCPT TO:<b@example.net>'), /^250 /);
    assert.match(await c.command('DATA'), /^354 /);
    c.send('Subject: detached\r\n\r\nhi\r\n.\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');

    // Syslog: facility mail (2), RFC 3164 with ident smtpsiftd[pid]; info and up, no debug.
    const tag = `smtpsiftd[${pid}]: `;
    await waitFor(() => syslog.lines.some((l) => l.includes('status=DELIVERED')), 'the message log line in syslog');
    const notice = syslog.lines.find((l) => l.includes(`listening on ${socketPath};`));
    assert.match(notice ?? '', new RegExp(`^<21>[A-Z][a-z]{2} [ 1-3]\\d \\d\\d:\\d\\d:\\d\\d ${tag.replace(/[[\]]/g, '\\$&')}listening on `));
    const message = syslog.lines.find((l) => l.includes('status=DELIVERED')) ?? '';
    assert.match(message, /^<22>/);
    assert.ok(message.includes(`${tag}100000: client=unix from=<a@example.org> rcpts=1 `), message);
    assert.ok(!syslog.lines.some((l) => /CLIENT [<>]|SERVER [<>]/.test(l)), 'no debug lines in syslog');

    process.kill(pid, 'SIGTERM');
    await waitFor(() => !alive(pid), 'the daemon to exit');
    assert.equal(existsSync(pidFile), false, 'pid file removed');
    assert.deepEqual(privateSpoolDirs(spool), [], 'spool removed');
    pid = 0;
  } finally {
    if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
    syslog.close();
    await up.close();
    t.remove();
  }
});

test('without -d: a daemon that cannot listen makes the launcher fail with the reason', async () => {
  const up = await RecordingUpstream.start();
  const blocker = await RecordingUpstream.start(); // a port in use
  const t = tempDir();
  const conf = join(t.dir, 'smtpsiftd.conf');
  writeFileSync(conf, `Listen: 127.0.0.1:${blocker.port}\nOutAddress: 127.0.0.1:${up.port}\nTempDirectory: ${t.dir}\n`);
  try {
    const r = await run(process.execPath, [SMTPSIFTD, '-f', conf]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, new RegExp(`^smtpsiftd: cannot listen on 127\\.0\\.0\\.1:${blocker.port}: .*EADDRINUSE`, 'm'));
    assert.deepEqual(privateSpoolDirs(t.dir), []);
  } finally {
    await up.close();
    await blocker.close();
    t.remove();
  }
});

test('without -d: -f and -p name files relative to where smtpsiftd was started; the detached copy\'s marker is not in a filter\'s environment', { timeout: 30_000 }, async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const port = await freePort();
  const spool = join(t.dir, 'spool');
  mkdirSync(spool);
  const envFile = join(t.dir, 'filter.env');
  writeFileSync(join(t.dir, 'rel.conf'), `Listen: 127.0.0.1:${port}\nOutAddress: 127.0.0.1:${up.port}\nTempDirectory: ${spool}\nFilterCommand: env > ${envFile}; cat\n`);
  const pidFile = join(t.dir, 'rel.pid');
  let pid = 0;
  try {
    const launched = await run('sh', ['-c', `cd "$0" && exec "$1" "$2" -f rel.conf -p rel.pid`, t.dir, process.execPath, SMTPSIFTD]);
    assert.equal(launched.status, 0, launched.stderr);
    pid = Number(readFileSync(pidFile, 'utf8'));
    assert.ok(pid > 0 && alive(pid), `daemon ${pid} runs`);
    assert.equal(readlinkSync(`/proc/${pid}/cwd`), '/');
    const c = await RawClient.connect(port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    assert.match(await c.command('EHLO client.test'), /^250-/);
    assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
    assert.match(await c.command('RCPT TO:<b@example.net>'), /^250 /);
    assert.match(await c.command('DATA'), /^354 /);
    c.send('Subject: relative\r\n\r\nhi\r\n.\r\n');
    assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
    const env = readFileSync(envFile, 'latin1');
    assert.match(env, /^SENDER=a@example\.org$/m);
    assert.doesNotMatch(env, /SMTPSIFTD_DETACHED/);
    process.kill(pid, 'SIGTERM');
    await waitFor(() => !alive(pid), 'the daemon to exit');
    assert.equal(existsSync(pidFile), false, 'pid file removed');
    pid = 0;
  } finally {
    if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
    await up.close();
    t.remove();
  }
});

test('PidFile: one that cannot be written is a warning and the daemon serves; an empty one overrides -p (no pid file)', { timeout: 30_000 }, async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const cliPid = join(t.dir, 'cli.pid');
  const daemons: Daemon[] = [];
  try {
    const unwritable = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, PidFile: join(t.dir, 'no', 'such', 'x.pid') });
    daemons.push(unwritable);
    const empty = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, PidFile: '' }, ['-d', '4', '-p', cliPid]);
    daemons.push(empty);
    await unwritable.waitForLog(/cannot write the pid file .*x\.pid: no such file or directory; going on without one/);
    await empty.waitForLog(/ignoring pid file specified on the command line/);
    for (const d of [unwritable, empty]) {
      const c = await RawClient.connect(d.port);
      assert.equal(await c.reply(), '220 smtp.passthru\r\n');
      assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    }
    assert.equal(existsSync(cliPid), false, 'no pid file from -p');
    assert.equal(await unwritable.stop(), 0);
    assert.equal(await empty.stop(), 0);
  } finally {
    for (const d of daemons) if (alive(d.proc.pid ?? 0)) await d.stop('SIGKILL');
    await up.close();
    t.remove();
  }
});

test('User: a TempDirectory that user cannot write is FILE:LINE and exit 2 at start-up, not an EACCES', { skip: !isRoot && 'needs root', timeout: 30_000 }, async () => {
  const t = tempDir();
  const spool = join(t.dir, 'root-only');
  mkdirSync(spool, { mode: 0o755 });
  const conf = join(t.dir, 'smtpsiftd.conf');
  writeFileSync(conf, `Listen: 127.0.0.1:0\nOutAddress: 127.0.0.1:25\nUser: nobody\nTempDirectory: ${spool}\n`);
  try {
    const r = await run(process.execPath, [SMTPSIFTD, '-d', '2', '-f', conf]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^smtpsiftd: ${conf}:4: TempDirectory: ${spool}: cannot make the private spool directory as nobody: permission denied$`, 'm'));
    assert.doesNotMatch(r.stderr, /EACCES|at .*\.js:\d+/);
  } finally {
    t.remove();
  }
});

test('the pid file is never written through a link planted in its directory, and is 0644 whatever the umask', { timeout: 30_000 }, async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const victim = join(t.dir, 'victim');
  writeFileSync(victim, 'precious\n');
  const pidFile = join(t.dir, 'smtpsiftd.pid');
  symlinkSync(victim, pidFile);
  let d: Daemon | undefined;
  try {
    d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}` }, ['-d', '4', '-p', pidFile], {
      wrap: (argv) => ['sh', '-c', 'umask 000; exec "$@"', 'sh', ...argv],
    });
    await d.waitForLog(/listening on /);
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n');
    const st = lstatSync(pidFile);
    assert.ok(st.isFile(), 'a file of its own, not the link');
    assert.equal(st.mode & 0o777, 0o644);
    assert.equal(readFileSync(pidFile, 'utf8'), `${d.proc.pid}\n`);
    assert.equal(await d.stop(), 0);
    assert.equal(existsSync(pidFile), false);
  } finally {
    if (d !== undefined && alive(d.proc.pid ?? 0)) await d.stop('SIGKILL');
    await up.close();
    t.remove();
  }
});

test('User with a unix socket Listen: the socket is the user\'s, so a client running as that user connects (as with proxsmtpd)', { skip: !isRoot && 'needs root', timeout: 30_000 }, async () => {
  const up = await RecordingUpstream.start();
  const { t, spool } = worldSpool();
  const socketPath = join(t.dir, 'smtpsiftd.sock');
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, Listen: socketPath, User: 'nobody', TempDirectory: spool });
  try {
    await d.waitForLog(/listening on /);
    assert.equal(lstatSync(socketPath).uid, 65534);
    // A client of that uid: the greeting comes.
    const script = `require('net').connect(${JSON.stringify(socketPath)}).on('data', (b) => { process.stdout.write(b); process.exit(0); }).on('error', (e) => { console.error(e.code); process.exit(1); })`;
    // Not spawnSync: the upstream, in this process, must answer meanwhile.
    const r = await promisify(execFile)(process.execPath, ['-e', script], { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.stdout, '220 smtp.passthru\r\n');
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('Listen: a unix socket path where a regular file is: one clear error, the file left alone', { timeout: 30_000 }, async () => {
  const t = tempDir();
  const path = join(t.dir, 'not-a-socket');
  writeFileSync(path, 'keep me\n');
  const conf = join(t.dir, 'smtpsiftd.conf');
  writeFileSync(conf, `Listen: ${path}\nOutAddress: 127.0.0.1:25\nTempDirectory: ${t.dir}\n`);
  try {
    const r = await run(process.execPath, [SMTPSIFTD, '-d', '2', '-f', conf]);
    assert.equal(r.status, 1);
    assert.deepEqual(
      r.stderr.split('\n').filter((l) => /listen/.test(l)),
      [`smtpsiftd: cannot listen on ${path}: a file that is not a socket is there; it is left alone`],
    );
    assert.equal(readFileSync(path, 'utf8'), 'keep me\n');
  } finally {
    t.remove();
  }
});

test('User: a filter runs with that user\'s HOME, USER and LOGNAME, not root\'s', { skip: !isRoot && 'needs root', timeout: 30_000 }, async () => {
  const up = await RecordingUpstream.start();
  const { t, spool } = worldSpool();
  const out = join(spool, 'filter-env');
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, User: 'nobody', TempDirectory: spool, FilterCommand: `echo "$HOME|$USER|$LOGNAME|$(id -u)" > ${out}; cat` });
  try {
    const c = await RawClient.connect(d.port);
    assert.match(await c.reply(), /^220 /);
    assert.match(await c.command('EHLO client.test'), /^250/);
    assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
    assert.match(await c.command('RCPT TO:<b@example.net>'), /^250 /);
    assert.match(await c.command('DATA'), /^354 /);
    c.send('Subject: home\r\n\r\nhi\r\n.\r\n');
    assert.match(await c.reply(), /^250 /);
    const home = execFileSync('getent', ['passwd', 'nobody'], { encoding: 'utf8' }).split(':')[5];
    assert.equal(readFileSync(out, 'utf8'), `${home}|nobody|nobody|65534\n`);
    c.close();
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});
