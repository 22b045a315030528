// CutThrough's relay thread (native/pump.c) on real sockets, in this process: going on from
// where the event loop's path (DotDecoder, then DotEncoder) left a message, what it writes
// upstream must be byte for byte what that path writes for the same client bytes, however
// TCP cuts them, with the same counts and the same bytes left over after the end of data.
// And a client that stops, falls silent or is cancelled never gets its message ended
// upstream.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { native, type RelayResult } from '../src/native.js';
import { SocketReader, descriptorOf } from '../src/net/reader.js';
import { DotDecoder, DotEncoder } from '../src/smtp/dot.js';

/** A small seeded PRNG, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

const ALPHABET = Buffer.from('..\r\n\r\n\na xyz');

/** Two connected TCP sockets: `near` is accepted here (the daemon's side), `far` is the peer. */
async function pair(): Promise<{ near: Socket; far: Socket; server: Server }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const far = connect(address.port, '127.0.0.1');
  await once(far, 'connect');
  const [near] = await accepted;
  return { near, far, server };
}

interface Rig {
  /** The client's end: what the test sends as the client. */
  readonly client: Socket;
  /** The daemon's side of the client connection, read through a SocketReader. */
  readonly reader: SocketReader;
  /** Everything the upstream received, once its connection closed. */
  readonly upstreamGot: Promise<Buffer>;
  /** The daemon's side of the upstream connection: where the loop's part of a message goes. */
  readonly upstream: Socket;
  /**
   * Lends the client socket to a relay thread (once some bytes wait, with `initialWait`),
   * going on from a decoder's position and an encoder's flags.
   */
  readonly run: (initialWait: boolean, from?: { decoder: DotDecoder; encoder: DotEncoder }, timeoutMs?: number) => Promise<{ done: Promise<RelayResult>; cancel: () => void }>;
  readonly close: () => void;
}

async function rig(): Promise<Rig> {
  const c = await pair();
  const u = await pair();
  const reader = new SocketReader(c.near);
  const got: Buffer[] = [];
  u.far.on('data', (b: Buffer) => got.push(b));
  const upstreamGot = once(u.far, 'end').then(() => Buffer.concat(got));
  const upstreamFd = descriptorOf(u.near);
  assert.ok(upstreamFd !== undefined);
  return {
    client: c.far,
    reader,
    upstreamGot,
    upstream: u.near,
    run: async (initialWait, from = { decoder: new DotDecoder(), encoder: new DotEncoder() }, timeoutMs = 5000) => {
      if (initialWait) await waitUntil(() => reader.pending);
      const lent = reader.lend();
      assert.ok(lent !== undefined, 'the socket can be lent');
      let finished = false;
      let resolve: (r: RelayResult) => void = () => {};
      const result = new Promise<RelayResult>((r) => (resolve = r));
      const h = native.relayData(lent.fd, upstreamFd, lent.queued, timeoutMs, from.decoder.position, from.encoder.flags, (r) => {
        finished = true;
        resolve(r);
      });
      const done = result.then((r) => {
        reader.takeBack(r.leftover);
        // The thread is done with the upstream: closing our side ends what it received.
        u.near.end();
        return r;
      });
      return { done, cancel: () => finished || native.cancelRelay(h) };
    },
    close: () => {
      for (const s of [c.near, c.far, u.near, u.far]) s.destroy();
      c.server.close();
      u.server.close();
    },
  };
}

async function waitUntil(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await sleep(5);
  assert.ok(ok(), 'condition not met in 1 s');
}

/** What the event loop's path makes of the same bytes: upstream bytes, counts, leftover. */
function reference(wire: Buffer): { out: Buffer; size: number; contentBytes: number; used: number } {
  const d = new DotDecoder().feed(wire);
  assert.ok(d.done, 'the wire has an end of data');
  const enc = new DotEncoder();
  const out = [...d.parts.map((p) => enc.encode(p)), enc.end()];
  return { out: Buffer.concat(out), size: d.parts.reduce((n, p) => n + p.length, 0), contentBytes: enc.contentBytes, used: d.used };
}

