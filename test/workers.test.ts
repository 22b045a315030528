// Workers: N (issue 7): N processes serving one listening socket. Real daemons and
// sockets: every message delivered once whichever process took it, MaxConnections counted
// across processes, SIGTERM draining every process, SIGHUP and SIGUSR1 reaching every
// process, a unix socket Listen, and the option's errors. Which process served a session is
// read from the -d 4 log: a worker process's lines start with `worker N: `, the main
// process's (worker 0) have no prefix.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RawClient } from './helpers/client.js';
import { startDaemon, tempDir, type Daemon } from './helpers/daemon.js';
import { alive, childPids, configFile, privateSpoolDirs, runDaemonCli, runSift, waitFor } from './helpers/process.js';
import { withRouted } from './helpers/routing.js';
import { RecordingUpstream } from './helpers/upstream.js';

const T = { timeout: 20_000 };
const BUSY = '421 Server busy, too many connections\r\n';
const SHUTDOWN = '421 4.3.2 Service shutting down, closing connection\r\n';

/** The process (0 = main) of each session id that logged a line matching `what`. */
function workers(log: string, what: string): Map<string, number> {
  const out = new Map<string, number>();
  const re = new RegExp(`^smtpsiftd: (?:worker (\\d+): )?([0-9A-F]+): ${what}`, 'gm');
  for (const m of log.matchAll(re)) out.set(m[2] ?? '', Number(m[1] ?? 0));
  return out;
}

/** How many of the sessions in `ids` each process served. */
function perWorker(ids: Map<string, number>): number[] {
  const counts: number[] = [];
  for (const t of ids.values()) counts[t] = (counts[t] ?? 0) + 1;
  return counts;
}

function lines(path: string): string[] {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter((l) => l !== '') : [];
}

/** One message on a new connection; the final reply. */
async function sendOne(port: number, subject: string): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    await c.greet();
    assert.match(await c.command('MAIL FROM:<a@example.org>'), /^250 /);
    assert.match(await c.command('RCPT TO:<b@example.net>'), /^250 /);
    assert.match(await c.command('DATA'), /^354 /);
    c.send(`Subject: ${subject}\r\n\r\nbody of ${subject}\r\n.\r\n`);
    const r = await c.reply(10_000);
    await c.command('QUIT');
    return r;
  } finally {
    c.close();
  }
}

/** Opens greeted, idle sessions until each of `n` processes holds one (at most 40 connections). */
async function idleOnEveryWorker(d: Daemon, n: number): Promise<RawClient[]> {
  const clients: RawClient[] = [];
  for (let i = 0; i < 40; i++) {
    const c = await RawClient.connect(d.port);
    clients.push(c);
    assert.match(await c.reply(), /^220 smtp\.passthru[ \r]/);
    await waitFor(() => workers(d.log(), 'accepted connection').size === clients.length, 'the accept line');
    if (perWorker(workers(d.log(), 'accepted connection')).filter((x) => x > 0).length === n) return clients;
  }
  throw new Error(`40 connections did not reach all ${n} processes:\n${d.log()}`);
}

