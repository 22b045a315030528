// Issue 5, Moxy routing: the route table's life. The flat file is checked at start-up
// (FILE:LINE, exit 2), re-read on SIGHUP and when it changes without dropping sessions, and
// a bad reload keeps the old table whole. `smtpsift makedb` writes the lmdb database in one
// transaction and a running daemon sees it at once. Configuration conflicts are start-up errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { parseConfig } from '../src/config/load.js';
import { ConfigError } from '../src/config/errors.js';
import { parseRouteText } from '../src/routing/table.js';
import { SMTPSIFTD, tempDir } from './helpers/daemon.js';
import { smtpsift, withRouted } from './helpers/routing.js';
import type { RawClient } from './helpers/client.js';

const T = { timeout: 30_000 };

async function rcptTo(c: RawClient, rcpt: string): Promise<string> {
  assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
  return c.command(`RCPT TO:<${rcpt}>`);
}

async function finish(c: RawClient): Promise<string> {
  assert.match(await c.command('DATA'), /^354 /);
  c.send('Subject: t\r\n\r\nbody\r\n.\r\n');
  return c.reply();
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  return [];
}

test('route file syntax: FILE:LINE for each bad line', () => {
  const text = '# comment\n\nok.test 10.0.0.1:25\nnodest.test\nbadport.test 10.0.0.1:99999\n.wild.test [2001:db8::1]:2525, 10.0.0.2\nempty.test 10.0.0.1,,x\n';
  assert.deepEqual(problems(() => parseRouteText(text, 'routes')), [
    "routes:4: 'nodest.test' has no destination; use 'domain host:port[,host:port...]'",
    "routes:5: '10.0.0.1:99999' is not a destination; use host:port, ip:port or [ipv6]:port",
    "routes:7: '10.0.0.1,,x' is not a destination list; use host:port[,host:port...]",
  ]);
  const ok = parseRouteText('Ok.Test 10.0.0.1\n.Wild.test [2001:db8::1]:2525, 10.0.0.2\n', 'r');
  assert.deepEqual(ok.map((e) => [e.key, e.text]), [['ok.test', '10.0.0.1:25'], ['.wild.test', '[2001:db8::1]:2525,10.0.0.2:25']]);
});

