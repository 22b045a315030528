// Seeded upstream faults under 16 concurrent clients, both ways DATA can go (received whole
// first, and CutThrough on). Each upstream connection gets a fate from a seeded generator:
// served, or dropped at RCPT, dropped in the middle of the data, silent after the end of
// data, or dropped after taking the message without replying. Whatever happens, a client
// gets 250 exactly for the messages the upstream stored and accepted, once each; every other
// message gets a 4xx, never a 5xx; nothing hangs, the spool ends empty, the daemon goes on.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon } from './helpers/daemon.js';
import { RawClient } from './helpers/client.js';
import { RecordingUpstream, type UpstreamSession } from './helpers/upstream.js';
import { alive, spoolFiles } from './helpers/process.js';

const CLIENTS = 16;
const MESSAGES_EACH = 3;
const SEED = 0x5eed7;

type Fate = 'served' | 'close-at-rcpt' | 'close-in-data' | 'silent-after-data' | 'close-after-data';
const FATES: readonly Fate[] = ['served', 'served', 'served', 'close-at-rcpt', 'close-in-data', 'silent-after-data', 'close-after-data'];

/** mulberry32: small, seeded, so that a failure can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One message on a connection of its own; the reply that ended it, or how it ended. */
async function sendOne(port: number, subject: string, size: number): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    const steps = ['', 'EHLO client.test', 'MAIL FROM:<a@example.org>', `RCPT TO:<${subject}@example.net>`, 'DATA'];
    for (const step of steps) {
      const r = step === '' ? await c.reply() : await c.command(step);
      if (!/^(220|250|354)[ -]/.test(r)) return r;
    }
    const line = `${'m'.repeat(78)}\r\n`;
    c.send(`Subject: ${subject}\r\n\r\n${line.repeat(Math.ceil(size / line.length))}.\r\n`);
    return await c.reply(10_000);
  } catch (e) {
    return `no reply: ${(e as Error).message.slice(0, 80)}`;
  } finally {
    c.close();
  }
}

for (const cut of [false, true]) {
  test(`seeded upstream faults, ${CLIENTS} concurrent clients${cut ? ', CutThrough on' : ''}: 250 exactly for what the upstream stored and accepted, once; otherwise a 4xx`, { timeout: 60_000 }, async () => {
    // The plan, drawn up front in a fixed order, so that it does not depend on timing: each
    // message's size, and the fate of the upstream connection that carries it.
    // Every fate comes up: the list of them, repeated, in a seeded shuffle.
    const random = prng(SEED + (cut ? 1 : 0));
    const dealt = Array.from({ length: CLIENTS * MESSAGES_EACH }, (_, k) => FATES[k % FATES.length] ?? 'served');
    for (let k = dealt.length - 1; k > 0; k--) {
      const r = Math.floor(random() * (k + 1));
      [dealt[k], dealt[r]] = [dealt[r] ?? 'served', dealt[k] ?? 'served'];
    }
    const plan = new Map<string, { fate: Fate; size: number }>();
    for (let i = 0; i < CLIENTS; i++) {
      for (let j = 0; j < MESSAGES_EACH; j++) {
        // 1 KB to 300 KB: in memory, and well past the 64 KiB that goes to a spool file.
        plan.set(`c${i}m${j}`, { fate: dealt[i * MESSAGES_EACH + j] ?? 'served', size: 1024 + Math.floor(random() * 300 * 1024) });
      }
    }
    /** The upstream connection's fate, known from its recipient (each message has its own connection). */
    const fates = new Map<UpstreamSession, Fate>();
    const fateOf = (s: UpstreamSession): Fate => fates.get(s) ?? 'served';
    /** Subjects of the messages the upstream stored and answered 250. */
    const accepted: string[] = [];
    const up = await RecordingUpstream.start({
      respond: (line, s) => {
        const rcpt = /^RCPT TO:<([^@>]+)@/i.exec(line)?.[1];
        if (rcpt !== undefined) fates.set(s, plan.get(rcpt)?.fate ?? 'served');
        const fate = fateOf(s);
        if (fate === 'close-at-rcpt' && /^RCPT/i.test(line)) return 'close';
        // Before the recorder's own listener sees the data: it never gets to the end of it.
        if (fate === 'close-in-data' && /^DATA/i.test(line)) s.socket.prependOnceListener('data', () => s.socket.destroy());
        return null;
      },
      afterData: (message, s) => {
        const fate = fateOf(s);
        if (fate === 'silent-after-data') return 'silent';
        // (Dropped in the middle of the data, but the end came in the same read.)
        if (fate === 'close-after-data' || s.socket.destroyed) return 'close';
        accepted.push(/^Subject: (\S+)/.exec(message.toString('latin1'))?.[1] ?? '?');
        return `250 2.0.0 Ok: queued as ${accepted.length}`;
      },
    });
    const d = await startDaemon({ OutAddress: `127.0.0.1:${up.port}`, TimeOut: '1', MaxConnections: '64', ...(cut ? { CutThrough: 'on' } : {}) });
    try {
      const replies = new Map<string, string>();
      await Promise.all(
        Array.from({ length: CLIENTS }, async (_, i) => {
          for (let j = 0; j < MESSAGES_EACH; j++) {
            const subject = `c${i}m${j}`;
            replies.set(subject, await sendOne(d.port, subject, plan.get(subject)?.size ?? 0));
          }
        }),
      );
      const got250 = [...replies].filter(([, r]) => r.startsWith('250 ')).map(([s]) => s).sort();
      assert.deepEqual(got250, [...accepted].sort(), 'a 250 for each message the upstream accepted, and for no other');
      assert.equal(new Set(accepted).size, accepted.length, 'no message stored twice');
      for (const [subject, r] of replies) {
        assert.match(r, /^(250|4\d\d) /, `${subject}: ${r}`);
      }
      // Every kind of fault was in play.
      const seen = new Set(fates.values());
      for (const f of FATES) assert.ok(seen.has(f), `no upstream connection was given ${f}`);
      // And each message's outcome is its connection's fate's.
      for (const [subject, r] of replies) {
        const fate = plan.get(subject)?.fate;
        assert.equal(r.startsWith('250 '), fate === 'served', `${subject} (${fate}): ${r}`);
      }
      assert.ok(got250.length > 0 && got250.length < CLIENTS * MESSAGES_EACH, `${got250.length} accepted`);
      assert.ok(alive(d.proc.pid ?? 0));
      assert.deepEqual(spoolFiles(d.spoolDir), []);
    } finally {
      await d.stop();
      await up.close();
    }
  });
}
