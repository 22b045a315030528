// The counters store (issue 6, "Semantics"): exact totals with two processes writing 1000
// messages each to one database, the once-per-distinct-domain/destination/day rules, only
// delivered messages counted, reset of a domain, and a reader while writers commit.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CounterReader, CounterWriter } from '../src/accounting/counters.js';
import { messageEvent, type MessageStatus } from '../src/accounting/event.js';
import { tempDir } from './helpers/daemon.js';
import { run } from './helpers/process.js';

const MODULES = fileURLToPath(new URL('../src/accounting/', import.meta.url));

/**
 * Message i of writer p. Both the child script and the expected totals use this, the child
 * through its source text (so the two cannot drift apart).
 */
function traffic(p: number, i: number) {
  const recipients = [`u${i}@a.example`, `v${i}@A.Example`]; // one domain, two recipients
  if (i % 2 === 0) recipients.push(`w${i}@b.example`);
  const statuses = ['delivered', 'delivered', 'delivered', 'rejected', 'delivered', 'dropped', 'delivered', 'tempfail', 'delivered', 'aborted'];
  return {
    date: new Date(i % 4 < 2 ? '2026-01-01T23:59:59.900Z' : '2026-01-02T00:00:00.000Z'),
    sender: i % 5 === 0 ? '' : `s${p}@sender.example`,
    clientIp: '::ffff:192.0.2.1',
    helo: 'h',
    recipients,
    destination: `10.0.0.${p}:25`,
    status: statuses[i % 10] as MessageStatus,
    reply: '250 ok',
    size: 100 + i,
    durationMs: 1,
  };
}

const CHILD = `
import { CounterWriter } from ${JSON.stringify(join(MODULES, 'counters.js'))};
import { messageEvent } from ${JSON.stringify(join(MODULES, 'event.js'))};
const traffic = ${traffic.toString()};
const [path, p, n, every] = process.argv.slice(1);
const w = new CounterWriter(path);
for (let i = 0; i < Number(n); i++) {
  w.record(messageEvent(traffic(Number(p), i)));
  // Many small transactions, so the two writers' commits really interleave.
  if ((i + 1) % Number(every) === 0) { w.flush(); await new Promise((r) => setImmediate(r)); }
}
await w.close();
`;

function writer(path: string, p: number, n: number, every: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['--input-type=module', '-e', CHILD, path, String(p), String(n), String(every)], { stdio: ['ignore', 'inherit', 'inherit'] });
    proc.on('error', reject);
    proc.on('close', (status) => resolve(status));
  });
}

type Totals = Map<string, { bytes: number; messages: number }>;

function expected(processes: number[], n: number): { domain: Totals; dest: Totals; day: Totals } {
  const out = { domain: new Map(), dest: new Map(), day: new Map() } as { domain: Totals; dest: Totals; day: Totals };
  const add = (m: Totals, k: string, bytes: number): void => {
    const c = m.get(k) ?? { bytes: 0, messages: 0 };
    c.bytes += bytes;
    c.messages += 1;
    m.set(k, c);
  };
  for (const p of processes) {
    for (let i = 0; i < n; i++) {
      const e = messageEvent(traffic(p, i));
      if (e.status !== 'delivered') continue;
      for (const d of e.domains) add(out.domain, d, e.size);
      add(out.dest, e.destination, e.size);
      add(out.day, e.date.toISOString().slice(0, 10), e.size);
    }
  }
  return out;
}

function asMap(rows: { key: string; bytes: number; messages: number }[]): Totals {
  return new Map(rows.map((r) => [r.key, { bytes: r.bytes, messages: r.messages }]));
}

test('two processes, 1000 messages each, one database: exact totals; a reader meanwhile sees committed state', async () => {
  const t = tempDir('smtpsift-counters-');
  const path = join(t.dir, 'counters.mdb');
  try {
    const writers = [writer(path, 1, 1000, 10), writer(path, 2, 1000, 7)];
    // `smtpsift stats` while both write: it works and never shows more than the final totals.
    let reads = 0;
    let done = false;
    void Promise.all(writers).then(() => (done = true));
    while (!done) {
      const r = await run(process.execPath, [fileURLToPath(new URL('../src/cli/smtpsift.js', import.meta.url)), 'stats', '--db', path, '--by', 'day', '--json']);
      if (r.status === 0) {
        const j = JSON.parse(r.stdout) as { total: { messages: number } };
        assert.ok(j.total.messages <= 1200, r.stdout);
        reads++;
      } else {
        assert.match(r.stderr, /No such file/, r.stderr); // before the first writer created it
      }
    }
    assert.deepEqual(await Promise.all(writers), [0, 0]);
    const want = expected([1, 2], 1000);
    const db = new CounterReader(path);
    try {
      assert.deepEqual(asMap(db.query({ by: 'domain' })), want.domain);
      assert.deepEqual(asMap(db.query({ by: 'dest' })), want.dest);
      assert.deepEqual(asMap(db.query({ by: 'day' })), want.day);
      // 6 of every 10 are delivered: 600 per process; each counts once for a.example
      // (two recipients there) and once more for b.example when it has one.
      assert.equal(want.domain.get('a.example')?.messages, 1200);
      assert.equal(want.domain.get('b.example')?.messages, 1000); // i even: 5 of the 6 delivered in 10
      assert.equal(want.dest.get('10.0.0.1:25')?.messages, 600);
      assert.equal([...want.day.values()].reduce((s, c) => s + c.messages, 0), 1200);
      // The per-day keys add up to the totals.
      const daily = db.query({ by: 'domain', since: '2026-01-01', until: '2026-01-02' });
      assert.deepEqual(asMap(daily), want.domain);
      const first = asMap(db.query({ by: 'domain', since: '2026-01-01', until: '2026-01-01' }));
      // Every message has an a.example recipient: its count per day is the day's count.
      assert.deepEqual(first.get('a.example'), want.day.get('2026-01-01'));
    } finally {
      await db.close();
    }
    assert.ok(reads >= 1);
  } finally {
    t.remove();
  }
});

