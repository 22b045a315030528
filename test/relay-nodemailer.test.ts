// Issue 2, the relay with real peers: nodemailer in front, smtp-server behind. A 20 MB
// message arrives byte-identical; 100 concurrent sessions each deliver exactly once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import nodemailer from 'nodemailer';
import { startDaemon, type Daemon } from './helpers/daemon.js';
import { startSmtpServer, type Received, type RealUpstream } from './helpers/smtp-server.js';

async function sha256(stream: Readable): Promise<{ hash: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of stream) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { hash: h.digest('hex'), size };
}

async function withRealRelay(
  onMessage: (stream: Readable, envelope: Received) => Promise<string>,
  config: Record<string, string>,
  fn: (d: Daemon, up: RealUpstream) => Promise<void>,
): Promise<void> {
  const up = await startSmtpServer(onMessage);
  let d: Daemon | undefined;
  try {
    d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, ...config });
    await fn(d, up);
  } finally {
    await d?.stop();
    await up.close();
  }
}

function transport(port: number): ReturnType<typeof nodemailer.createTransport> {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    connectionTimeout: 5000,
    greetingTimeout: 5000,
    socketTimeout: 20_000,
  });
}

/** A CRLF message of about `size` bytes with dots, 8-bit bytes and long lines in it. */
function bigMessage(size: number): Buffer {
  const head = Buffer.from('From: <a@example.org>\r\nTo: <b@example.net>\r\nSubject: big\r\nMessage-ID: <big@test>\r\n\r\n');
  const lines: Buffer[] = [head];
  let total = head.length;
  for (let i = 0; total < size; i++) {
    const kind = i % 5;
    const line =
      kind === 0
        ? Buffer.from(`.${i} a line that starts with a dot\r\n`)
        : kind === 1
          ? Buffer.from(`.\r\n`)
          : kind === 2
            ? Buffer.concat([Buffer.from(`${i} 8bit `), Buffer.from([0xe9, 0xff, 0x80, 0x00, 0x7f]), Buffer.from('\r\n')])
            : Buffer.from(`${i} ${'x'.repeat((i * 37) % 990)}\r\n`);
    lines.push(line);
    total += line.length;
  }
  return Buffer.concat(lines);
}

test('nodemailer: a 20 MB message arrives byte-identical', { timeout: 60_000 }, async () => {
  const got: { hash: string; size: number; envelope: Received }[] = [];
  await withRealRelay(
    async (stream, envelope) => {
      got.push({ ...(await sha256(stream)), envelope });
      return 'BIG';
    },
    {},
    async (d) => {
      const raw = bigMessage(20 * 1024 * 1024);
      const t = transport(d.port);
      try {
        const info = await t.sendMail({ envelope: { from: 'a@example.org', to: ['b@example.net'] }, raw });
        assert.match(String(info.response), /^250 .*queued as BIG/);
        assert.deepEqual(info.accepted, ['b@example.net']);
      } finally {
        t.close();
      }
      assert.equal(got.length, 1);
      const want = createHash('sha256').update(raw).digest('hex');
      assert.equal(got[0]?.size, raw.length);
      assert.equal(got[0]?.hash, want);
      assert.deepEqual(got[0]?.envelope, { from: 'a@example.org', to: ['b@example.net'] });
      await d.waitForLog(new RegExp(`rcpts=1 size=${raw.length} .*status=DELIVERED`));
    },
  );
});

test('nodemailer: 100 concurrent sessions, each its own connection, each delivered exactly once', { timeout: 60_000 }, async () => {
  const N = 100;
  const seen = new Map<string, number>();
  const envelopes = new Map<string, Received>();
  await withRealRelay(
    async (stream, envelope) => {
      const text = Buffer.concat(await stream.toArray()).toString('latin1');
      const id = /^Message-ID: (<[^>]+>)/im.exec(text)?.[1] ?? 'none';
      seen.set(id, (seen.get(id) ?? 0) + 1);
      envelopes.set(id, envelope);
      return id.slice(1, -1);
    },
    { MaxConnections: String(2 * N) },
    async (d) => {
      const t = transport(d.port);
      try {
        const results = await Promise.allSettled(
          Array.from({ length: N }, (_, i) =>
            t.sendMail({
              from: `sender${i}@example.org`,
              to: `rcpt${i}@example.net`,
              subject: `message ${i}`,
              messageId: `<m${i}.concurrent@test>`,
              text: `body of ${i}\n.\nafter a lone dot\n`,
            }),
          ),
        );
        const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [`${i}: ${String(r.reason)}`] : []));
        assert.deepEqual(failed, []);
        for (const [i, r] of results.entries()) {
          assert.equal(r.status, 'fulfilled');
          if (r.status === 'fulfilled') assert.match(String(r.value.response), new RegExp(`^250 .*queued as m${i}\\.concurrent@test`));
        }
      } finally {
        t.close();
      }
      assert.equal(seen.size, N);
      for (let i = 0; i < N; i++) {
        const id = `<m${i}.concurrent@test>`;
        assert.equal(seen.get(id), 1, `${id} arrived ${seen.get(id) ?? 0} times`);
        assert.deepEqual(envelopes.get(id), { from: `sender${i}@example.org`, to: [`rcpt${i}@example.net`] });
      }
      // Each its own connection, each logged once (the log may trail the replies a little).
      const count = (re: RegExp): number => d.log().match(re)?.length ?? 0;
      for (let i = 0; i < 50 && count(/status=DELIVERED/g) < N; i++) await sleep(100);
      assert.equal(count(/status=DELIVERED/g), N);
      assert.equal(count(/accepted connection from/g), N);
    },
  );
});
