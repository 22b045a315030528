// Issue 5, Moxy routing: relay control. A domain not in the table is refused (550 5.7.1)
// unless the client is in AllowRelayFrom: then it goes to SendRelayTo. No open relay by
// default; `AllowRelayFrom: *` must be explicit and `smtpsift check` warns about it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRelayAcl } from '../src/routing/acl.js';
import { smtpsift, withRouted } from './helpers/routing.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { configFile } from './helpers/process.js';
import type { Routed } from './helpers/routing.js';

const T = { timeout: 20_000 };

async function tryRelay(r: Routed, host = '127.0.0.1'): Promise<string> {
  const c = await r.session('EHLO client.test', host);
  assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
  const reply = await c.command('RCPT TO:<x@elsewhere.test>');
  c.close();
  return reply;
}

const config = (extra: Record<string, string>) => (at: (i: number) => string, dir: string) => ({
  RouteType: 'file',
  RouteDatabase: `${dir}/routes`,
  ...extra,
  ...(extra['SendRelayTo'] === undefined && extra['AllowRelayFrom'] !== undefined ? { SendRelayTo: at(2) } : {}),
});

test('no AllowRelayFrom: an unknown domain is 550 5.7.1 Relaying denied, and nothing is dialled', T, async () => {
  await withRouted({ routes: (at) => `a.test ${at(0)}\n`, config: config({}) }, async (r) => {
    assert.equal(await tryRelay(r), '550 5.7.1 Relaying denied\r\n');
    assert.deepEqual(r.ups.map((u) => u.sessions.length), [0, 0, 0]);
  });
});

for (const [label, acl] of [
  ['an IPv4 wildcard pattern', '10.*.*.*, 127.0.*.*'],
  ['an IPv4 CIDR block', '127.0.0.0/8'],
  ['a single address', '192.0.2.1,127.0.0.1'],
] as const) {
  test(`AllowRelayFrom with ${label}: relayed to SendRelayTo`, T, async () => {
    await withRouted({ routes: (at) => `a.test ${at(0)}\n`, config: config({ AllowRelayFrom: acl }) }, async (r) => {
      assert.equal(await tryRelay(r), '250 2.1.5 Ok\r\n');
      assert.deepEqual(r.ups.map((u) => u.sessions.length), [0, 0, 1]);
    });
  });
}

test('AllowRelayFrom not matching the client: denied', T, async () => {
  await withRouted({ routes: (at) => `a.test ${at(0)}\n`, config: config({ AllowRelayFrom: '10.0.0.0/8,192.168.*.*,::1/128' }) }, async (r) => {
    assert.equal(await tryRelay(r), '550 5.7.1 Relaying denied\r\n');
  });
});

test('AllowRelayFrom with an IPv6 CIDR block, client over IPv6', T, async () => {
  await withRouted(
    { routes: (at) => `a.test ${at(0)}\n`, config: (at, dir) => ({ ...config({ AllowRelayFrom: '::1/128' })(at, dir), Listen: '[::1]:0' }) },
    async (r) => {
      assert.equal(await tryRelay(r, '::1'), '250 2.1.5 Ok\r\n');
      assert.equal(r.ups[2]?.sessions[0]?.commands[1], 'XFORWARD ADDR=IPV6:::1 HELO=client.test PROTO=ESMTP\r\n');
    },
  );
});

test('the relay ACL itself: patterns, CIDR v4/v6, IPv4-mapped clients, unix clients, bad entries', () => {
  const acl = parseRelayAcl('192.168.*.*, 10.1.0.0/16, 2001:db8::/32, 198.51.100.7, *.2.3.4');
  assert.ok(acl.allows('192.168.4.5'));
  assert.ok(acl.allows('::ffff:192.168.4.5'));
  assert.ok(acl.allows('10.1.200.3'));
  assert.ok(!acl.allows('10.2.0.1'));
  assert.ok(acl.allows('2001:db8:1::5'));
  assert.ok(!acl.allows('2001:db9::5'));
  assert.ok(acl.allows('198.51.100.7'));
  assert.ok(acl.allows('9.2.3.4'));
  assert.ok(!acl.allows('192.169.0.1'));
  assert.ok(!acl.allows(undefined));
  assert.ok(!acl.everyone);
  assert.ok(parseRelayAcl('*').allows('203.0.113.9'));
  for (const bad of ['192.168.*', '10.0.0.0/33', 'example.com', '300.1.1.1', '', 'a,,b']) {
    assert.throws(() => parseRelayAcl(bad), Error, bad);
  }
});

