// The file log sink (issue 6, "Semantics"): lines appended in order, reopen for logrotate
// (the daemon calls reopen() on SIGHUP and SIGUSR1), a full disk reported once while
// write() keeps returning at once, and recovery once there is room again.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileLog } from '../src/accounting/filelog.js';
import { tempDir } from './helpers/daemon.js';
import { run } from './helpers/process.js';

const isRoot = process.getuid?.() === 0;

test('lines are appended in order; reopen() after a rename starts a new file, nothing lost', async () => {
  const t = tempDir('smtpsift-filelog-');
  try {
    const path = join(t.dir, 'mail.log');
    const errors: string[] = [];
    const log = new FileLog(path, { onError: (m) => errors.push(m) });
    for (let i = 0; i < 1000; i++) log.write(`line ${i}`);
    await log.flushed();
    assert.equal(statSync(path).mode & 0o777, 0o640);
    // logrotate: rename, then the signal; lines queued before the signal go to the old file.
    renameSync(path, `${path}.1`);
    log.write('before reopen');
    await log.flushed();
    log.reopen();
    for (let i = 1000; i < 1010; i++) log.write(`line ${i}`);
    await log.close();
    const old = readFileSync(`${path}.1`, 'utf8');
    assert.equal(old, `${Array.from({ length: 1000 }, (_, i) => `line ${i}\n`).join('')}before reopen\n`);
    assert.equal(readFileSync(path, 'utf8'), Array.from({ length: 10 }, (_, i) => `line ${i + 1000}\n`).join(''));
    assert.deepEqual(errors, []);
    log.write('after close'); // ignored, never throws
  } finally {
    t.remove();
  }
});

test('an unwritable path is reported once; write() never throws', async () => {
  const t = tempDir('smtpsift-filelog-');
  try {
    const errors: string[] = [];
    const log = new FileLog(join(t.dir, 'missing-dir', 'mail.log'), { onError: (m) => errors.push(m) });
    for (let i = 0; i < 5; i++) {
      log.write(`line ${i}`);
      await log.flushed();
    }
    assert.equal(errors.length, 1, errors.join('\n'));
    assert.match(errors[0] ?? '', /cannot write: ENOENT; lines are dropped until it works again \(mail is not affected\)/);
    mkdirSync(join(t.dir, 'missing-dir'));
    log.write('back');
    await log.close();
    assert.match(errors[1] ?? '', /writing works again; 5 line\(s\) were lost/);
    assert.equal(readFileSync(join(t.dir, 'missing-dir', 'mail.log'), 'utf8'), 'back\n');
  } finally {
    t.remove();
  }
});

// Runs in a private mount namespace, with the log directory a 64 KiB tmpfs.
const CHILD = `
import { FileLog } from ${JSON.stringify(fileURLToPath(new URL('../src/accounting/filelog.js', import.meta.url)))};
import { rmSync, readFileSync } from 'node:fs';
const dir = process.argv[1];
const path = dir + '/mail.log';
const errors = [];
const log = new FileLog(path, { onError: (m) => errors.push(m) });
let slowest = 0;
for (let i = 0; i < 2000; i++) {
  const t0 = process.hrtime.bigint();
  log.write('x'.repeat(100) + ' ' + i);
  slowest = Math.max(slowest, Number(process.hrtime.bigint() - t0) / 1e6);
  // Let the writer run now and then, as a daemon's event loop would.
  if (i % 50 === 0) await new Promise((r) => setImmediate(r));
}
await log.flushed();
const fullErrors = [...errors];
// The operator makes room (logrotate removes the file) and the daemon gets SIGHUP.
rmSync(path);
log.reopen();
log.write('after');
await log.close();
console.log(JSON.stringify({ fullErrors, errors, slowest, after: readFileSync(path, 'utf8') }));
`;

test('a full disk is reported once, writes never wait, and logging resumes when there is room', { skip: !isRoot && 'needs root (mount namespace)' }, async () => {
  const t = tempDir('smtpsift-filelog-');
  try {
    const mnt = join(t.dir, 'logs');
    mkdirSync(mnt);
    const r = await run(
      'unshare',
      ['-m', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs "$0" && exec "$@"', mnt, process.execPath, '--input-type=module', '-e', CHILD, mnt],
      20_000,
    );
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { fullErrors: string[]; errors: string[]; slowest: number; after: string };
    assert.equal(out.fullErrors.length, 1, out.fullErrors.join('\n'));
    assert.match(out.fullErrors[0] ?? '', /mail\.log: cannot write: ENOSPC; lines are dropped until it works again/);
    assert.match(out.errors[1] ?? '', /writing works again; \d+ line\(s\) were lost/);
    assert.equal(out.errors.length, 2);
    assert.equal(out.after, 'after\n');
    // write() only queues: far below a millisecond, even with the disk full.
    assert.ok(out.slowest < 5, `slowest write() took ${out.slowest} ms`);
  } finally {
    t.remove();
  }
});
