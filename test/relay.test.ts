import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream } from './helpers/upstream.js';

test('a message is relayed in lockstep and arrives byte-identical', async () => {
  const up = await RecordingUpstream.start();
  const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}` });
  try {
    const c = await RawClient.connect(d.port);
    assert.equal(await c.reply(), '220 smtp.passthru\r\n');
    const ehlo = await c.command('EHLO client.test');
    assert.match(ehlo, /^250-smtp\.passthru\r\n/);
    assert.doesNotMatch(ehlo, /STARTTLS|CHUNKING/);
    assert.match(ehlo, /250-PIPELINING\r\n/);
    assert.equal(await c.command('MAIL FROM:<a@example.org>'), '250 2.0.0 Ok\r\n');
    assert.equal(await c.command('RCPT TO:<b@example.net>'), '250 2.1.5 Ok\r\n');
    assert.match(await c.command('DATA'), /^354 /);
    const body = 'Subject: t\r\n\r\nline\r\n..dot\r\n';
    c.send(`${body}.\r\n`);
    assert.equal(await c.reply(), '250 2.0.0 Ok: queued as Q1\r\n');
    assert.equal(up.messages[0]?.toString('latin1'), body);
    assert.equal(await c.command('QUIT'), '221 2.0.0 Bye\r\n');
  } finally {
    await d.stop();
    await up.close();
  }
});