test('Workers: 2 -> 40 messages from 20 concurrent clients, each delivered once; both processes served; spool names, log lines and counters whole and exact', T, async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const names = join(t.dir, 'names');
  const logFile = join(t.dir, 'acct.log');
  const counters = join(t.dir, 'counters.lmdb');
  const d = await startDaemon({
    OutAddress: `127.0.0.1:${up.port}`,
    Workers: '2',
    // File mode: $EMAIL is the spool file; its name is recorded, the message passes unchanged.
    FilterType: 'file',
    FilterCommand: `echo "$EMAIL" >> ${names}`,
    LogType: 'filelog+counters',
    LogFile: logFile,
    CounterDatabase: counters,
    LogFormat: '%status %msize %id',
  });
  try {
    await d.waitForLog(/Workers: 2 \(the main process and 1 worker process\)/);
    const replies = await Promise.all(
      Array.from({ length: 20 }, async (_, client) => {
        const out: string[] = [];
        for (let k = 0; k < 2; k++) out.push(await sendOne(d.port, `m${client}-${k}`));
        return out;
      }),
    );
    for (const r of replies.flat()) assert.match(r, /^250 2\.0\.0 Ok: queued as Q\d+\r\n$/);
    const subjects = up.messages.map((m) => /^Subject: (\S+)/.exec(m.toString('latin1'))?.[1]).sort();
    const expected = Array.from({ length: 20 }, (_, c) => [`m${c}-0`, `m${c}-1`]).flat().sort();
    assert.deepEqual(subjects, expected, 'every message exactly once');

    const served = perWorker(workers(d.log(), 'accepted connection'));
    assert.equal((served[0] ?? 0) + (served[1] ?? 0), 40);
    assert.ok((served[0] ?? 0) > 0 && (served[1] ?? 0) > 0, `both processes served: ${JSON.stringify(served)}`);

    const spooled = lines(names);
    assert.equal(spooled.length, 40);
    assert.equal(new Set(spooled).size, 40, 'spool file names unique across processes');
    assert.ok(spooled.some((p) => /\/msg-\d+$/.test(p)) && spooled.some((p) => /\/msg-w1-\d+$/.test(p)), spooled.join('\n'));

    await waitFor(() => lines(logFile).length === 40, 'the 40 accounting lines');
    for (const l of lines(logFile)) assert.match(l, /^delivered \d+ \S+$/, 'whole lines');
    assert.equal(new Set(lines(logFile).map((l) => l.split(' ')[2])).size, 40, 'message ids unique across processes');
    // Each process's counters are committed at shutdown: all 40, none twice.
    assert.equal(await d.stop(), 0);
    const r = await runSift(['stats', '--db', counters, '--by', 'domain', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const bytes = lines(logFile).reduce((n, l) => n + Number(l.split(' ')[1]), 0);
    assert.deepEqual((JSON.parse(r.stdout) as { total: unknown }).total, { bytes, messages: 40 });
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('Workers: 2, MaxConnections: 2 -> a third client gets exactly the busy 421 whichever process takes it; a freed slot serves again', T, async () => {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, Workers: '2', MaxConnections: '2' });
  try {
    const c1 = await RawClient.connect(d.port);
    const c2 = await RawClient.connect(d.port);
    assert.equal(await c1.reply(), '220 smtp.passthru\r\n');
    assert.equal(await c2.reply(), '220 smtp.passthru\r\n');
    // Refused by both processes: so one of them refused while holding fewer than 2 itself.
    const refusedBy = new Set<string>();
    for (let i = 0; i < 40 && refusedBy.size < 2; i++) {
      const c = await RawClient.connect(d.port);
      assert.equal(await c.waitClosed(), BUSY);
      await waitFor(() => (d.log().match(/too many connections open \(max 2\)\. sent busy response/g) ?? []).length === i + 1, 'the busy line');
      for (const m of d.log().matchAll(/^smtpsiftd: (worker \d+: )?too many connections/gm)) refusedBy.add(m[1] ?? 'main');
    }
    assert.equal(refusedBy.size, 2, `both processes refused:\n${d.log()}`);
    assert.equal(up.sessions.length, 2, 'no upstream connection for a refused client');
    assert.equal(await c2.command('NOOP'), '250 2.0.0 Ok\r\n');

    assert.equal(await c1.command('QUIT'), '221 2.0.0 Bye\r\n');
    await c1.waitClosed();
    let served: RawClient | undefined;
    for (let i = 0; i < 40 && served === undefined; i++) {
      const c = await RawClient.connect(d.port);
      const r = await c.reply();
      if (r === '220 smtp.passthru\r\n') served = c;
      else {
        assert.equal(r, BUSY);
        await new Promise((res) => setTimeout(res, 50));
      }
    }
    assert.ok(served, 'a freed slot serves again');
    assert.equal(await served.command('QUIT'), '221 2.0.0 Bye\r\n');
    c2.close();
  } finally {
    await d.stop();
    await up.close();
  }
});

test('Workers: 2, SIGTERM -> idle sessions on both processes get 421 at once, exit 0, pid file and spool removed', T, async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const pidFile = join(t.dir, 'smtpsiftd.pid');
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, Workers: '2', PidFile: pidFile });
  try {
    const clients = await idleOnEveryWorker(d, 2);
    assert.equal(readFileSync(pidFile, 'utf8'), `${d.proc.pid}\n`);
    assert.equal(privateSpoolDirs(d.spoolDir).length, 1);
    const signalled = Date.now();
    d.proc.kill('SIGTERM');
    for (const c of clients) {
      assert.equal(await c.reply(2000), SHUTDOWN);
      await c.waitClosed(2000);
    }
    assert.ok(Date.now() - signalled < 1500, 'every idle session is told at once');
    assert.equal(await d.exited, 0);
    assert.equal(existsSync(pidFile), false, 'pid file removed');
    assert.deepEqual(privateSpoolDirs(d.spoolDir), [], 'spool removed');
    assert.equal(up.commands.filter((c) => c === 'QUIT\r\n').length, clients.length, 'every upstream told goodbye');
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('Workers: 2, a worker process dies -> logged with its stack; the main process drains; exit 1, pid file and spool removed', T, async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const pidFile = join(t.dir, 'smtpsiftd.pid');
  const trigger = join(t.dir, 'crash-now');
  // Preloaded in every process (worker processes get the main one's execArgv): a worker
  // process (it has an IPC channel) throws once the trigger file exists; the product has
  // no hook for this.
  const crasher = join(t.dir, 'crash.mjs');
  writeFileSync(
    crasher,
    `import { existsSync } from 'node:fs';\n` +
      `if (process.send !== undefined) setInterval(() => { if (existsSync(${JSON.stringify(trigger)})) throw new Error('injected crash'); }, 20).unref();\n`,
  );
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, Workers: '2', PidFile: pidFile }, ['-d', '4'], {
    wrap: ([node = '', ...rest]) => [node, '--import', crasher, ...rest],
  });
  try {
    const clients = await idleOnEveryWorker(d, 2);
    const accepted = workers(d.log(), 'accepted connection');
    writeFileSync(trigger, '');
    await d.waitForLog(/^smtpsiftd: worker 1 crashed: Error: injected crash\n\s+at /m);
    await d.waitForLog(/^smtpsiftd: worker 1: its connections were cut; stopping the daemon$/m);
    for (const [i, c] of clients.entries()) {
      const worker = [...accepted.values()][i];
      // The main process's idle sessions get the shutdown 421; the dead process's are cut.
      assert.equal(await c.waitClosed(2000), worker === 0 ? SHUTDOWN : '');
    }
    assert.equal(await d.exited, 1);
    assert.equal(existsSync(pidFile), false, 'pid file removed');
    assert.deepEqual(privateSpoolDirs(d.spoolDir), [], 'spool removed');
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

interface TwoWorkers {
  readonly d: Daemon;
  /** Idle sessions, at least one on each process, and which process (0 = main) took each. */
  readonly clients: readonly RawClient[];
  readonly servedBy: readonly number[];
  readonly worker: number;
}

/** A Workers: 2 daemon with idle sessions on both processes, for `fn`. */
async function withTwoWorkers(fn: (t: TwoWorkers) => Promise<void>): Promise<void> {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, Workers: '2' }, ['-d', '4']);
  try {
    const clients = await idleOnEveryWorker(d, 2);
    const servedBy = [...workers(d.log(), 'accepted connection').values()];
    const pids = childPids(d.proc.pid ?? 0);
    assert.equal(pids.length, 1, 'one worker process');
    await fn({ d, clients, servedBy, worker: pids[0] ?? 0 });
  } finally {
    await d.stop();
    await up.close();
  }
}

