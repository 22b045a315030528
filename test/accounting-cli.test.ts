// `smtpsift stats` and `smtpsift logalyze` through the real CLI (issue 6, "Tools"), checked
// against known traffic: the table sorted by bytes with human units, the JSON shape, the
// chart, date filters, --by, --reset, -f CONF; logalyze on a generated log file (plain, .gz,
// stdin) with --listby, the regex filters and --status.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { CounterWriter } from '../src/accounting/counters.js';
import { messageEvent, type MessageStatus } from '../src/accounting/event.js';
import { compileLogFormat, DEFAULT_LOG_FORMAT } from '../src/accounting/format.js';
import { humanBytes } from '../src/accounting/report.js';
import { SMTPSIFT, tempDir } from './helpers/daemon.js';
import { runSift } from './helpers/process.js';

interface Json {
  by: string;
  rows: { key: string; bytes: number; messages: number }[];
  total: { bytes: number; messages: number };
}

function ev(day: string, recipients: string[], destination: string, size: number, status: MessageStatus = 'delivered', sender = 'a@s.example', ip = '::ffff:192.0.2.1') {
  return messageEvent({ date: new Date(`${day}T12:00:00Z`), sender, clientIp: ip, helo: 'h', recipients, destination, status, reply: '250 ok', size, durationMs: 2 });
}

/** Known traffic: big.example 3 MiB over two days, small.example 2 KiB, and mail that never counts. */
const TRAFFIC = [
  ev('2026-02-01', ['x@big.example', 'y@big.example'], 'mx1:25', 2 * 1024 * 1024),
  ev('2026-02-02', ['x@big.example', 'z@small.example'], 'mx2:25', 1024 * 1024),
  ev('2026-02-03', ['z@small.example'], 'mx2:25', 1024),
  ev('2026-02-03', ['z@small.example'], 'mx2:25', 1024, 'rejected'),
  ev('2026-02-03', ['z@small.example'], 'mx2:25', 5000, 'dropped'),
];

async function database(): Promise<{ dir: string; db: string; remove: () => void }> {
  const t = tempDir('smtpsift-stats-');
  const db = join(t.dir, 'counters.mdb');
  const w = new CounterWriter(db);
  for (const e of TRAFFIC) w.record(e);
  await w.close();
  return { dir: t.dir, db, remove: t.remove };
}

