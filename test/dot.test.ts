// The DATA byte paths against a plain reference, split at every kind of chunk boundary:
// what the upstream receives must not depend on how TCP cut the client's bytes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DotDecoder, DotEncoder } from '../src/smtp/dot.js';
import { HeaderInserter } from '../src/filter/header.js';
import { outgoing, READ_CHUNK } from '../src/filter/outgoing.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './helpers/daemon.js';

/** A small seeded PRNG, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

const ALPHABET = Buffer.from('..\r\n\na ');

function randomBytes(r: () => number, n: number): Buffer {
  return Buffer.from(Array.from({ length: n }, () => ALPHABET[Math.floor(r() * ALPHABET.length)] as number));
}

function splits(r: () => number, buf: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let i = 0;
  while (i < buf.length) {
    const n = 1 + Math.floor(r() * 7);
    parts.push(buf.subarray(i, i + n));
    i += n;
  }
  return parts;
}

/** Reference encoder: CR, LF and CRLF all end a line; a leading dot is doubled. */
function encodeRef(msg: Buffer): Buffer {
  const lines = msg.toString('latin1').split(/\r\n|\r|\n/);
  const ended = /(\r\n|\r|\n)$/.test(msg.toString('latin1'));
  if (ended || msg.length === 0) lines.pop();
  return Buffer.from(lines.map((l) => (l.startsWith('.') ? `.${l}` : l) + '\r\n').join('') + '.\r\n', 'latin1');
}

/** Reference decoder: byte by byte, exactly as RFC 5321 §4.5.2 reads. */
function decodeRef(wire: Buffer): { msg: Buffer; used: number } | undefined {
  const out: number[] = [];
  let lineStart = true;
  for (let i = 0; i < wire.length; i++) {
    const b = wire[i] as number;
    if (lineStart && b === 46) {
      if (wire[i + 1] === 13 && wire[i + 2] === 10) return { msg: Buffer.from(out), used: i + 3 };
      if (i + 2 >= wire.length && (wire[i + 1] === undefined || (wire[i + 1] === 13 && i + 1 === wire.length - 1))) return undefined;
      lineStart = false;
      continue;
    }
    out.push(b);
    lineStart = b === 10 && wire[i - 1] === 13;
  }
  return undefined;
}

function decodeChunks(parts: Buffer[]): { msg: Buffer; used: number } | undefined {
  const d = new DotDecoder();
  const out: Buffer[] = [];
  let offset = 0;
  for (const p of parts) {
    const r = d.feed(p);
    out.push(...r.parts.map((x) => Buffer.from(x)));
    if (r.done) return { msg: Buffer.concat(out), used: offset + r.used };
    offset += p.length;
  }
  return undefined;
}

test('the encoder matches the reference whatever the chunking', () => {
  const r = rng(1);
  for (let n = 0; n < 2000; n++) {
    const msg = randomBytes(r, Math.floor(r() * 40));
    const enc = new DotEncoder();
    const out = Buffer.concat([...splits(r, msg).map((p) => enc.encode(p)), enc.end()]);
    assert.equal(out.toString('latin1'), encodeRef(msg).toString('latin1'), `message ${JSON.stringify(msg.toString('latin1'))}`);
    assert.equal(enc.contentBytes, decodeChunks([out])?.msg.length, 'counted whatever the chunking');
  }
});

/** Mail-like text: lines of letters, some starting with a dot, mostly CRLF, now and then a bare CR or LF. */
function mailLike(r: () => number, lines: number): Buffer {
  const ends = ['\r\n', '\r\n', '\r\n', '\r\n', '\r\n', '\r\n', '\n', '\r', '\r\r\n', '\n\r'];
  let text = '';
  for (let k = 0; k < lines; k++) {
    const dot = r() < 0.1 ? '.'.repeat(1 + Math.floor(r() * 2)) : '';
    text += dot + 'x'.repeat(Math.floor(r() * 90)) + (r() < 0.2 ? '.\r' : '') + (ends[Math.floor(r() * ends.length)] as string);
  }
  return Buffer.from(r() < 0.5 ? text : text.slice(0, Math.floor(r() * text.length)), 'latin1');
}

test('the encoder matches the reference on long mail-like messages, in pieces of every size', () => {
  const r = rng(6);
  for (let n = 0; n < 600; n++) {
    const msg = mailLike(r, Math.floor(r() * 40));
    // Pieces of every size, from a byte to the whole message.
    const size = 1 + Math.floor(r() * (r() < 0.5 ? 40 : msg.length + 1));
    const parts: Buffer[] = [];
    for (let i = 0; i < msg.length; i += size) parts.push(msg.subarray(i, i + size));
    const enc = new DotEncoder();
    const out = Buffer.concat([...parts.map((p) => enc.encode(p)), enc.end()]);
    assert.equal(out.toString('latin1'), encodeRef(msg).toString('latin1'), `message ${JSON.stringify(msg.toString('latin1'))} in pieces of ${size}`);
    assert.equal(enc.contentBytes, decodeChunks([out])?.msg.length, 'counted whatever the chunking');
  }
});

