// Issue 5, Moxy routing: destination lists tried in order. A host that refuses the
// connection, times out or greets with 4xx/5xx is skipped and marked dead for RouteRetry
// seconds (unless every host of the list is dead); all down is 451 4.4.1 for that recipient.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { deadPort, withRouted } from './helpers/routing.js';
import type { RawClient } from './helpers/client.js';

const T = { timeout: 30_000 };

async function deliver(c: RawClient, rcpt: string): Promise<string> {
  assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
  const r = await c.command(`RCPT TO:<${rcpt}>`);
  if (!r.startsWith('250')) {
    assert.equal(await c.command('RSET'), '250 2.0.0 Ok\r\n');
    return r;
  }
  assert.match(await c.command('DATA'), /^354 /);
  c.send('Subject: f\r\n\r\nbody\r\n.\r\n');
  return c.reply();
}

test('failover in order: refused, 4xx greeting and silent hosts are skipped, then marked dead until RouteRetry passes', T, async () => {
  const refused = await deadPort();
  await withRouted(
    {
      upstreams: [{ greeting: '421 4.3.2 busy' }, { greeting: 'silent' }, {}],
      routes: (at) => `a.test 127.0.0.1:${refused},${at(0)},${at(1)},${at(2)}\n`,
      config: (_at, dir) => ({ RouteType: 'file', RouteDatabase: `${dir}/routes`, RouteRetry: '2', TimeOut: '1' }),
    },
    async ({ ups, d, session, at }) => {
      const c = await session();
      assert.match(await deliver(c, 'x@a.test'), /^250 /);
      assert.deepEqual(ups.map((u) => u.sessions.length), [1, 1, 1]);
      assert.equal(ups[2]?.messages.length, 1);
      await d.waitForLog(new RegExp(`destination 127\\.0\\.0\\.1:${refused} failed .*marked dead for 2 s`));
      await d.waitForLog(new RegExp(`destination ${at(0)} failed \\(${at(0)}: greeted with 421 4\\.3\\.2 busy\\)`));
      // Within RouteRetry the dead hosts are not tried again: straight to the live one.
      const c2 = await session();
      assert.match(await deliver(c2, 'x@a.test'), /^250 /);
      assert.deepEqual(ups.map((u) => u.sessions.length), [1, 1, 2]);
      // After it they are, in order.
      await sleep(2200);
      const c3 = await session();
      assert.match(await deliver(c3, 'x@a.test'), /^250 /);
      assert.deepEqual(ups.map((u) => u.sessions.length), [2, 2, 3]);
    },
  );
});

const counter = { n: 0 };

test('all hosts down: 451 4.4.1 for that recipient, the session goes on; all dead means all are tried again', T, async () => {
  const p1 = await deadPort();
  const p2 = await deadPort();
  await withRouted(
    {
      upstreams: [{ greeting: () => (counter.n++ < 1 ? '554 5.3.2 no' : '220 back') }, {}],
      routes: (at) => `down.test 127.0.0.1:${p1},127.0.0.1:${p2}\nflaky.test ${at(0)}\nup.test ${at(1)}\n`,
    },
    async ({ ups, session }) => {
      const c = await session();
      assert.equal(await c.command('MAIL FROM:<s@example.org>'), '250 2.1.0 Ok\r\n');
      assert.match(await c.command('RCPT TO:<x@down.test>'), /^451 4\.4\.1 /);
      assert.equal(await c.command('RCPT TO:<x@up.test>'), '250 2.1.5 Ok\r\n');
      assert.match(await c.command('DATA'), /^354 /);
      c.send('Subject: f\r\n\r\nbody\r\n.\r\n');
      assert.match(await c.reply(), /^250 /);
      assert.equal(ups[1]?.messages.length, 1);
      // flaky.test's only host fails once and is marked dead; being the whole list, it is tried again.
      assert.match(await deliver(c, 'x@flaky.test'), /^451 4\.4\.1 /);
      assert.match(await deliver(c, 'x@flaky.test'), /^250 /);
      assert.equal(ups[0]?.sessions.length, 2);
    },
  );
});