test('Workers: 2, a worker process killed -> logged; the main process drains; exit 1', T, async () => {
  await withTwoWorkers(async ({ d, clients, servedBy, worker }) => {
    process.kill(worker, 'SIGKILL');
    await d.waitForLog(/^smtpsiftd: worker 1 ended unexpectedly \(signal SIGKILL\); its connections were cut; stopping the daemon$/m);
    for (const [i, c] of clients.entries()) assert.equal(await c.waitClosed(2000), servedBy[i] === 0 ? SHUTDOWN : '');
    assert.equal(await d.exited, 1);
  });
});

test('Workers: 2, SIGTERM to every process at once (a service manager stopping the unit) -> one drain, exit 0', T, async () => {
  await withTwoWorkers(async ({ d, clients, worker }) => {
    d.proc.kill('SIGTERM');
    process.kill(worker, 'SIGTERM');
    // The worker leaves its own SIGTERM to the main process, which drains both.
    for (const c of clients) assert.equal(await c.waitClosed(2000), SHUTDOWN);
    assert.equal(await d.exited, 0);
    assert.doesNotMatch(d.log(), /ended unexpectedly|crashed/);
  });
});

test('Workers: 2, the main process killed (SIGKILL) -> the worker process drains its sessions and exits; nothing left listening', T, async () => {
  await withTwoWorkers(async ({ d, clients, servedBy, worker }) => {
    d.proc.kill('SIGKILL');
    for (const [i, c] of clients.entries()) assert.equal(await c.waitClosed(2000), servedBy[i] === 0 ? '' : SHUTDOWN);
    await waitFor(() => !alive(worker), 'the worker process to end');
    const late = await RawClient.connect(d.port).then(
      (c) => (c.close(), 'connected'),
      (e: NodeJS.ErrnoException) => e.code,
    );
    assert.equal(late, 'ECONNREFUSED');
  });
});