test('stats: the table sorted by bytes with human units, JSON, chart, --by, dates, --domain', async () => {
  const d = await database();
  try {
    const table = await runSift(['stats', '--db', d.db]);
    assert.equal(table.status, 0, table.stderr);
    assert.equal(
      table.stdout,
      ['domain         messages    bytes', 'big.example           2  3.0 MiB', 'small.example         2  1.0 MiB', 'total                 3  3.0 MiB', ''].join('\n'),
    );
    // The total is every delivered message once: the message of 2026-02-02 to big.example
    // and small.example is in both rows, not twice in the total (3 messages, as --by day says).

    const json = JSON.parse((await runSift(['stats', '--db', d.db, '--json'])).stdout) as Json;
    assert.deepEqual(json, {
      by: 'domain',
      rows: [
        { key: 'big.example', bytes: 3 * 1024 * 1024, messages: 2 },
        { key: 'small.example', bytes: 1024 * 1024 + 1024, messages: 2 },
      ],
      total: { bytes: 3 * 1024 * 1024 + 1024, messages: 3 },
    });

    const dest = JSON.parse((await runSift(['stats', '--db', d.db, '--json', '--by', 'dest'])).stdout) as Json;
    assert.deepEqual(dest.rows, [
      { key: 'mx1:25', bytes: 2 * 1024 * 1024, messages: 1 },
      { key: 'mx2:25', bytes: 1024 * 1024 + 1024, messages: 2 },
    ]);
    const days = JSON.parse((await runSift(['stats', '--db', d.db, '--json', '--by', 'day'])).stdout) as Json;
    assert.deepEqual(days.rows.map((r) => [r.key, r.bytes, r.messages]), [
      ['2026-02-01', 2 * 1024 * 1024, 1],
      ['2026-02-02', 1024 * 1024, 1],
      ['2026-02-03', 1024, 1],
    ]);
    assert.deepEqual(days.total, json.total);
    assert.deepEqual(dest.total, json.total);

    // Dates are inclusive, UTC.
    const feb2 = JSON.parse((await runSift(['stats', '--db', d.db, '--json', '--since', '2026-02-02', '--until', '2026-02-02'])).stdout) as Json;
    assert.deepEqual(feb2.rows, [
      { key: 'big.example', bytes: 1024 * 1024, messages: 1 },
      { key: 'small.example', bytes: 1024 * 1024, messages: 1 },
    ]);
    assert.deepEqual(feb2.total, { bytes: 1024 * 1024, messages: 1 });
    const bigOnly = JSON.parse((await runSift(['stats', '--db', d.db, '--json', '--domain', 'BIG.example'])).stdout) as Json;
    assert.deepEqual(bigOnly.total, { bytes: 3 * 1024 * 1024, messages: 2 });
    const since = JSON.parse((await runSift(['stats', '--db', d.db, '--json', '--by', 'dest', '--since', '2026-02-03'])).stdout) as Json;
    assert.deepEqual(since.rows, [{ key: 'mx2:25', bytes: 1024, messages: 1 }]);
    const small = JSON.parse((await runSift(['stats', '--db', d.db, '--json', '--by', 'day', '--domain', 'small.example'])).stdout) as Json;
    assert.deepEqual(small.rows.map((r) => r.key), ['2026-02-02', '2026-02-03']);

    const chart = await runSift(['stats', '--db', d.db, '--chart']);
    assert.equal(chart.status, 0);
    const bars = chart.stdout.trimEnd().split('\n');
    assert.equal(bars.length, 2);
    assert.match(bars[0] ?? '', /^big\.example   \|#{50} 3\.0 MiB \(2 msg\)$/);
    // 1 MiB + 1 KiB of 3 MiB: a third of the width.
    assert.match(bars[1] ?? '', /^small\.example \|#{17} 1\.0 MiB \(2 msg\)$/);

    // Usage errors exit 2.
    for (const bad of [['--since', '2026-02-30'], ['--by', 'month'], ['--by', 'dest', '--domain', 'big.example']]) {
      const r = await runSift(['stats', '--db', d.db, ...bad]);
      assert.equal(r.status, 2, `${bad.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^smtpsift: /);
    }
    assert.equal(humanBytes(1023), '1023 B');
  } finally {
    d.remove();
  }
});

test('stats -f CONF reads CounterDatabase (or Moxy logfile_name with gdbmlog); --reset DOMAIN', async () => {
  const d = await database();
  try {
    const conf = join(d.dir, 'smtpsiftd.conf');
    writeFileSync(conf, `# accounting\nOutAddress: 127.0.0.1:25\nCounterDatabase: ${d.db}\n`);
    const viaConf = JSON.parse((await runSift(['stats', '-f', conf, '--json'])).stdout) as Json;
    assert.equal(viaConf.total.messages, 3);
    const moxy = join(d.dir, 'moxy.conf');
    writeFileSync(moxy, `logtype gdbmlog\nlogfile_name ${d.db}\n`);
    const viaMoxy = await runSift(['stats', '-f', moxy, '--json']);
    assert.equal(viaMoxy.status, 0, viaMoxy.stderr);
    assert.equal((JSON.parse(viaMoxy.stdout) as Json).total.messages, 3);
    const none = join(d.dir, 'none.conf');
    writeFileSync(none, 'OutAddress: 127.0.0.1:25\n');
    const r = await runSift(['stats', '-f', none]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /no CounterDatabase/);

    const reset = await runSift(['stats', '--db', d.db, '--reset', 'big.example']);
    assert.equal(reset.status, 0, reset.stderr);
    assert.equal(reset.stdout, 'reset big.example: 3 counter(s) removed\n');
    const after = JSON.parse((await runSift(['stats', '--db', d.db, '--json'])).stdout) as Json;
    assert.deepEqual(after.rows.map((x) => x.key), ['small.example']);
    // The days keep their counts, and so does the total: the mail was delivered all the same.
    assert.deepEqual(after.total, { bytes: 3 * 1024 * 1024 + 1024, messages: 3 });
  } finally {
    d.remove();
  }
});

/** Runs smtpsift with `input` on its standard input. */
function siftWithInput(args: string[], input: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [SMTPSIFT, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    proc.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    proc.on('error', reject);
    proc.on('close', (status) => resolve({ status, stdout, stderr }));
    proc.stdin.end(input);
  });
}

test('logalyze: totals per destination, sender and IP from a log written with the LogFormat', async () => {
  const t = tempDir('smtpsift-logalyze-');
  try {
    const format = '%date %id %status %msize <%sender> [%shost] [%dhost] %nrcpts %rcpts';
    const render = compileLogFormat(format);
    const events = [
      ev('2026-02-01', ['a@x.example'], 'mx1:25', 1000, 'delivered', 'alice@s.example', '::ffff:192.0.2.1'),
      ev('2026-02-01', ['a@x.example', 'b@y.example'], 'mx1:25', 3000, 'delivered', '', '192.0.2.2'),
      ev('2026-02-01', ['a@x.example'], 'mx2:25', 500, 'rejected', 'alice@s.example', '192.0.2.1'),
      ev('2026-02-01', ['a@x.example'], 'mx2:25', 200, 'delivered', 'bob@t.example', '2001:db8::5'),
    ];
    const text = `${events.map(render).join('\n')}\nnot a log line\n`;
    const file = join(t.dir, 'mail.log');
    writeFileSync(file, text);
    writeFileSync(join(t.dir, 'old.log.gz'), gzipSync(text));

    // With %status in the format, only delivered lines count (the counters' totals): the
    // rejected 500 bytes to mx2:25 are not traffic.
    const dest = await runSift(['logalyze', '--format', format, '--json', file]);
    assert.equal(dest.status, 0, dest.stderr);
    assert.deepEqual(JSON.parse(dest.stdout), {
      by: 'dest',
      rows: [
        { key: 'mx1:25', bytes: 4000, messages: 2 },
        { key: 'mx2:25', bytes: 200, messages: 1 },
      ],
      total: { bytes: 4200, messages: 3 },
    });
    assert.equal(dest.stderr, 'smtpsift: 1 line(s) did not match the LogFormat and were skipped\n');
    const all = JSON.parse((await runSift(['logalyze', '--format', format, '--json', '--status', 'all', file])).stdout) as Json;
    assert.deepEqual(all.total, { bytes: 4700, messages: 4 });
    const rejected = JSON.parse((await runSift(['logalyze', '--format', format, '--json', '--status', 'rejected', file])).stdout) as Json;
    assert.deepEqual(rejected.rows, [{ key: 'mx2:25', bytes: 500, messages: 1 }]);

    const from = JSON.parse((await runSift(['logalyze', '--format', format, '--json', '--listby', 'from', '--status', 'delivered', file])).stdout) as Json;
    assert.deepEqual(from.rows, [
      { key: '<>', bytes: 3000, messages: 1 },
      { key: 'alice@s.example', bytes: 1000, messages: 1 },
      { key: 'bob@t.example', bytes: 200, messages: 1 },
    ]);
    const ip = JSON.parse((await runSift(['logalyze', '--format', format, '--json', '--listby', 'ip', '--ip', '^192\\.', file])).stdout) as Json;
    assert.deepEqual(ip.rows, [
      { key: '192.0.2.2', bytes: 3000, messages: 1 },
      { key: '192.0.2.1', bytes: 1000, messages: 1 },
    ]);
    const filtered = JSON.parse((await runSift(['logalyze', '--format', format, '--json', '--status', 'all', '--from', 'alice', '--dest', 'mx2', file])).stdout) as Json;
    assert.deepEqual(filtered.rows, [{ key: 'mx2:25', bytes: 500, messages: 1 }]);

    // .gz read directly, several files add up, - is standard input.
    const both = JSON.parse((await runSift(['logalyze', '--format', format, '--json', file, join(t.dir, 'old.log.gz')])).stdout) as Json;
    assert.deepEqual(both.total, { bytes: 8400, messages: 6 });
    const stdin = await siftWithInput(['logalyze', '--format', format, '-'], text);
    assert.equal(stdin.status, 0, stdin.stderr);
    assert.equal(stdin.stdout, ['dest    messages    bytes', 'mx1:25         2  3.9 KiB', 'mx2:25         1    200 B', 'total          3  4.1 KiB', ''].join('\n'));
    const chart = await runSift(['logalyze', '--format', format, '--chart', file]);
    assert.match(chart.stdout, /^mx1:25 \|#{50} 3\.9 KiB \(2 msg\)\nmx2:25 \|#{3} 200 B \(1 msg\)\n$/);

    // -f CONF: the LogFormat from the config file; Moxy's default when there is none.
    const conf = join(t.dir, 'smtpsiftd.conf');
    writeFileSync(conf, `OutAddress: 127.0.0.1:25\nLogFormat: ${format}\n`);
    assert.equal((JSON.parse((await runSift(['logalyze', '-f', conf, '--json', file])).stdout) as Json).total.messages, 3);
    const moxyLog = join(t.dir, 'moxy.log');
    writeFileSync(moxyLog, `${events.map(compileLogFormat(DEFAULT_LOG_FORMAT)).join('\n')}\n`);
    // Without %status every line counts: smtpsiftd writes lines of delivered messages only
    // in such a format (this file, written by hand, has the rejected one too).
    const moxy = JSON.parse((await runSift(['logalyze', '--json', '--listby', 'from', moxyLog])).stdout) as Json;
    assert.deepEqual(moxy.total, { bytes: 4700, messages: 4 });
    const moxyDelivered = await runSift(['logalyze', '--json', '--status', 'delivered', moxyLog]);
    assert.equal(moxyDelivered.status, 0, moxyDelivered.stderr);
    assert.deepEqual((JSON.parse(moxyDelivered.stdout) as Json).total, { bytes: 4700, messages: 4 });

    // Errors: a bad token, a filter on a field the format lacks, no files.
    const bad = await runSift(['logalyze', '--format', '%msize %bogus', file]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown token %bogus/);
    const noStatus = await runSift(['logalyze', '--status', 'rejected', moxyLog]);
    assert.equal(noStatus.status, 2);
    assert.match(noStatus.stderr, /--status rejected needs %status/);
    assert.equal((await runSift(['logalyze', '--format', format, '--status', 'bounced', file])).status, 2);
    assert.equal((await runSift(['logalyze'])).status, 2);
  } finally {
    t.remove();
  }
});
