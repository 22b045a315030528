// LogFormat and LogDateFormat (issue 6, "Configuration"): every token rendered from one
// known event, Moxy's default format, unknown tokens refused by name, the strftime
// conversions, and the parser logalyze builds from a format reading lines back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { messageEvent, newMessageId, plainIp, recipientDomains, type MessageEvent } from '../src/accounting/event.js';
import {
  compileLogFormat,
  DEFAULT_DATE_FORMAT,
  DEFAULT_LOG_FORMAT,
  logLineParser,
  parseLogFormat,
  strftime,
  validateDateFormat,
  validateLogFormat,
} from '../src/accounting/format.js';

// %date is the daemon's local time: fix the zone (Node rereads TZ when it is assigned).
process.env.TZ = 'America/Los_Angeles';

// 4 Dec 2001 23:43:08 -0800 in local time: Moxy's example line.
const DATE = new Date('2001-12-05T07:43:08.000Z');

function event(over: Partial<MessageEvent> = {}): MessageEvent {
  return {
    ...messageEvent({
      id: 'msg.1',
      date: DATE,
      sender: 'alice@example.org',
      clientIp: '::ffff:192.0.2.7',
      helo: 'client.example',
      recipients: ['bob@Example.NET', 'carol@example.net', 'dave@other.example'],
      destination: '10.1.2.3:25',
      status: 'delivered',
      reply: '250 2.0.0 Ok: queued as 4ABC',
      size: 26138,
      durationMs: 41.6,
    }),
    ...over,
  };
}

test("Moxy's default format renders Moxy's example line", () => {
  assert.equal(DEFAULT_LOG_FORMAT, "%date: %msize bytes from <%sender> [%shost] to [%dhost] for '%rcpts'");
  assert.equal(DEFAULT_DATE_FORMAT, '%d/%m/%y %T %z');
  const line = compileLogFormat(DEFAULT_LOG_FORMAT)(event());
  assert.equal(line, "04/12/01 23:43:08 -0800: 26138 bytes from <alice@example.org> [192.0.2.7] to [10.1.2.3:25] for 'bob@Example.NET,carol@example.net,dave@other.example'");
});

test('every token', () => {
  const r = compileLogFormat('%date|%msize|%sender|%shost|%dhost|%rcpts|%status|%reply|%id|%helo|%nrcpts|%duration|%%', '%F %T');
  assert.equal(
    r(event()),
    '2001-12-04 23:43:08|26138|alice@example.org|192.0.2.7|10.1.2.3:25|bob@Example.NET,carol@example.net,dave@other.example|delivered|250 2.0.0 Ok: queued as 4ABC|msg.1|client.example|3|42|%',
  );
});

test('the null sender renders empty, so <%sender> is <>; IPv6 stays as it is', () => {
  const r = compileLogFormat('<%sender> [%shost]');
  assert.equal(r(event({ sender: '' })), '<> [192.0.2.7]');
  assert.equal(r(event({ sender: '', clientIp: '2001:db8::1' })), '<> [2001:db8::1]');
  assert.equal(plainIp('::ffff:10.0.0.1'), '10.0.0.1');
  assert.equal(plainIp('::1'), '::1');
});

test('%reply is the final line with its code; untrusted control characters cannot break the line', () => {
  const r = compileLogFormat('%status %reply %helo');
  assert.equal(r(event({ status: 'rejected', reply: '550-first\r\n550 5.7.1 last line\r\n' })), 'rejected 550 5.7.1 last line client.example');
  assert.equal(r(event({ helo: 'evil\r\nforged line' })), 'delivered 250 2.0.0 Ok: queued as 4ABC evil??forged line');
});

