// Every LogType (issue 6, "Configuration") with real sinks: a log file, syslog lines on a
// unix datagram socket (SyslogSocket) and the counters database; Moxy's aliases; the
// start-up checks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { syslogCollector } from './helpers/syslog.js';
import { join } from 'node:path';
import { Accounting, accountingProblems, parseLogType, type LogType } from '../src/accounting/accounting.js';
import { CounterReader } from '../src/accounting/counters.js';
import { messageEvent, type MessageStatus } from '../src/accounting/event.js';
import { tempDir } from './helpers/daemon.js';
import { waitFor } from './helpers/process.js';


function ev(status: MessageStatus, size: number) {
  return messageEvent({ id: `id-${status}`, date: new Date(), sender: '', clientIp: '::ffff:192.0.2.3', helo: 'h', recipients: ['a@d.example', 'b@d.example'], destination: 'mx:25', status, reply: '250 ok', size, durationMs: 1 });
}

const FORMAT = '%id %status %msize <%sender> [%shost] %nrcpts';

test('every LogType writes to exactly its sinks', async () => {
  const types: LogType[] = ['nolog', 'filelog', 'syslog', 'counters', 'syslog+counters', 'filelog+counters'];
  for (const logType of types) {
    const t = tempDir('smtpsift-logtype-');
    const sock = join(t.dir, 'log.sock');
    const collector = syslogCollector(sock);
    try {
      const logFile = join(t.dir, 'mail.log');
      const counterDatabase = join(t.dir, 'counters.mdb');
      const a = new Accounting({ logType, logFile, counterDatabase, syslogSocket: sock, logFormat: FORMAT });
      a.record(ev('delivered', 1000));
      a.record(ev('rejected', 77));
      await a.close();
      const lines = ['id-delivered delivered 1000 <> [192.0.2.3] 2', 'id-rejected rejected 77 <> [192.0.2.3] 2'];
      if (logType.startsWith('filelog')) assert.equal(readFileSync(logFile, 'utf8'), `${lines.join('\n')}\n`, logType);
      else assert.equal(existsSync(logFile), false, logType);
      if (logType.startsWith('syslog')) {
        await waitFor(() => collector.lines.length === 2, 'two syslog lines');
        // Facility mail (2), severity info (6): <22>, then an RFC 3164 stamp and the ident.
        collector.lines.forEach((l, i) => assert.match(l, new RegExp(`^<22>\\w{3} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d smtpsiftd\\[${process.pid}\\]: ${lines[i]?.replace(/[[\]]/g, '\\$&')}$`)));
      } else {
        await new Promise((r) => setTimeout(r, 50));
        assert.deepEqual(collector.lines, [], logType);
      }
      if (logType.endsWith('counters')) {
        const r = new CounterReader(counterDatabase);
        assert.deepEqual(r.query({ by: 'domain' }), [{ key: 'd.example', bytes: 1000, messages: 1 }]);
        await r.close();
      } else {
        assert.equal(existsSync(counterDatabase), false, logType);
      }
    } finally {
      collector.close();
      t.remove();
    }
  }
});

test("Moxy's LogType names; gdbmlog with only LogFile uses it as the counters database; start-up problems", async () => {
  assert.equal(parseLogType('gdbmlog'), 'counters');
  assert.equal(parseLogType('sys_and_gdbmlog'), 'syslog+counters');
  assert.equal(parseLogType('FileLog'), 'filelog');
  assert.throws(() => parseLogType('mysql'), /'mysql' is not one of nolog, filelog/);
  assert.deepEqual(accountingProblems({ logType: 'filelog' }), ['LogType filelog needs LogFile']);
  assert.deepEqual(accountingProblems({ logType: 'filelog+counters', logFile: '/x' }), ['LogType filelog+counters needs CounterDatabase']);
  assert.deepEqual(accountingProblems({ logType: 'counters' }), ['LogType counters needs CounterDatabase']);
  assert.throws(() => new Accounting({ logType: 'nolog', logFormat: '%nope' }), /unknown token %nope/);
  const t = tempDir('smtpsift-logtype-');
  try {
    const db = join(t.dir, 'moxy.gdbm');
    const a = new Accounting({ logType: parseLogType('gdbmlog'), logFile: db });
    a.record(ev('delivered', 10));
    await a.close();
    const r = new CounterReader(db);
    assert.deepEqual(r.query({ by: 'dest' }), [{ key: 'mx:25', bytes: 10, messages: 1 }]);
    await r.close();
  } finally {
    t.remove();
  }
});