test('Workers: 2 in routed mode: SIGHUP reloads the route file in every process', T, async () => {
  await withRouted(
    {
      routes: (at) => `a.test ${at(0)}\n`,
      config: (_at, dir) => ({ RouteType: 'file', RouteDatabase: join(dir, 'routes'), Workers: '2' }),
    },
    async ({ ups, d, writeRoutes, at }) => {
      writeRoutes(`a.test ${at(0)}\nb.test ${at(1)}\n`);
      d.proc.kill('SIGHUP');
      await d.waitForLog(/^smtpsiftd: SIGHUP: reloaded .* \(2 entries\)$/m);
      await d.waitForLog(/^smtpsiftd: worker 1: SIGHUP: reloaded .* \(2 entries\)$/m);
      // New sessions on either process route b.test (unknown before the reload: relay denied).
      const clients = await idleOnEveryWorker(d, 2);
      for (const c of clients) {
        assert.match(await c.command('EHLO client.test'), /^250/);
        assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
        assert.equal(await c.command('RCPT TO:<x@b.test>'), '250 2.1.5 Ok\r\n');
        assert.match(await c.command('DATA'), /^354 /);
        c.send('Subject: b\r\n\r\nb\r\n.\r\n');
        assert.match(await c.reply(), /^250 /);
        c.close();
      }
      assert.equal(ups[1]?.messages.length, clients.length);
    },
  );
});