test('an unknown token is an error that names it; %% and a lone %', () => {
  assert.equal(validateLogFormat(DEFAULT_LOG_FORMAT), undefined);
  assert.match(validateLogFormat('%date %bogus') ?? '', /^unknown token %bogus;/);
  // The longest token name that starts there, as Moxy's textual replacement.
  assert.equal(compileLogFormat('%msizeB %sendership')(event()), '26138B alice@example.orgship');
  assert.match(validateLogFormat('%Date') ?? '', /unknown token %Date/);
  assert.match(validateLogFormat('100% sure') ?? '', /lone '%'/);
  assert.throws(() => compileLogFormat('%rcpt'), /unknown token %rcpt/);
  assert.deepEqual(parseLogFormat('a%%b'), [{ literal: 'a%b' }]);
  assert.throws(() => compileLogFormat('%date', '%Q'), /unknown conversion %Q/);
});

test('strftime conversions (local time and UTC)', () => {
  const d = new Date('2026-03-07T04:05:09Z'); // Friday 6 March 2026, 20:05:09 PST
  const cases: [string, string][] = [
    ['%a %A', 'Fri Friday'],
    ['%b %B', 'Mar March'],
    ['%d|%e', '06| 6'],
    ['%H %I %p', '20 08 PM'],
    ['%j', '065'],
    ['%m %M %S', '03 05 09'],
    ['%T', '20:05:09'],
    ['%y %Y', '26 2026'],
    ['%z %Z', '-0800 PST'],
    ['%F', '2026-03-06'],
    ['%D', '03/06/26'],
    ['%R', '20:05'],
    ['%s', String(d.getTime() / 1000)],
    ['100%%', '100%'],
    ['%n%t', '\n\t'],
  ];
  for (const [f, want] of cases) assert.equal(strftime(f, d), want, f);
  assert.equal(strftime('%F %T %z %Z', d, { utc: true }), '2026-03-07 04:05:09 +0000 UTC');
  assert.equal(strftime('%I %p', new Date('2026-03-07T08:00:00Z')), '12 AM'); // midnight local
  assert.equal(strftime('%I %p', new Date('2026-03-07T20:30:00Z')), '12 PM'); // noon local
  assert.equal(strftime('%j', new Date('2024-12-31T12:00:00Z'), { utc: true }), '366'); // leap year
  // Summer time: the offset follows the date, not the process start.
  assert.equal(strftime('%z %Z', new Date('2026-07-01T12:00:00Z')), '-0700 PDT');
  assert.equal(validateDateFormat('%d/%m/%y %T %z'), undefined);
  assert.match(validateDateFormat('%d %') ?? '', /lone/);
});

test('recipient domains: distinct, case-insensitive, in acceptance order', () => {
  assert.deepEqual(recipientDomains(['a@B.example', 'c@b.example', 'd@a.example', 'postmaster', 'e@b.example.']), ['b.example', 'a.example']);
  assert.deepEqual(event().domains, ['example.net', 'other.example']);
  assert.notEqual(newMessageId(), newMessageId());
});

test('the parser built from a format reads rendered lines back', () => {
  const fmt = '%date %id status=%status size=%msize from=<%sender> ip=%shost to=%dhost rcpts=%rcpts n=%nrcpts helo=%helo reply="%reply" %durationms';
  const line = compileLogFormat(fmt)(event({ sender: '', reply: '550 5.7.1 no "thanks"', status: 'rejected' }));
  const f = logLineParser(fmt).parse(line);
  assert.deepEqual(f, {
    date: '04/12/01 23:43:08 -0800',
    id: 'msg.1',
    status: 'rejected',
    msize: '26138',
    sender: '',
    shost: '192.0.2.7',
    dhost: '10.1.2.3:25',
    rcpts: 'bob@Example.NET,carol@example.net,dave@other.example',
    nrcpts: '3',
    helo: 'client.example',
    reply: '550 5.7.1 no "thanks"',
    duration: '42',
  });
  const moxy = logLineParser(DEFAULT_LOG_FORMAT).parse(compileLogFormat(DEFAULT_LOG_FORMAT)(event()));
  assert.equal(moxy?.msize, '26138');
  assert.equal(moxy?.dhost, '10.1.2.3:25');
  assert.equal(logLineParser(DEFAULT_LOG_FORMAT).parse('garbage'), undefined);
});