test('the relay thread goes on from the loop and writes upstream what the loop would, however the client bytes are cut (seeded)', async () => {
  for (let seed = 1; seed <= 24; seed++) {
    const r = rng(seed);
    const body = Buffer.from(Array.from({ length: Math.floor(r() * 300_000) }, () => ALPHABET[Math.floor(r() * ALPHABET.length)] as number));
    const wire = Buffer.concat([body, Buffer.from(seed % 3 === 0 ? '\r\n.\r\nNOOP\r\nQUIT\r\n' : '\r\n.\r\n')]);
    const want = reference(wire);
    const t = await rig();
    try {
      // The loop's part: the start of the message, through DotDecoder and DotEncoder.
      const split = Math.floor(r() * Math.min(want.used, 150_000));
      const decoder = new DotDecoder();
      const encoder = new DotEncoder();
      const head = decoder.feed(wire.subarray(0, split));
      assert.ok(!head.done);
      const loopSize = head.parts.reduce((n, p) => n + p.length, 0);
      await new Promise<void>((ok) => t.upstream.write(Buffer.concat(head.parts.map((p) => encoder.encode(p))), () => ok()));
      // Then the thread's: some bytes wait before it takes over (its `initial`, under the
      // reader's high-water mark, so the socket is not paused), the rest come in pieces.
      const first = split + Math.floor(r() * Math.min(wire.length - split, 60_000));
      t.client.write(wire.subarray(split, first));
      const running = (await t.run(first > split, { decoder, encoder })).done;
      for (let at = first; at < wire.length; ) {
        const n = 1 + Math.floor(r() * (r() < 0.5 ? 16 : 70_000));
        t.client.write(wire.subarray(at, at + n));
        at += n;
        if (r() < 0.2) await sleep(1);
      }
      const result = await running;
      assert.equal(result.status, 'done', `seed ${seed}`);
      assert.equal(result.upstreamError, undefined);
      assert.equal(loopSize + result.size, want.size, `seed ${seed}: size`);
      assert.equal(encoder.contentBytes + result.contentBytes, want.contentBytes, `seed ${seed}: contentBytes`);
      const got = await t.upstreamGot;
      assert.ok(got.equals(want.out), `seed ${seed}: upstream bytes differ (${got.length} vs ${want.out.length})`);
      // What came after the end of data (the body may hold an early one) is read again here.
      const leftover = wire.subarray(want.used);
      const rest: Buffer[] = [];
      for (let n = 0; n < leftover.length; ) {
        const chunk = await t.reader.chunk(1000);
        assert.ok(Buffer.isBuffer(chunk), `seed ${seed}: leftover ${String(chunk)}`);
        rest.push(chunk);
        n += chunk.length;
      }
      assert.ok(Buffer.concat(rest).equals(leftover), `seed ${seed}: leftover differs`);
    } finally {
      t.close();
    }
  }
});

test('the relay thread: a client that closes, falls silent or is cancelled mid-data never gets its message ended upstream', async () => {
  const cases: { name: string; act: (t: Rig, cancel: () => void) => void; status: RelayResult['status'] }[] = [
    { name: 'closes', act: (t) => t.client.end(), status: 'eof' },
    { name: 'falls silent', act: () => {}, status: 'timeout' },
    { name: 'is cancelled', act: (_t, cancel) => cancel(), status: 'cancelled' },
  ];
  for (const c of cases) {
    const t = await rig();
    try {
      t.client.write('Subject: unfinished\r\n\r\nline one\r\n.. a stuffed line\r\n');
      const { done, cancel } = await t.run(true, undefined, 300);
      await sleep(50);
      c.act(t, cancel);
      const result = await done;
      assert.equal(result.status, c.status, c.name);
      const got = (await t.upstreamGot).toString('latin1');
      // Restuffed as the client sent it, and no end of data.
      assert.equal(got, 'Subject: unfinished\r\n\r\nline one\r\n.. a stuffed line\r\n', c.name);
    } finally {
      t.close();
    }
  }
});