test('Workers: 2, LogType filelog: SIGUSR1 reopens the log file in every process', T, async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const logFile = join(t.dir, 'acct.log');
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, Workers: '2', LogType: 'filelog', LogFile: logFile, LogFormat: '%status %id' });
  try {
    // Each process has the file open before the rotation.
    for (let i = 0; i < 40 && perWorker(workers(d.log(), 'accepted connection')).filter((x) => x > 0).length < 2; i++) {
      assert.match(await sendOne(d.port, `before${i}`), /^250 /);
    }
    const sentBefore = up.messages.length;
    await waitFor(() => lines(logFile).length === sentBefore, 'the lines before the rotation');
    renameSync(logFile, `${logFile}.1`);
    d.proc.kill('SIGUSR1');
    await d.waitForLog(/SIGUSR1 received; log file reopened/);
    const servedBefore = workers(d.log(), 'accepted connection').size;
    const after = (): number[] => {
      const all = [...workers(d.log(), 'accepted connection').values()].slice(servedBefore);
      return [0, 1].map((n) => all.filter((x) => x === n).length);
    };
    for (let i = 0; i < 40 && after().some((x) => x === 0); i++) assert.match(await sendOne(d.port, `after${i}`), /^250 /);
    assert.ok(after().every((x) => x > 0), 'both processes served after the signal');
    const sentAfter = up.messages.length - sentBefore;
    await waitFor(() => lines(logFile).length === sentAfter, 'every line after the rotation in the new file');
    assert.equal(lines(`${logFile}.1`).length, sentBefore, 'and every line before it in the old one');
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('Workers: 2 on a unix socket Listen: both processes serve it; it is removed at exit', T, async () => {
  const up = await RecordingUpstream.start();
  const t = tempDir();
  const path = join(t.dir, 'smtpsiftd.sock');
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, Workers: '2', Listen: path });
  try {
    const clients: RawClient[] = [];
    for (let i = 0; i < 40 && perWorker(workers(d.log(), 'accepted connection')).filter((x) => x > 0).length < 2; i++) {
      const c = await RawClient.connectPath(path);
      clients.push(c);
      await c.greet();
      await waitFor(() => workers(d.log(), 'accepted connection').size === clients.length, 'the accept line');
    }
    assert.equal(perWorker(workers(d.log(), 'accepted connection')).filter((x) => x > 0).length, 2, d.log());
    for (const c of clients) assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    assert.equal(await d.stop(), 0);
    assert.equal(existsSync(path), false, 'the socket file is removed at exit');
  } finally {
    await d.stop();
    await up.close();
    t.remove();
  }
});

test('Workers: 2, a worker process that cannot start (route file unreadable by User) -> its error, exit 1, no spool or pid file left', { ...T, skip: process.getuid?.() !== 0 ? 'needs root (User)' : false }, async () => {
  const conf = configFile('');
  try {
    const routes = join(conf.dir, 'routes');
    writeFileSync(routes, 'a.test 127.0.0.1:2525\n', { mode: 0o600 });
    chmodSync(conf.dir, 0o777);
    chmodSync(conf.spool, 0o777);
    const pidFile = join(conf.dir, 'pid');
    writeFileSync(
      conf.file,
      `Listen: 127.0.0.1:0\nRouteType: file\nRouteDatabase: ${routes}\nTempDirectory: ${conf.spool}\nUser: nobody\nPidFile: ${pidFile}\nWorkers: 2\n`,
    );
    const r = await runDaemonCli(['-d', '0', '-f', conf.file]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^smtpsiftd: worker 1: ${routes}: cannot read the route file: .*EACCES`, 'm'));
    assert.deepEqual(privateSpoolDirs(conf.spool), []);
    assert.equal(existsSync(pidFile), false);
  } finally {
    conf.remove();
  }
});

test('Workers: bad values are FILE:LINE errors with exit 2; auto and 0 are accepted', T, async () => {
  for (const [value, why] of [
    ['-1', /Workers: -1 is out of range; must be 'auto' or a number from 0 \(auto\) to 256/],
    ['x', /Workers: 'x' is not a whole number; must be 'auto'/],
    ['257', /Workers: 257 is out of range/],
    ['', /Workers: '' is not a whole number/],
  ] as const) {
    const conf = configFile(`OutAddress: 127.0.0.1:2525\n# workers\nWorkers: ${value}\n`);
    try {
      const r = await runDaemonCli(['-d', '0', '-f', conf.file]);
      assert.equal(r.status, 2, r.stderr);
      const errors = r.stderr.trimEnd().split('\n');
      assert.equal(errors.length, 1, r.stderr);
      assert.ok(errors[0]?.startsWith(`smtpsiftd: ${conf.file}:3: `), r.stderr);
      assert.match(errors[0] ?? '', why);
    } finally {
      conf.remove();
    }
  }
  for (const value of ['auto', 'AUTO', '0', '4']) {
    const conf = configFile(`OutAddress: 127.0.0.1:2525\nWorkers: ${value}\n`);
    try {
      const r = await runSift(['check', '-f', conf.file]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^Workers: ${value === '4' ? '4' : 'auto'}$`, 'm'));
    } finally {
      conf.remove();
    }
  }
});