test('the decoder matches the reference whatever the chunking, and ends only at CRLF.CRLF', () => {
  const r = rng(2);
  for (let n = 0; n < 3000; n++) {
    const wire = Buffer.concat([randomBytes(r, Math.floor(r() * 40)), r() < 0.7 ? Buffer.from('\r\n.\r\nNOOP\r\n') : Buffer.alloc(0)]);
    const ref = decodeRef(wire);
    const got = decodeChunks(splits(r, wire));
    const label = JSON.stringify(wire.toString('latin1'));
    assert.equal(got === undefined, ref === undefined, `end found? ${label}`);
    if (ref && got) {
      assert.equal(got.used, ref.used, `end position ${label}`);
      assert.equal(got.msg.toString('latin1'), ref.msg.toString('latin1'), `content ${label}`);
    }
  }
});

test('decode(encode(m)) is m with CRLF line endings, for every message', () => {
  const r = rng(3);
  for (let n = 0; n < 2000; n++) {
    const msg = randomBytes(r, Math.floor(r() * 40));
    const enc = new DotEncoder();
    const wire = Buffer.concat([enc.encode(msg), enc.end()]);
    const back = decodeChunks(splits(r, Buffer.concat([Buffer.from(''), wire])));
    assert.ok(back, 'the encoded message ends');
    assert.equal(back.used, wire.length, 'it ends exactly at its terminator');
    assert.equal(enc.contentBytes, back.msg.length, 'the encoder counts what the upstream stores');
    const normal = encodeRef(msg).toString('latin1').slice(0, -3).replace(/^\.\./gm, '.');
    assert.equal(back.msg.toString('latin1'), normal);
  }
});

test('smuggling: a bare-LF dot line is content, not the end', () => {
  const wire = Buffer.from('a\n.\nMAIL FROM:<x@y>\r\n.\r\n');
  const got = decodeChunks([wire]);
  assert.equal(got?.msg.toString(), 'a\n.\nMAIL FROM:<x@y>\r\n');
  const enc = new DotEncoder();
  const up = Buffer.concat([enc.encode(got?.msg ?? Buffer.alloc(0)), enc.end()]).toString();
  assert.equal(up, 'a\r\n..\r\nMAIL FROM:<x@y>\r\n.\r\n');
});

test('Header goes before the first blank line, first for Received:, at the end without one', () => {
  const r = rng(4);
  const cases: [string, string, string][] = [
    ['Subject: a\r\n\r\nbody\r\n', 'X-H: 1', 'Subject: a\r\nX-H: 1\r\n\r\nbody\r\n'],
    ['Subject: ws\r\n \r\nbody\r\n', 'X-H: 1', 'Subject: ws\r\nX-H: 1\r\n \r\nbody\r\n'],
    ['Subject: lf\n\nbody\n', 'X-H: 1', 'Subject: lf\nX-H: 1\r\n\nbody\n'],
    ['\r\nbody\r\n', 'X-H: 1', 'X-H: 1\r\n\r\nbody\r\n'],
    ['Subject: none\r\nX: y\r\n', 'X-H: 1', 'Subject: none\r\nX: y\r\nX-H: 1\r\n'],
    ['Subject: none', 'X-H: 1', 'Subject: none\r\nX-H: 1\r\n'],
    ['', 'X-H: 1', 'X-H: 1\r\n'],
    ['Subject: a\r\n\r\nb\r\n', 'Received: from x', 'Received: from x\r\nSubject: a\r\n\r\nb\r\n'],
  ];
  for (const [msg, header, want] of cases) {
    for (let k = 0; k < 50; k++) {
      const ins = new HeaderInserter(header);
      const out = Buffer.concat([...splits(r, Buffer.from(msg)).flatMap((p) => ins.push(p)), ...ins.end()]);
      assert.equal(out.toString(), want, `${JSON.stringify(msg)} with ${header}`);
    }
  }
});

test('a file read into one reused buffer gives what the message in memory gives, Header included', () => {
  // The delivery reads the spool file into one buffer again and again (issue 7): a blank
  // line the Header waits on, cut by a piece boundary, must survive the next read.
  const { dir, remove } = tempDir('smtpsift-outgoing-');
  try {
    const r = rng(5);
    const blankAcross = `X: ${'a'.repeat(READ_CHUNK - 20)}\r\n${' '.repeat(40)}\r\nbody\r\n`;
    const messages = [Buffer.from(blankAcross), Buffer.concat([Buffer.from(blankAcross), randomBytes(r, 3 * READ_CHUNK)]), randomBytes(r, 2 * READ_CHUNK + 7)];
    for (const [k, msg] of messages.entries()) {
      const path = join(dir, `m${k}`);
      writeFileSync(path, msg);
      for (const header of [undefined, 'X-H: 1', 'Received: from x']) {
        const want = Buffer.concat([...outgoing(msg, header)]);
        // Each piece copied at once, as the delivery stuffs it before asking for the next.
        const got = Buffer.concat(Array.from(outgoing(path, header, Buffer.alloc(READ_CHUNK)), (p) => Buffer.from(p)));
        assert.ok(got.equals(want), `message ${k} with ${header ?? 'no header'}`);
      }
    }
  } finally {
    remove();
  }
});