test('route file names that are not domains, and a domain given twice: FILE:LINE each, exit 2 (daemon, check, makedb)', T, () => {
  const text =
    'ok.test 10.0.0.1\n* 10.0.0.2\n*.wild.test 10.0.0.3\na..test 10.0.0.4\n-bad-.test 10.0.0.5\nunder_score.test 10.0.0.6\n' +
    `${'x'.repeat(64)}.test 10.0.0.7\nOK.test. 10.0.0.8\nbücher.test 10.0.0.9\nxn--bcher-kva.test 10.0.0.9\n.sub.test 10.0.0.1\nsub.test 10.0.0.1\n.SUB.test 10.0.0.2\n`;
  const expected = [
    "routes:2: '*' is not a domain; there is no catch-all route (AllowRelayFrom clients' mail for other domains goes to SendRelayTo)",
    "routes:3: '*.wild.test' is not a domain; write '.wild.test' for its subdomains",
    "routes:4: 'a..test' is not a domain",
    "routes:5: '-bad-.test' is not a domain",
    "routes:6: 'under_score.test' is not a domain",
    `routes:7: '${'x'.repeat(64)}.test' is not a domain`,
    "routes:8: 'OK.test.' is already routed at line 1 (as ok.test)",
    "routes:10: 'xn--bcher-kva.test' is already routed at line 9",
    "routes:13: '.SUB.test' is already routed at line 11",
  ];
  assert.deepEqual(problems(() => parseRouteText(text, 'routes')), expected);
  // What is left is a good table: the exact entry and the wildcard of one name are two keys.
  const good = parseRouteText('bücher.test 10.0.0.9\n.sub.test 10.0.0.1\nsub.test 10.0.0.1\nlocalhost 127.0.0.1\n', 'r');
  assert.deepEqual(good.map((e) => e.key), ['xn--bcher-kva.test', '.sub.test', 'sub.test', 'localhost']);

  const tmp = tempDir('smtpsift-routes-');
  try {
    const routes = join(tmp.dir, 'routes');
    writeFileSync(routes, text);
    const conf = join(tmp.dir, 'conf');
    writeFileSync(conf, `Listen: 127.0.0.1:0\nTempDirectory: ${tmp.dir}\nRouteType: file\nRouteDatabase: ${routes}\n`);
    const want = expected.map((e) => `${routes}${e.slice('routes'.length)}`);
    const daemon = spawnSync(process.execPath, [SMTPSIFTD, '-d', '4', '-f', conf], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(daemon.status, 2, daemon.stderr);
    for (const w of want) assert.ok(daemon.stderr.includes(`smtpsiftd: ${w}\n`), `${w}\n${daemon.stderr}`);
    const check = smtpsift(['check', '-f', conf]);
    assert.equal(check.status, 2);
    assert.equal(check.stderr.replace(/^smtpsift: warning: .*\n/gm, ''), want.map((w) => `smtpsift: ${w}\n`).join(''));
    const makedb = smtpsift(['makedb', '-o', join(tmp.dir, 'routes.db'), routes]);
    assert.equal(makedb.status, 2);
    assert.equal(makedb.stderr, want.map((w) => `smtpsift: ${w}\n`).join(''));
    assert.equal(existsSync(join(tmp.dir, 'routes.db')), false);
  } finally {
    tmp.remove();
  }
});

test('configuration: RouteType with OutAddress or TransparentProxy, missing RouteDatabase/RouteDefault, routed options alone', () => {
  assert.deepEqual(problems(() => parseConfig('RouteType: file\nRouteDatabase: /x\nOutAddress: 10.0.0.1:25\n', 'c')), [
    'c:3: OutAddress: cannot be combined with RouteType (routed mode chooses the upstream per recipient domain)',
  ]);
  assert.deepEqual(problems(() => parseConfig('RouteType: nodb\nRouteDefault: 10.0.0.1\nTransparentProxy: client\n', 'c')), [
    'c:3: TransparentProxy: cannot be combined with RouteType',
  ]);
  assert.deepEqual(problems(() => parseConfig('RouteType: file\n', 'c')), ["c:1: RouteType: file needs 'RouteDatabase: path' (the route table)"]);
  assert.deepEqual(problems(() => parseConfig('dbtype: nodb\n', 'c')), ["c:1: RouteType: nodb needs 'RouteDefault: host:port[,host:port...]'"]);
  assert.deepEqual(problems(() => parseConfig('RouteType: file\nRouteDatabase: /x\nAllowRelayFrom: 10.0.0.0/8\n', 'c')), [
    "c:3: AllowRelayFrom: needs 'SendRelayTo: host:port[,...]', where relayed mail goes",
  ]);
  assert.deepEqual(problems(() => parseConfig('OutAddress: 10.0.0.1\nBanner: hi\n', 'c')), ['c:2: Banner: only used in routed mode; set RouteType too']);
  assert.deepEqual(problems(() => parseConfig('RouteType: gdbm\nRouteDatabase: /x\n', 'c')), ["c:1: RouteType: 'gdbm' is not allowed; use nodb, file or lmdb"]);
  const c = parseConfig('dbtype: dbm\ndbname: /x\n', 'c');
  assert.equal(c.routeType, 'lmdb');
  assert.equal(c.routeDatabase, '/x');
});

test('a bad route file is FILE:LINE and exit 2 at start-up, and from smtpsift check', T, () => {
  const tmp = tempDir('smtpsift-routes-');
  try {
    const routes = join(tmp.dir, 'routes');
    writeFileSync(routes, 'a.test 127.0.0.1:2525\nb.test\n');
    const conf = join(tmp.dir, 'conf');
    writeFileSync(conf, `Listen: 127.0.0.1:0\nTempDirectory: ${tmp.dir}\nRouteType: file\nRouteDatabase: ${routes}\n`);
    const r = spawnSync(process.execPath, [SMTPSIFTD, '-d', '4', '-f', conf], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 2);
    assert.match(r.stderr, new RegExp(`smtpsiftd: ${routes}:2: 'b\\.test' has no destination`));
    const check = smtpsift(['check', '-f', conf]);
    assert.equal(check.status, 2);
    assert.match(check.stderr, new RegExp(`${routes}:2: `));
    const both = join(tmp.dir, 'both');
    writeFileSync(both, `RouteType: nodb\nRouteDefault: 127.0.0.1\nOutAddress: 127.0.0.1:25\n`);
    const r2 = spawnSync(process.execPath, [SMTPSIFTD, '-d', '4', '-f', both], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r2.status, 2);
    assert.match(r2.stderr, /both:3: OutAddress: cannot be combined with RouteType/);
  } finally {
    tmp.remove();
  }
});

test('SIGHUP reloads the route file without dropping a session in progress; a bad reload keeps the old table', T, async () => {
  await withRouted({ routes: (at) => `a.test ${at(0)}\n` }, async ({ ups, d, session, writeRoutes, at, routeFile }) => {
    const c = await session();
    assert.equal(await rcptTo(c, 'x@a.test'), '250 2.1.5 Ok\r\n');
    writeRoutes(`a.test ${at(1)}\nb.test ${at(2)}\n`);
    d.proc.kill('SIGHUP');
    await d.waitForLog(/SIGHUP: reloaded .* \(2 entries\)/);
    // The session in progress finishes its message where it started.
    assert.match(await finish(c), /^250 /);
    assert.equal(ups[0]?.messages.length, 1);
    // Its next transaction, and new sessions, use the new table.
    assert.equal(await rcptTo(c, 'x@a.test'), '250 2.1.5 Ok\r\n');
    assert.match(await finish(c), /^250 /);
    assert.equal(ups[1]?.messages.length, 1);
    // A reload with an error keeps the whole old table (b.test included).
    writeRoutes(`a.test ${at(0)}\nb.test 127.0.0.1:notaport\n`);
    d.proc.kill('SIGHUP');
    await d.waitForLog(new RegExp(`${routeFile}:2: '127\\.0\\.0\\.1:notaport' is not a destination`));
    await d.waitForLog(/keeping the previous route table/);
    const c2 = await session();
    assert.equal(await rcptTo(c2, 'x@a.test'), '250 2.1.5 Ok\r\n');
    assert.match(await finish(c2), /^250 /);
    assert.equal(ups[1]?.messages.length, 2);
    assert.equal(await rcptTo(c2, 'x@b.test'), '250 2.1.5 Ok\r\n');
    assert.match(await finish(c2), /^250 /);
    assert.equal(ups[2]?.messages.length, 1);
  });
});

test('the route file is re-read when it changes, with no signal', T, async () => {
  await withRouted({ routes: (at) => `a.test ${at(0)}\n` }, async ({ ups, d, session, writeRoutes, at }) => {
    writeRoutes(`a.test ${at(2)}\n# changed\n`);
    await d.waitForLog(/changed: reloaded .* \(1 entries\)/, 10_000);
    const c = await session();
    assert.equal(await rcptTo(c, 'x@a.test'), '250 2.1.5 Ok\r\n');
    assert.equal(ups[2]?.sessions.length, 1);
    assert.equal(ups[0]?.sessions.length, 0);
  });
});

test('reload under load: sessions running through SIGHUPs all deliver', T, async () => {
  await withRouted({ routes: (at) => `a.test ${at(0)}\n` }, async ({ ups, d, session, writeRoutes, at }) => {
    let stop = false;
    const hups = (async () => {
      for (let i = 0; !stop; i++) {
        writeRoutes(`a.test ${at(i % 2)}\n`);
        d.proc.kill('SIGHUP');
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const one = async (): Promise<void> => {
      const c = await session();
      for (let i = 0; i < 5; i++) {
        assert.equal(await rcptTo(c, `x${i}@a.test`), '250 2.1.5 Ok\r\n');
        assert.match(await finish(c), /^250 /);
      }
      assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
    };
    try {
      await Promise.all(Array.from({ length: 8 }, one));
    } catch (e) {
      throw new Error(`${(e as Error).message}\ndaemon log:\n${d.log().split('\n').filter((l) => !/reloaded/.test(l)).slice(-30).join('\n')}`);
    } finally {
      stop = true;
      await hups;
    }
    assert.equal((ups[0]?.messages.length ?? 0) + (ups[1]?.messages.length ?? 0), 40);
  });
});

test('smtpsift makedb writes the lmdb database; a running daemon sees a new one at once', T, async () => {
  await withRouted(
    {
      routes: (at) => `a.test ${at(0)}\n.sub.test ${at(1)}\n`,
      config: (_at, dir) => ({ RouteType: 'lmdb', RouteDatabase: `${dir}/routes.db` }),
      before: ({ routeFile }) => {
        const r = smtpsift(['makedb', routeFile]);
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, /routes\.db: 2 routes written/);
      },
    },
    async ({ ups, session, writeRoutes, routeFile, dir, at }) => {
      const c = await session();
      assert.equal(await rcptTo(c, 'x@a.test'), '250 2.1.5 Ok\r\n');
      assert.match(await finish(c), /^250 /);
      assert.equal(await rcptTo(c, 'x@deep.sub.test'), '250 2.1.5 Ok\r\n');
      assert.match(await finish(c), /^250 /);
      assert.deepEqual(ups.map((u) => u.messages.length), [1, 1, 0]);
      // A bad file: exit 2, FILE:LINE, the database untouched.
      writeRoutes(`a.test ${at(2)}\nbroken.test\n`);
      const bad = smtpsift(['makedb', '-o', `${dir}/routes.db`, routeFile]);
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, new RegExp(`${routeFile}:2: 'broken\\.test' has no destination`));
      assert.equal(await rcptTo(c, 'x@a.test'), '250 2.1.5 Ok\r\n');
      assert.match(await finish(c), /^250 /);
      assert.deepEqual(ups.map((u) => u.messages.length), [2, 1, 0]);
      // A good one replaces the whole table, seen by the next lookup, no signal.
      writeRoutes(`a.test ${at(2)}\n`);
      const good = smtpsift(['makedb', '-o', `${dir}/routes.db`, routeFile]);
      assert.equal(good.status, 0, good.stderr);
      assert.equal(await rcptTo(c, 'x@a.test'), '250 2.1.5 Ok\r\n');
      assert.match(await finish(c), /^250 /);
      assert.equal(await rcptTo(c, 'x@deep.sub.test'), '550 5.7.1 Relaying denied\r\n');
      assert.deepEqual(ups.map((u) => u.messages.length), [2, 1, 1]);
    },
  );
});

test('a file that is not an LMDB database is refused by name, never mapped (lmdb crashed on one): RouteDatabase, CounterDatabase, makedb -o, stats --db', T, () => {
  const tmp = tempDir('smtpsift-lmdb-');
  try {
    const garbage = join(tmp.dir, 'garbage.db');
    writeFileSync(garbage, Buffer.alloc(12288, 0xa5));
    const routes = join(tmp.dir, 'routes');
    const routesText = 'a.test 127.0.0.1:2525\n';
    writeFileSync(routes, routesText);
    const conf = join(tmp.dir, 'conf');
    writeFileSync(conf, `Listen: 127.0.0.1:0\nTempDirectory: ${tmp.dir}\nRouteType: lmdb\nRouteDatabase: ${garbage}\n`);
    for (const r of [spawnSync(process.execPath, [SMTPSIFTD, '-d', '4', '-f', conf], { encoding: 'utf8', timeout: 10_000 }), smtpsift(['check', '-f', conf])]) {
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`${garbage}: cannot open the route database: not an LMDB database`));
    }
    const counters = join(tmp.dir, 'counters.conf');
    writeFileSync(counters, `Listen: 127.0.0.1:0\nOutAddress: 127.0.0.1:2525\nLogType: counters\nCounterDatabase: ${garbage}\n`);
    for (const r of [spawnSync(process.execPath, [SMTPSIFTD, '-d', '4', '-f', counters], { encoding: 'utf8', timeout: 10_000 }), smtpsift(['check', '-f', counters])]) {
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`${counters}:4: CounterDatabase: ${garbage}: not an LMDB database`));
    }
    const stats = smtpsift(['stats', '--db', garbage]);
    assert.equal(stats.status, 1, stats.stderr);
    assert.match(stats.stderr, /cannot open the counters database .*garbage\.db: not an LMDB database/);
    // makedb onto the route file itself: refused, the file untouched.
    const onto = smtpsift(['makedb', '-o', routes, routes]);
    assert.equal(onto.status, 2, onto.stderr);
    assert.match(onto.stderr, /not an LMDB database/);
    assert.equal(readFileSync(routes, 'utf8'), routesText);
    // A mistyped -o directory is an error, not made.
    const missing = join(tmp.dir, 'no', 'such');
    const r = smtpsift(['makedb', '-o', join(missing, 'routes.db'), routes]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /no such directory/);
    assert.equal(existsSync(join(tmp.dir, 'no')), false);
  } finally {
    tmp.remove();
  }
});