test('smtpsift check warns about AllowRelayFrom: * (an open relay) but accepts it', T, async () => {
  await withRouted({ routes: (at) => `a.test ${at(0)}\n`, config: config({ AllowRelayFrom: '*' }) }, async (r) => {
    const out = smtpsift(['check', '-f', r.d.configFile]);
    assert.equal(out.status, 0, out.stderr);
    assert.match(out.stderr, /warning: .*AllowRelayFrom: \* lets every client relay to any domain: an open relay/);
    assert.match(out.stdout, /^AllowRelayFrom: \*$/m);
    assert.equal(await tryRelay(r), '250 2.1.5 Ok\r\n');
    await r.d.waitForLog(/AllowRelayFrom: \* lets every client relay/);
  });
});

test('smtpsift check warns about every AllowRelayFrom entry that matches a whole address family, and relay options with nodb', () => {
  const warnings = (lines: string): string[] => {
    const c = configFile('');
    try {
      writeFileSync(join(c.dir, 'routes'), 'a.test 127.0.0.1:2525\n');
      writeFileSync(c.file, `TempDirectory: ${c.spool}\n${lines.replace(/ROUTES/g, join(c.dir, 'routes'))}`);
      const out = smtpsift(['check', '-f', c.file]);
      assert.equal(out.status, 0, out.stderr);
      // (Run as root in CI, check also warns about the missing User: not what this is about.)
      return out.stderr.split('\n').filter((l) => /Relay/.test(l)).map((l) => l.replace(c.file, 'CONF'));
    } finally {
      c.remove();
    }
  };
  const file = 'RouteType: file\nRouteDatabase: ROUTES\nSendRelayTo: 127.0.0.1:10026\n';
  assert.deepEqual(warnings(`${file}AllowRelayFrom: 10.0.0.0/8, 192.168.*.*, *.*.*.*, 0.0.0.0/0, ::/0, ::ffff:0:0/96, 2000::/3, 10.0.0.0/0\n`), [
    "smtpsift: warning: CONF:5: AllowRelayFrom: '*.*.*.*' matches every IPv4 address: each such client may relay to any domain, an open relay",
    "smtpsift: warning: CONF:5: AllowRelayFrom: '0.0.0.0/0' matches every IPv4 address: each such client may relay to any domain, an open relay",
    "smtpsift: warning: CONF:5: AllowRelayFrom: '::/0' matches every address: each such client may relay to any domain, an open relay",
    "smtpsift: warning: CONF:5: AllowRelayFrom: '::ffff:0:0/96' matches every IPv4 address: each such client may relay to any domain, an open relay",
    "smtpsift: warning: CONF:5: AllowRelayFrom: '10.0.0.0/0' matches every IPv4 address: each such client may relay to any domain, an open relay",
  ]);
  assert.deepEqual(warnings(`${file}AllowRelayFrom: *\n`), ['smtpsift: warning: CONF:5: AllowRelayFrom: * lets every client relay to any domain: an open relay']);
  assert.deepEqual(warnings(`${file}AllowRelayFrom: 10.0.0.0/8, 192.168.*.*, 2001:db8::/32, 0.0.0.0/1\n`), []);
  // nodb: every recipient goes to RouteDefault; AllowRelayFrom and SendRelayTo do nothing.
  assert.deepEqual(warnings('RouteType: nodb\nRouteDefault: 127.0.0.1:2525\nAllowRelayFrom: 10.0.0.0/8\nSendRelayTo: 127.0.0.1:10026\n'), [
    'smtpsift: warning: CONF:4: AllowRelayFrom: has no effect with RouteType nodb: every recipient goes to RouteDefault, and its upstream decides what it accepts',
    'smtpsift: warning: CONF:5: SendRelayTo: has no effect with RouteType nodb: every recipient goes to RouteDefault, and its upstream decides what it accepts',
  ]);
  assert.deepEqual(warnings('RouteType: nodb\nRouteDefault: 127.0.0.1:2525\n'), []);
});