test('counting rules: once per distinct domain, destination and UTC day; only delivered; reset of a domain', async () => {
  const t = tempDir('smtpsift-counters-');
  const path = join(t.dir, 'c.mdb');
  try {
    const w = new CounterWriter(path, { commitMs: 20 });
    const base = {
      sender: 'a@x.example',
      clientIp: '192.0.2.9',
      helo: 'h',
      reply: '250 ok',
      durationMs: 3,
    };
    w.record(messageEvent({ ...base, date: new Date('2026-05-01T10:00:00Z'), recipients: ['a@one.example', 'b@ONE.example', 'c@two.example'], destination: 'mx1:25', status: 'delivered', size: 1000 }));
    w.record(messageEvent({ ...base, date: new Date('2026-05-02T00:00:00Z'), recipients: ['a@one.example'], destination: 'mx2:2525', status: 'delivered', size: 500 }));
    for (const status of ['rejected', 'dropped', 'tempfail', 'aborted'] as const) {
      w.record(messageEvent({ ...base, date: new Date('2026-05-01T10:00:00Z'), recipients: ['a@one.example'], destination: 'mx1:25', status, size: 99999 }));
    }
    // Committed within the commit interval, without close().
    const r = new CounterReader(path);
    await new Promise((res) => setTimeout(res, 200));
    try {
      assert.deepEqual(asMap(r.query({ by: 'domain' })), new Map([['one.example', { bytes: 1500, messages: 2 }], ['two.example', { bytes: 1000, messages: 1 }]]));
      assert.deepEqual(asMap(r.query({ by: 'dest' })), new Map([['mx1:25', { bytes: 1000, messages: 1 }], ['mx2:2525', { bytes: 500, messages: 1 }]]));
      assert.deepEqual(asMap(r.query({ by: 'day' })), new Map([['2026-05-01', { bytes: 1000, messages: 1 }], ['2026-05-02', { bytes: 500, messages: 1 }]]));
      assert.deepEqual(asMap(r.query({ by: 'day', domain: 'two.example' })), new Map([['2026-05-01', { bytes: 1000, messages: 1 }]]));
      assert.deepEqual(asMap(r.query({ by: 'dest', since: '2026-05-02' })), new Map([['mx2:2525', { bytes: 500, messages: 1 }]]));
      assert.deepEqual(asMap(r.query({ by: 'domain', domain: 'ONE.example', until: '2026-05-01' })), new Map([['one.example', { bytes: 1000, messages: 1 }]]));
    } finally {
      await r.close();
    }
    await w.close();
    const rw = new CounterReader(path, false);
    try {
      assert.equal(rw.reset('One.Example'), 3); // the total and two days
      assert.deepEqual(asMap(rw.query({ by: 'domain' })), new Map([['two.example', { bytes: 1000, messages: 1 }]]));
      assert.deepEqual(rw.query({ by: 'day', domain: 'one.example' }), []);
      // Days and destinations are not per domain: they keep their counts.
      assert.equal(rw.query({ by: 'day' }).length, 2);
      assert.equal(rw.reset('nobody.example'), 0);
    } finally {
      await rw.close();
    }
  } finally {
    t.remove();
  }
});

test('kill -9 loses only the uncommitted batch: committed counts stay exact', async () => {
  const t = tempDir('smtpsift-counters-');
  const path = join(t.dir, 'c.mdb');
  const script = `
import { CounterWriter } from ${JSON.stringify(join(MODULES, 'counters.js'))};
import { messageEvent } from ${JSON.stringify(join(MODULES, 'event.js'))};
const w = new CounterWriter(process.argv[1], { commitMs: 60000 });
const e = () => messageEvent({ date: new Date(), sender: '', clientIp: '192.0.2.1', helo: 'h', recipients: ['a@k.example'], destination: 'mx:25', status: 'delivered', reply: '250', size: 10, durationMs: 1 });
for (let i = 0; i < 100; i++) w.record(e());
w.flush();
for (let i = 0; i < 50; i++) w.record(e());
process.stdout.write('ready\\n');
setInterval(() => undefined, 1000);
`;
  try {
    const proc = spawn(process.execPath, ['--input-type=module', '-e', script, path], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      proc.stdout.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
      proc.on('error', reject);
    });
    const closed = new Promise((r) => proc.on('close', r));
    process.kill(proc.pid ?? 0, 'SIGKILL');
    await closed;
    const r = new CounterReader(path);
    assert.deepEqual(r.query({ by: 'domain' }), [{ key: 'k.example', bytes: 1000, messages: 100 }]);
    await r.close();
  } finally {
    t.remove();
  }
});