test('etc/routes.example is a valid route file', () => {
  const file = fileURLToPath(new URL('../../etc/routes.example', import.meta.url));
  const entries = parseRouteText(readFileSync(file, 'utf8'), file);
  assert.ok(entries.some((e) => e.key === '.example.com'));
  assert.ok(entries.some((e) => e.key === 'xn--bcher-kva.example' && e.text === '[2001:db8::25]:25'));
});

test('smtpsift check lists the routed options in routed mode, and its output loads again', T, () => {
  const tmp = tempDir('smtpsift-routes-');
  try {
    const routes = join(tmp.dir, 'routes');
    writeFileSync(routes, 'a.test 127.0.0.1:2525\n');
    const conf = join(tmp.dir, 'conf');
    writeFileSync(conf, `TempDirectory: ${tmp.dir}\ndbtype: file\ndbname: ${routes}\nAllowRelayFrom: 10.*.*.*\nSendRelayTo: smarthost.test:587\n`);
    const r = smtpsift(['check', '-f', conf]);
    assert.equal(r.status, 0, r.stderr);
    for (const l of ['RouteType: file', `RouteDatabase: ${routes}`, '#RouteDefault:', 'AllowRelayFrom: 10.*.*.*', 'SendRelayTo: smarthost.test:587', '#Banner:', 'RouteRetry: 60', '#OutAddress:']) {
      assert.ok(r.stdout.split('\n').includes(l), `${l} in:\n${r.stdout}`);
    }
    assert.equal(parseConfig(r.stdout, 'again').routeType, 'file');
  } finally {
    tmp.remove();
  }
});
